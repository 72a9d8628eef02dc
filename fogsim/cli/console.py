"""Where fogsim's tables and progress go: tables to stdout, progress and notes to stderr.

Piped to a file or a log, either console is wide enough that no column of a table is cut
(rich would otherwise assume 80 columns). Every command's progress display is ``progress_bar``.

Neither console reads rich's markup: the tables hold names the user wrote (a scenario, a
profile, a fog node, a path), and ``[/x]`` in one must print as itself, not end a style.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fogsim.units import format_bytes

PIPED_WIDTH = 160


def stdout_console() -> Console:
    """A console for tables."""
    return Console(markup=False) if sys.stdout.isatty() else Console(markup=False, width=PIPED_WIDTH)


def stderr_console() -> Console:
    """A console for progress, plans and notes (errors are printed plainly, as one line)."""
    return Console(stderr=True, markup=False) if sys.stderr.isatty() else \
        Console(stderr=True, markup=False, width=PIPED_WIDTH)


def progress_bar(console: Console, transient: bool = False) -> Progress:
    """The progress display of every command: what, how many of how many, a bar, a status, the time.

    Add tasks with a ``status`` field (``bar.add_task("rounds", total=n, status="")``).
    """
    return Progress(TextColumn("{task.description}"), MofNCompleteColumn(), BarColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=transient)


def round_status(row: dict) -> str:
    """A finished round (a ``rounds.csv`` row) in one status line."""
    return (f"acc {row['accuracy']:.3f}  density {row['density']:.3f}  ok {row['clients_ok']}"
            f"  failed {row['clients_failed']}  up {format_bytes(row['upload_bytes'])}"
            f"  down {format_bytes(row['download_bytes'])}  sim {row['sim_time_s']:.2f} s")
