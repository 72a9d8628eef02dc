"""What the commands print fits the terminal without cutting a number or a name: each command runs
in a real pseudo-terminal of 80 and 120 columns (as a user's terminal is), and piped, tables are
Markdown."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest
from rich.cells import cell_len

from fogsim.cli import main
from test_sim_compare import fake_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def in_terminal(args: list[str], columns: int, timeout: float = 120) -> tuple[int, str]:
    """Run ``fogsim args`` with stdout and stderr on a pseudo-terminal ``columns`` wide; its exit code and
    what it printed, escape sequences removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    process = subprocess.Popen([sys.executable, "-m", "fogsim", *args], stdin=slave, stdout=slave, stderr=slave,
                               env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
        assert time.monotonic() < deadline, "the command did not finish"
    os.close(master)
    code = process.wait(timeout)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return code, text.replace("\r\n", "\n").replace("\r", "\n")  # each redraw of the progress line: a line


def fits(text: str, columns: int) -> None:
    wide = [line for line in text.splitlines() if cell_len(line) > columns]
    assert not wide, f"{len(wide)} lines wider than {columns} columns, e.g. {wide[0]!r}"
    assert "…" not in text, "a cell was cut"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fleet = {"samd21": (2, 24576, 20000), "nrf52840": (2, 163840, 120000), "esp32-s3": (3, 2 ** 21, 264_000)}
    return [fake_run(root / name, [0.5, 0.8, accuracy], fleet, tiers={p: accuracy - 0.1 for p in fleet},
                     scenario={"seed": seed, "fleet": [{"profile": "samd21", "overrides": {"memory_budget": budget}}]})
            for name, accuracy, seed, budget in (("budget-16KiB-seed-0", 0.7512, 0, "16KiB"),
                                                 ("budget-16KiB-seed-1", 0.7734, 1, "16KiB"),
                                                 ("budget-1MiB-seed-0", 0.9121, 0, "1MiB"))]


@pytest.mark.parametrize("columns", [80, 120])
def test_compare_fits_the_terminal_and_cuts_nothing(tmp_path, runs, columns):
    code, text = in_terminal(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")], columns)
    assert code == 0, text
    fits(text, columns)
    for run in runs:
        assert run.name in text, "every run's name, whole"
    for number in ("0.7512", "0.9121", "24.00 KiB", "2.00 MiB", "samd21", "nrf52840", "esp32-s3", "0.7623 ± 0.0157",
                   "16.00 KiB", "1.00 MiB", "masked-fedavg"):
        assert number in text, number


@pytest.mark.parametrize("columns", [80, 120])
def test_validate_fits_the_terminal_and_cuts_nothing(columns):
    code, text = in_terminal(["validate", "scenarios/fashion-fog.yaml"], columns)
    assert code == 0, text
    fits(text, columns)
    for cell in ("fleet[1] rpi-zero-2w", "satellite-gateway", "0.621 (one-shot)", "2786..5894", "valid"):
        assert cell in text, cell


@pytest.mark.slow
@pytest.mark.parametrize("columns", [80, 120])
def test_a_run_its_progress_and_the_reference_tables_fit_the_terminal(tmp_path, columns):
    code, text = in_terminal(["run", "scenarios/quickstart.yaml", "--set", "rounds=2", "--out", str(tmp_path / "r")],
                             columns)
    assert code == 0, text
    fits(text, columns)
    assert re.search(r"rounds\s+2/2", text) and "left" in text, "the progress line: rounds done, the time left"
    for cell in ("samd21", "nrf52840", "esp32-s3", "device-rounds", "24.00 KiB", "2.00 MiB", "run directory:"):
        assert cell in text, cell
    if columns > 80:
        return  # the reference tables at the narrowest width only: a table that fits 80 columns fits 120
    for args, cells in ((["keys"], ("training.batch_min", "strategy.rule")),
                        (["profiles", "list"], ("samd21", "rpi4", "jetson-nano", "0.005"))):
        code, text = in_terminal(args, columns)
        assert code == 0, text
        fits(text, columns)
        assert all(cell in text for cell in cells)


def test_piped_tables_are_markdown(runs, tmp_path, capsys):
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    lines = capsys.readouterr().out.splitlines()
    tables = [line for line in lines if line.startswith("|")]
    assert tables[0] == "| run | strategy | final acc | best (round) | density | upload | WAN | sim time |"
    assert tables[1] == "|---|---|---:|---:|---:|---:|---:|---:|"
    assert "| fleet[0].overrides.memory_budget | seeds | final acc | samd21 acc | nrf52840 acc | esp32-s3 acc |" \
        in tables
    assert "| 16.00 KiB | 0,1 | 0.7623 ± 0.0157 | 0.6623 ± 0.0157 | 0.6623 ± 0.0157 | 0.6623 ± 0.0157 |" in tables
    assert all(line.count("|") == tables[0].count("|") or line in tables[2:] for line in tables)
