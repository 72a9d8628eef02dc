"""Output directories that appear whole or not at all.

Everything a command writes goes to a hidden sibling directory first; only when the command
succeeds is it renamed to the name the user asked for. A failure or an interrupt removes it, so
no half-written run is left behind.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from fogsim.errors import FogsimError


def default_run_dir(prefix: str, root: Path = Path("runs")) -> Path:
    return root / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_free(out: Path, overwrite: bool = False) -> None:
    """Refuse an output directory that holds something, unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise FogsimError(f"output path {out} is a file; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FogsimError(f"output directory {out} already exists and is not empty; choose another --out "
                          "or pass --overwrite")


@contextmanager
def atomic_run_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block succeeds."""
    check_free(out, overwrite)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # innermost first: only the directories this call made
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
