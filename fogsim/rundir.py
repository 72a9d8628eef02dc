"""Output directories that one command claims, that cannot be mixed, and that are only replaced when fogsim made them.

A command claims its output directory before it writes anything: it creates the directory (or
takes an existing empty one) and, inside it, the marker file ``.fogsim`` with ``O_EXCL`` — of
two commands started at the same moment only one can — and holds an exclusive ``flock`` on the
marker until it ends, so a directory in use is never replaced under a running command. The
marker names the kind of output (``train``, ``run``, ``sweep``, ``compare``): ``--overwrite``
replaces only a directory whose marker says it is the same kind, never a directory fogsim did
not make, never the working directory or one of its parents, and never through a symlink. The
replaced directory is moved aside first and deleted only when the new output is complete; if
the command fails it is put back.

A command whose partial output means nothing (``train``, ``compare``) removes what it wrote when
it fails or is interrupted; a simulation (``run``, ``sweep``) keeps every finished round.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from fogsim.errors import FogsimError, shown_path

MARKER = ".fogsim"
ROOT = Path("runs")


def safe_name(text: str, limit: int = 80) -> str:
    """A directory name made from user text: letters, digits and ``._+-``, no leading dot, bounded."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip(".-")[:limit].strip(".-")
    return name or "run"


def default_run_dir(prefix: str, root: Path = ROOT) -> Path:
    """``runs/<prefix>-<time>``, always directly under ``root`` whatever ``prefix`` holds."""
    return root / f"{safe_name(prefix)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def free_run_dir(out: Path | None, prefix: str, kind: str) -> Path:
    """``out``, or ``runs/<prefix>-<time>`` when it is None, checked free for a ``kind`` command
    (``check_free``, without ``--overwrite``)."""
    out = out or default_run_dir(prefix)
    check_free(out, kind)
    return out


def marker_kind(path: Path) -> str | None:
    """The kind of output ``path`` holds according to its marker; ``None`` if fogsim did not make it."""
    try:
        return str(json.loads((path / MARKER).read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _refuse_replacing(out: Path) -> None:
    if out.is_symlink():
        raise FogsimError(f"--out {shown_path(out)}: is a symlink; --overwrite replaces only a real directory, give "
                          "its own path")
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise FogsimError(f"--out {shown_path(out)}: is the working directory or one of its parents; --overwrite never "
                          "replaces those, choose another --out")


def given_dir(text: str | None, option: str = "--out") -> Path | None:
    """A directory option as the user typed it: ``None`` when not given; an empty one is refused (a
    ``Path('')`` is the current directory, which would be trained into and marked as fogsim's)."""
    if text is None:
        return None
    if not text.strip():
        hint = "give the directory of an interrupted run" if option == "--resume" else \
            f"give a directory (e.g. runs/x), or leave {option} out for the default"
        raise FogsimError(f"{option} is empty: {hint}")
    return Path(text)


def check_free(out: Path, kind: str, overwrite: bool = False) -> None:
    """Refuse ``out`` now if claiming it would fail (so a command can check before long work)."""
    if out.is_symlink() and not out.is_dir():
        raise FogsimError(f"--out {shown_path(out)}: is a symlink to nothing usable; choose another --out")
    if out.exists() and not out.is_dir():
        raise FogsimError(f"--out {shown_path(out)}: is a file; choose another --out")
    if not out.exists():  # the nearest folder that exists must take it
        above = next((p for p in out.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise FogsimError(f"--out {shown_path(out)}: cannot be made inside the file {shown_path(above)}; "
                              "choose another --out")
        if above is not None and not os.access(above, os.W_OK | os.X_OK):
            raise FogsimError(f"--out {shown_path(out)}: cannot be made in {shown_path(above)} (permission "
                              "denied); choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    hint = "choose another --out" + (" or pass --overwrite" if kind == "train" else "")
    if not overwrite:
        raise FogsimError(f"--out {shown_path(out)}: already exists and is not empty; {hint}")
    _refuse_replacing(out)
    found = marker_kind(out)
    if found != kind:
        what = "a directory fogsim did not make" if found is None else f"a fogsim {found} directory"
        raise FogsimError(f"--out {shown_path(out)}: is {what}; --overwrite only replaces a fogsim {kind} directory, "
                          "choose another --out")


def _lock(fd: int, out: Path, resuming: bool = False) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        if resuming:
            raise FogsimError(f"--resume {shown_path(out)}: is in use by another fogsim command (is the run still "
                              "going on?); resume it once that command has ended") from None
        raise FogsimError(f"--out {shown_path(out)}: is in use by another fogsim command; choose another --out") \
            from None


def _mark(out: Path, kind: str) -> int:
    """Create and lock the marker; only one command can."""
    try:
        fd = os.open(out / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise FogsimError(f"--out {shown_path(out)}: was just claimed by another fogsim command; choose another "
                          "--out") from None
    except OSError as error:
        raise FogsimError(f"--out {shown_path(out)}: cannot write there ({error.strerror}); choose another "
                          "--out") from None
    _lock(fd, out)
    os.write(fd, json.dumps({"kind": kind, "pid": os.getpid()}).encode() + b"\n")
    return fd


def _move_aside(out: Path, kind: str) -> Path:
    """Lock ``out``'s marker (refusing one in use) and rename ``out`` to a hidden sibling."""
    try:
        fd = os.open(out / MARKER, os.O_RDONLY)
    except OSError:
        raise FogsimError(f"--out {shown_path(out)}: changed while fogsim was claiming it; choose another "
                          "--out") from None
    try:
        _lock(fd, out)
        if marker_kind(out) != kind:
            raise FogsimError(f"--out {shown_path(out)}: changed while fogsim was claiming it; choose another --out")
        aside = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        out.rename(aside)
        return aside
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def _make(out: Path) -> list[Path]:
    """Create ``out`` (and missing parents); return what this call created, innermost first."""
    created = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir()
    except FileExistsError:
        return [p for p in created if p != out]
    except OSError as error:
        raise FogsimError(f"--out {shown_path(out)}: cannot create it ({error.strerror}); choose another "
                          "--out") from None
    return created


class Claim:
    """An output directory held by this command until ``release``."""

    def __init__(self, out: Path, kind: str, overwrite: bool = False):
        check_free(out, kind, overwrite)
        self.out = out
        self.aside = _move_aside(out, kind) if out.is_dir() and any(out.iterdir()) else None
        self.created = _make(out)
        try:
            self.fd = _mark(out, kind)
        except FogsimError:
            if self.aside is not None and not out.exists():
                self.aside.rename(out)
            raise

    @classmethod
    def existing(cls, out: Path, kind: str) -> "Claim":
        """Take over a directory an earlier command of ``kind`` made (to go on with it, ``--resume``), if none
        holds it."""
        if marker_kind(out) != kind:
            raise FogsimError(f"--resume {shown_path(out)}: is not a fogsim {kind} directory; give the directory a "
                              f"fogsim {kind} wrote")
        held = cls.__new__(cls)
        held.out, held.aside, held.created = out, None, []
        try:
            held.fd = os.open(out / MARKER, os.O_RDWR)
        except OSError as error:
            raise FogsimError(f"--resume {shown_path(out)}: cannot open its marker ({error.strerror})") from None
        _lock(held.fd, out, resuming=True)
        return held

    def release(self, succeeded: bool, keep: bool = False) -> None:
        """Unlock; when the command failed remove what it wrote (unless ``keep``) and restore a replaced run."""
        if not succeeded and not keep:
            _remove(self.out, self.created)
            if self.aside is not None:
                self.aside.rename(self.out)
                self.aside = None
        os.close(self.fd)
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)


@contextmanager
def claim(out: Path, kind: str, *, overwrite: bool = False, keep_on_failure: bool = False) -> Iterator[Path]:
    """Claim ``out`` for a command of ``kind``; yield it.

    On failure (any exception, interrupts included) what the command wrote is removed unless
    ``keep_on_failure``; a directory that ``--overwrite`` moved aside is put back.
    """
    held = Claim(out, kind, overwrite)
    try:
        yield held.out
    except BaseException:
        held.release(False, keep_on_failure)
        raise
    held.release(True)


def _remove(out: Path, created: list[Path]) -> None:
    """Remove what a failed command wrote into ``out``, and the directories it created."""
    if out in created:
        shutil.rmtree(out, ignore_errors=True)
    else:
        for entry in out.iterdir():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for parent in created:
        if parent != out and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
