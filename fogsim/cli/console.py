"""Where fogsim's tables and progress go: tables to stdout, progress and notes to stderr.

Every table is printed by ``print_table``, which never cuts a number or a name, whatever the width:
on a terminal, a table wider than the terminal is printed in several blocks of columns, each
repeating the first column (a name folds onto a second line rather than lose characters); piped
to a file or another program, tables are Markdown (``| a | b |``), which Markdown readers render
and ``column -t -s '|'`` aligns. Every command's progress display is ``progress_bar``.

Neither console reads rich's markup: the tables hold names the user wrote (a scenario, a
profile, a fog node, a path), and ``[/x]`` in one must print as itself, not end a style.
"""

from __future__ import annotations

import sys

from rich.cells import cell_len
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Column, Table

from fogsim.units import format_bytes

PIPED_WIDTH = 160  # for text that is not a table, where stdout or stderr is not a terminal
PADDING = 3  # what a column of a rich table adds to its cells: a space each side and a border


def stdout_console() -> Console:
    """A console for tables."""
    return Console(markup=False) if sys.stdout.isatty() else Console(markup=False, width=PIPED_WIDTH)


def stderr_console() -> Console:
    """A console for progress, plans and notes (errors are printed plainly, as one line)."""
    return Console(stderr=True, markup=False) if sys.stderr.isatty() else \
        Console(stderr=True, markup=False, width=PIPED_WIDTH)


def progress_bar(console: Console, transient: bool = False) -> Progress:
    """The progress display of every command: what, how many of how many, a bar, the time taken and the
    time left (ETA), and a status; on a narrow terminal the status is what gets shortened, never the rest.

    Add tasks with a ``status`` field (``bar.add_task("rounds", total=n, status="")``).
    """
    fixed = dict(no_wrap=True)
    return Progress(TextColumn("{task.description}", table_column=Column(**fixed)),
                    MofNCompleteColumn(table_column=Column(**fixed)), BarColumn(bar_width=20),
                    TimeElapsedColumn(table_column=Column(**fixed)), TextColumn("left", table_column=Column(**fixed)),
                    TimeRemainingColumn(table_column=Column(**fixed)), StatusColumn(table_column=Column(ratio=1)),
                    console=console, transient=transient, expand=True)


class WholeParts:
    """A status line of parts separated by two spaces, as many whole parts as fit the width it is given
    (the first always, cut only where it alone is wider): a narrow terminal loses parts, never half a number."""

    def __init__(self, text: str):
        self.parts = [p for p in text.split("  ") if p]

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        return Measurement(min(cell_len(self.parts[0]) if self.parts else 0, options.max_width),
                           cell_len("  ".join(self.parts)))

    def __rich_console__(self, console, options):
        from rich.text import Text

        shown, used = [], 0
        for part in self.parts:
            extra = cell_len(part) + (2 if shown else 0)
            if shown and used + extra > options.max_width:
                break
            shown.append(part)
            used += extra
        yield Text("  ".join(shown), no_wrap=True, overflow="crop")


class StatusColumn(ProgressColumn):
    """A task's ``status`` field, in whole parts (``WholeParts``)."""

    def render(self, task) -> WholeParts:
        return WholeParts(task.fields.get("status", ""))


def _text(cell) -> str:
    return " ".join(str(getattr(cell, "plain", cell)).split())


PROSE_CHARS = 40  # a column with a longer cell holding spaces is prose: it wraps at spaces (words stay whole)
PROSE_WIDTH = 20  # what a prose column is given at least, where the table must shrink


def _need(column: Column) -> tuple[int, bool]:
    """The width a column needs so that no cell is cut (its widest cell and its header's longest word;
    for prose, its longest word, at least ``PROSE_WIDTH``), and whether it is prose."""
    cells = [_text(c) for c in column.cells]
    words = [cell_len(w) for w in _text(column.header).split()] or [0]
    prose = any(cell_len(c) > PROSE_CHARS and " " in c for c in cells)
    if prose:
        longest = max(cell_len(w) for c in cells for w in (c.split() or [""]))
        return max(longest, *words, min(PROSE_WIDTH, max(cell_len(c) for c in cells))) + PADDING, True
    return max([*(cell_len(c) for c in cells), *words]) + PADDING, False


def _natural(column: Column) -> int:
    """The width of a column whose header and cells all stay on one line."""
    return max(cell_len(_text(c)) for c in [column.header, *column.cells]) + PADDING


def blocks(table: Table, width: int) -> list[Table]:
    """``table`` as tables of at most ``width`` columns of text without a cut cell: itself where it fits
    as it is; else blocks of its columns, each led by the first column (which folds at half the width
    where it is wider), each column as wide as its widest cell (headers wrap; prose wraps at spaces)."""
    if sum(_natural(c) for c in table.columns) + 1 <= width:
        return [table]
    measured = [_need(c) for c in table.columns]
    needs = [n for n, _ in measured]
    lead = min(needs[0], max(width // 2, 12)) if len(needs) > 1 else min(needs[0], width - 1)
    groups, current, used = [], [], lead + 1
    for index in range(1, len(table.columns)):
        if current and used + needs[index] > width:
            groups.append(current)
            current, used = [], lead + 1
        current.append(index)
        used += needs[index]
    groups.append(current)
    parts = []
    for n, group in enumerate(groups):
        part = Table(title=table.title if n == 0 else None, caption=table.caption if n == len(groups) - 1 else None,
                     show_lines=table.show_lines)
        spare = max(0, width - 1 - lead - sum(needs[i] for i in group))
        prose = [i for i in group if measured[i][1]]
        for index in [0, *group]:
            column = table.columns[index].copy()
            column.min_width = column.max_width = None
            column.width = (lead if index == 0 else needs[index]) - PADDING
            if index in prose:  # the block's spare width goes to its prose, shared out evenly
                column.width += spare // len(prose)
            column.overflow, column.no_wrap = "fold", False
            part.columns.append(column)
        cells = [list(table.columns[i].cells) for i in [0, *group]]
        for row, _ in enumerate(table.rows):
            part.add_row(*[c[row] for c in cells], end_section=table.rows[row].end_section)
        parts.append(part)
    return parts


def markdown_table(table: Table) -> str:
    """``table`` as a Markdown table (title before it, caption after), every cell on one line."""
    def cell(value) -> str:
        return _text(value).replace("|", "\\|")

    align = {"left": "---", "right": "---:", "center": ":---:"}
    lines = [f"{cell(table.title)}", ""] if table.title else []
    lines += ["| " + " | ".join(cell(c.header) for c in table.columns) + " |",
              "|" + "|".join(align.get(c.justify, "---") for c in table.columns) + "|"]
    columns = [list(c.cells) for c in table.columns]
    lines += ["| " + " | ".join(cell(c[row]) for c in columns) + " |" for row in range(len(table.rows))]
    if table.caption:
        lines += ["", cell(table.caption)]
    return "\n".join(lines) + "\n"


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` without cutting a cell: in blocks of columns on a terminal narrower than the table,
    as Markdown where the console is not a terminal (a file, a pipe)."""
    console = console or stdout_console()
    if not console.is_terminal:
        console.file.write(markdown_table(table) + "\n")
        console.file.flush()
        return
    for part in blocks(table, console.width):
        console.print(part)


def round_status(row: dict) -> str:
    """A finished round (a ``rounds.csv`` row) in one status line."""
    return (f"acc {row['accuracy']:.3f}  density {row['density']:.3f}  ok {row['clients_ok']}"
            f"  failed {row['clients_failed']}  up {format_bytes(row['upload_bytes'])}"
            f"  down {format_bytes(row['download_bytes'])}  sim {row['sim_time_s']:.2f} s")
