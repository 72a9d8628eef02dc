"""Device profiles: named bundles of memory budget, compute speed, bandwidth and reliability.

The built-in library ships in ``fogsim/profiles/*.yaml``; a scenario may name more files under
``profiles:``, whose entries add to (or replace) the built-in ones. A profile file maps a name
to the fields of ``Profile``.

A profile may derive from another with ``base: NAME`` and list only the fields it changes. The
base is looked up first in the same file (order inside a file does not matter), then in the
files loaded before it (the built-in ones first). Chains are allowed, cycles are not. A profile
whose ``base`` is its own name derives from the definition an earlier file gave that name, so a
user file can change one figure of a built-in profile in place; a profile without ``base`` is a
complete definition and replaces any earlier one of the same name. A chain is at most
``MAX_BASE_CHAIN`` profiles long. A profile's name is one line of at most ``MAX_NAME_CHARS``
characters (``errors.name_problem``); a refusal does not quote a name that may be a line of a
file that is no profile file at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import ConfigDict, Field, ValidationError

from fogsim.core.config import NumbersAreNotBooleans
from fogsim.errors import FogsimError, brief, describe, name_problem, shown, shown_path
from fogsim.sim.safe_yaml import read_yaml
from fogsim.units import size_field

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "profiles"
MAX_BASE_CHAIN = 100  # profiles a profile may derive from, one after another; real chains have two or three
_PLAIN_NAME = re.compile(r"[\w.+-]+(?: [\w.+-]+)*")  # quoted when not a profile: surely a name, not file content


class Profile(NumbersAreNotBooleans):
    """One class of device."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = Field("", max_length=1000, description="what the device is")
    memory_budget: Annotated[int, size_field("memory budget")] = Field(
        description="bytes the device may use for training, e.g. 512KiB, 2MiB")
    # At least 1 FLOP/s and 1 bit/s: a simulated round time divides by these and must stay finite.
    flops: float = Field(ge=1, description="sustained compute speed, FLOP/s")
    uplink: float = Field(ge=1, description="upload bandwidth, bit/s")
    downlink: float = Field(ge=1, description="download bandwidth, bit/s")
    availability: float = Field(1.0, gt=0, le=1, description="probability the device joins a round")
    failure_rate: float = Field(0.0, ge=0, lt=1, description="probability the device drops out mid-round")


@dataclass(frozen=True)
class ProfileEntry:
    """A resolved profile with where it came from: its file, the fields it set, what it derives from."""

    name: str
    profile: Profile
    source: str
    fields_set: frozenset[str]
    base: "ProfileEntry | None" = None

    @property
    def chain(self) -> tuple["ProfileEntry", ...]:
        """The profiles this one derives from, nearest first (empty for a complete definition)."""
        chain, entry = [], self.base
        while entry is not None:
            chain.append(entry)
            entry = entry.base
        return tuple(chain)

    def set_by(self, field: str) -> "ProfileEntry | None":
        """The profile of the chain (this one included) whose file sets ``field``; None: the default."""
        entry = self
        while entry is not None:
            if field in entry.fields_set:
                return entry
            entry = entry.base
        return None


def parse_entries(data, source: str, earlier: dict[str, ProfileEntry]) -> dict[str, ProfileEntry]:
    """Validate and resolve the mapping ``name -> fields`` read from ``source``.

    ``earlier`` holds the profiles of the files loaded before this one, which a ``base`` may name.
    """
    where = shown_path(source)
    if not isinstance(data, dict):
        raise FogsimError(f"{where}: a profile file maps profile names to their fields, got {type(data).__name__}")
    raw: dict[str, dict] = {}
    for number, (name, fields) in enumerate(data.items(), 1):
        if not isinstance(name, str) or not name:
            raise FogsimError(f"{where}: profile name {shown(name)} is not a name; write it as text, e.g. my-board")
        if problem := name_problem(name):  # not quoted: it may be a line of a file that is no profile file
            raise FogsimError(f"{where}: the name of profile {number} of the file: {problem}")
        if not isinstance(fields, dict):
            label = brief(name) if _PLAIN_NAME.fullmatch(name) else f"profile {number} of the file"
            raise FogsimError(f"{where}: {label}: a profile is a mapping of fields, got {type(fields).__name__}; "
                              "is it a profile file?")
        raw[name] = dict(fields)
    resolved: dict[str, ProfileEntry] = {}

    def resolve(name: str, path: list[str]) -> ProfileEntry:
        if name in resolved:
            return resolved[name]
        fields = dict(raw[name])
        base = fields.pop("base", None)
        parent = None
        label = brief(name)
        if "base" in raw[name]:
            if not isinstance(base, str) or not base:
                raise FogsimError(f"{where}: {label}.base: the name of a profile to derive from, got {shown(base)}")
            if base in raw and base != name:
                if base in path:
                    ring = path[path.index(base):] + [name, base]
                    cycle = " -> ".join(map(brief, ring if len(ring) <= 6 else ring[:3] + ["...", *ring[-2:]]))
                    raise FogsimError(f"{where}: {label}.base: profiles derive from each other in a cycle: {cycle}")
                if len(path) >= MAX_BASE_CHAIN:
                    raise FogsimError(f"{where}: {label}.base: a chain of more than {MAX_BASE_CHAIN} bases; "
                                      "derive from fewer profiles in turn")
                parent = resolve(base, path + [name])
            elif base in earlier:
                parent = earlier[base]
            elif base == name:
                raise FogsimError(f"{where}: {label}.base: a profile derives from itself only to change an earlier "
                                  f"file's {shown(name)}, and none defines it")
            else:
                known = known_names((set(earlier) | set(raw)) - {name})
                raise FogsimError(f"{where}: {label}.base: unknown profile {shown(base)} (known: {known})")
            if len(parent.chain) + 1 > MAX_BASE_CHAIN:
                raise FogsimError(f"{where}: {label}.base: a chain of more than {MAX_BASE_CHAIN} bases; "
                                  "derive from fewer profiles in turn")
        merged = {**parent.profile.model_dump(), **fields} if parent else fields
        try:
            profile = Profile.model_validate(merged)
        except ValidationError as error:
            raise FogsimError(f"{where}: {describe(error, label, model=Profile)}") from None
        resolved[name] = ProfileEntry(name, profile, source, frozenset(fields), parent)
        return resolved[name]

    return {name: resolve(name, []) for name in raw}


def known_names(names, limit: int = 20) -> str:
    """``a, b, c`` for an error message: at most ``limit`` names, each cut short, then how many more."""
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(map(brief, names[:limit])) + more


def builtin_files() -> list[Path]:
    return sorted(BUILTIN_DIR.glob("*.yaml"))


def load_library(extra: list[Path] = ()) -> dict[str, ProfileEntry]:
    """The built-in profiles, then those of ``extra`` files in order (a later name replaces an earlier),
    each with its source file and base chain."""
    library: dict[str, ProfileEntry] = {}
    for path in builtin_files() + [Path(p) for p in extra]:
        library.update(parse_entries(read_yaml(path, "profile file"), str(path), library))
    return library


def parse_profiles(data, source: str, earlier: dict[str, ProfileEntry] | None = None) -> dict[str, Profile]:
    """Validate the mapping ``name -> fields`` read from ``source``; a ``base`` may name a built-in
    profile (or one of ``earlier``, when given)."""
    earlier = load_library() if earlier is None else earlier
    return {name: entry.profile for name, entry in parse_entries(data, source, earlier).items()}


def load_profiles(extra: list[Path] = ()) -> dict[str, Profile]:
    """The built-in profiles, then those of ``extra`` files in order (a later name replaces an earlier)."""
    return {name: entry.profile for name, entry in load_library(extra).items()}
