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
LOADERS = "loaders"    # the copied data loader's folder
MODELS = "models"      # the copied model builder's folder
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


def data_files(data) -> list[dict]:
    """The user's data files of a scenario's data section (``run.data_located``: paths absolute), each
    with its size and SHA-256: the npz file, the folder's images (one digest of all), the files of a saved
    Hugging Face dataset (one digest of all), the loader's source. A hub dataset is named by its id alone."""
    from fogsim.data_files import file_digest, folder_digest, hf_digest, loader_file

    if data.path is not None:
        path = Path(data.path)
        digest = {"folder": folder_digest, "huggingface": hf_digest}.get(data.name, file_digest)
        size, sha256 = digest(path)
        return [{"path": str(path), "bytes": size, "sha256": sha256}]
    if data.loader is not None:
        source = loader_file(data.loader)
        if source is not None:
            size, sha256 = file_digest(source)
            return [{"path": str(source), "bytes": size, "sha256": sha256}]
    return []


def copy_data(data, files: list[dict], out: Path):
    """``(data section, run.json's data entries)`` as the run directory ``out`` names them: a loader
    file copied into ``out/loaders/`` and named relative to ``out``, data files absolute (as given)."""
    if data.loader is None:
        return data, files
    copied, files = _copy_code(data.loader, files, out, LOADERS)
    return (data if copied == data.loader else data.model_copy(update={"loader": copied})), files


def _copy_code(function: str, files: list[dict], out: Path, folder: str, what: str = "loader") -> tuple[str, list[dict]]:
    """``file.py:function`` with the file (absolute) copied into ``out/folder/`` and named relative to ``out``,
    and ``files`` (its run.json entries) named so; ``package.module:function`` as given."""
    from fogsim.data_files import loader_parts

    target, name = loader_parts(function, what)
    if not target.endswith(".py"):  # an installed module: named as given, its file's hash recorded
        return function, files
    (out / folder).mkdir(exist_ok=True)
    copy = f"{folder}/{Path(target).name}"
    shutil.copyfile(target, out / copy)
    return f"{copy}:{name}", [{**entry, "path": copy} for entry in files]


def model_files(model) -> list[dict]:
    """The source file of a scenario's model builder (``run.model_located``: its path absolute), with its
    size and SHA-256; none for a built-in model."""
    from fogsim.data_files import file_digest, loader_file
    from fogsim.models import builder_of, is_builder

    if not is_builder(model):
        return []
    source = loader_file(builder_of(model)[0], "model builder", "model")
    if source is None:
        return []
    size, sha256 = file_digest(source)
    return [{"path": str(source), "bytes": size, "sha256": sha256}]


def copy_model(model, files: list[dict], out: Path):
    """``(model, run.json's model entries)`` as the run directory ``out`` names them: a builder's file
    copied into ``out/models/`` and named relative to ``out`` (in the string or the mapping form)."""
    from fogsim.models import builder_of, is_builder

    if not is_builder(model):
        return model, files
    builder, _ = builder_of(model)
    copied, files = _copy_code(builder, files, out, MODELS, "model builder")
    if copied == builder:
        return model, files
    return (copied if isinstance(model, str) else model.model_copy(update={"builder": copied})), files


def check_data(out: Path, files: list[dict]) -> None:
    """Refuse to resume the run in ``out`` when a data file's SHA-256 is not the one ``run.json`` recorded."""
    _check_files(out, files, "data", "data file", "data files")


def check_model(out: Path, files: list[dict]) -> None:
    """Refuse to resume the run in ``out`` when its model builder's file is not the one ``run.json`` recorded."""
    _check_files(out, files, "model", "model builder file", "model builder's files")


def _check_files(out: Path, files: list[dict], key: str, what: str, whose: str) -> None:
    from fogsim.errors import FogsimError, shown_path

    record = read(out) or {}
    recorded = record.get(key)
    if not isinstance(recorded, list):  # a run from before these files were recorded, or a built-in one
        return
    for old, new in zip(recorded, files):
        if not isinstance(old, dict) or old.get("sha256") != new["sha256"]:
            raise FogsimError(f"--resume {shown_path(out)}: the {what} {shown_path(new['path'])} changed since "
                              "the run started (its SHA-256 differs from run.json's); restore it, or start a new run")
    if len(recorded) != len(files):
        raise FogsimError(f"--resume {shown_path(out)}: its {whose} are not those run.json recorded; start a "
                          "new run")


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
