"""Device profiles: named bundles of memory budget, compute speed, bandwidth and reliability.

The built-in library ships in ``fogsim/profiles/*.yaml``; a scenario may name more files under
``profiles:``, whose entries add to (or replace) the built-in ones. A profile file maps a name
to the fields of ``Profile``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fogsim.errors import FogsimError
from fogsim.sim.yamlfile import describe, read_yaml
from fogsim.units import parse_bytes

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "profiles"


def _size(value):
    try:
        return parse_bytes(value, what="memory budget")
    except FogsimError as error:
        raise ValueError(str(error)) from None


class Profile(BaseModel):
    """One class of device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="what the device is")
    memory_budget: Annotated[int, BeforeValidator(_size)] = Field(
        description="bytes the device may use for training, e.g. 512KiB, 2MiB")
    flops: float = Field(gt=0, description="sustained compute speed, FLOP/s")
    uplink: float = Field(gt=0, description="upload bandwidth, bit/s")
    downlink: float = Field(gt=0, description="download bandwidth, bit/s")
    availability: float = Field(1.0, gt=0, le=1, description="probability the device joins a round")
    failure_rate: float = Field(0.0, ge=0, lt=1, description="probability the device drops out mid-round")


def parse_profiles(data, source: str) -> dict[str, Profile]:
    """Validate the mapping ``name -> fields`` read from ``source``."""
    if not isinstance(data, dict):
        raise FogsimError(f"{source}: a profile file maps profile names to their fields, got {type(data).__name__}")
    profiles = {}
    for name, fields in data.items():
        if not isinstance(fields, dict):
            raise FogsimError(f"{source}: {name}: a profile is a mapping of fields, got {type(fields).__name__}")
        try:
            profiles[str(name)] = Profile(**fields)
        except ValidationError as error:
            raise FogsimError(f"{source}: {describe(error, str(name))}") from None
    return profiles


def load_profiles(extra: list[Path] = ()) -> dict[str, Profile]:
    """The built-in profiles, then those of ``extra`` files in order (a later name replaces an earlier)."""
    profiles: dict[str, Profile] = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")) + [Path(p) for p in extra]:
        profiles.update(parse_profiles(read_yaml(path, "profile file"), str(path)))
    return profiles
