"""Where fogsim's tables and progress go: tables to stdout, progress and notes to stderr."""

from __future__ import annotations

import sys

from rich.console import Console


def stdout_console() -> Console:
    """A console for tables; piped to a file or a log, it is wide enough that no column is cut."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def stderr_console() -> Console:
    return Console(stderr=True)
