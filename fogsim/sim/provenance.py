"""What makes a run directory self-contained: the user's profile files copied in, and ``run.json``.

A scenario may load device profiles from the user's files (``profiles:``). The run directory
keeps a copy of each under ``profiles/`` and its ``scenario.yaml`` names the copies relative to
itself, so ``fogsim validate RUN/scenario.yaml`` and ``fogsim run --resume RUN`` work wherever the
directory is moved, and whatever happens to the originals.

``run.json`` records how the results were made: fogsim's version and those of the libraries that
change numbers (PyTorch, Flower, Ray, numpy) and Python's, the host's CPU count, the git commit of
the scenario's folder when it is in a repository, and one entry per session of the run (the
first, then each ``--resume``): its command line, start and end time (UTC, ISO 8601) and outcome.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PROFILES = "profiles"  # the copies' folder inside the run directory
RUN_JSON = "run.json"
LIBRARIES = ("fogsim", "torch", "flwr", "ray", "numpy")
GIT_TIMEOUT_S = 5


def copy_profiles(profiles: list[str], base: Path, out: Path) -> list[str]:
    """Copy the profile files ``profiles`` (relative to ``base``) into ``out/profiles/``; their new
    names, relative to ``out``, in the same order (a repeated file name gets its position prefixed)."""
    if not profiles:
        return []
    (out / PROFILES).mkdir(exist_ok=True)
    names: list[str] = []
    for i, name in enumerate(profiles):
        source = Path(name) if Path(name).is_absolute() else base / name
        target = f"{PROFILES}/{Path(name).name}"
        if target in names:
            target = f"{PROFILES}/{i}-{Path(name).name}"
        shutil.copyfile(source, out / target)
        names.append(target)
    return names


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path) -> str | None:
    """The commit checked out in the repository ``folder`` is in (``+dirty`` when it has changes), if any."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs on a network file system
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _session(argv: list[str]) -> dict:
    return {"command": argv, "start": now(), "end": None, "outcome": "running"}


def start(scenario_folder: Path, argv: list[str]) -> dict:
    """``run.json``'s content at the start of a run's first session (``resumed`` adds the others)."""
    return {
        "versions": {name: _version(name) for name in LIBRARIES} | {"python": platform.python_version()},
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "scenario_commit": git_commit(scenario_folder),
        "sessions": [_session(argv)],
    }


def read(out: Path) -> dict | None:
    try:
        found = json.loads((out / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("sessions"), list) else None


def write(out: Path, record: dict) -> None:
    """Replace ``run.json`` atomically."""
    staged = out / f".{RUN_JSON}.new"
    staged.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staged, out / RUN_JSON)


def resumed(out: Path, argv: list[str]) -> dict:
    """``run.json`` with a new session for a resume (a run directory without one gets a fresh record)."""
    record = read(out)
    if record is None:
        return start(out, argv)
    record["sessions"].append(_session(argv))
    return record


def ended(record: dict, outcome: str) -> dict:
    """``record`` with its last session ended now with ``outcome`` (finished, failed, interrupted)."""
    record["sessions"][-1].update(end=now(), outcome=outcome)
    return record


_command: list[str] = []  # set by the command line (``given``); else this process's own arguments


def given(argv: list[str]) -> None:
    """The command line's arguments, as ``fogsim.cli.main`` received them."""
    _command[:] = ["fogsim", *argv]


def command_line() -> list[str]:
    """The command as the user typed it: ``fogsim`` and its arguments (a program calling fogsim's
    API: its own arguments)."""
    return list(_command) if _command else list(sys.argv)
