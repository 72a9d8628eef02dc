"""``fogsim compare`` and ``fogsim sweep``: several runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fogsim.cli.console import print_table, progress_bar, round_status, stderr_console, stdout_console
from fogsim.cli.simulation import ON_DIVERGENCE, SCENARIO, SET, TRACK, VERBOSE, divergence_set


def print_comparison(frame) -> None:
    """The table of runs and, where runs differ in a key or in seed, the table by value."""
    from fogsim.sim.compare import group_table, rich_tables

    for table in [*rich_tables(frame), group_table(frame)]:
        if table is not None:
            print_table(table)


def compare(runs: Optional[list[Path]] = typer.Argument(None, help="run directories written by fogsim run"),
            out: Optional[str] = typer.Option(None, help="where to write the comparison (default: "
                                               "runs/compare-<time>)")) -> None:
    """Compare finished runs: a table, comparison.csv / .md and overlaid plots of accuracy, memory, batch, upload."""
    from fogsim.rundir import default_run_dir, given_dir
    from fogsim.sim.compare import compare as compare_runs

    out = given_dir(out) or default_run_dir("compare")
    frame = compare_runs(runs or [], out)
    print_comparison(frame)
    stdout_console().print(f"comparison written to {out}")


def sweep(scenario: Path = SCENARIO,
          key: str = typer.Option(..., help="the scenario key to vary, e.g. pruning.compression, strategy.name or "
                                  "fleet[0].overrides.memory_budget"),
          values: str = typer.Option(..., help="comma-separated values of --key, each read as YAML like --set, "
                                     "e.g. 256KiB,512KiB,1MiB"),
          out: Optional[str] = typer.Option(None, help="sweep directory: one run directory per value and the "
                                             "comparison (default: runs/sweep-<name>-<time>)"),
          seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2: every value runs once per "
                                              "seed, and the table and sweep.png show mean ± standard deviation "
                                              "over them (default: the scenario's own seed, one run per value)"),
          sets: Optional[list[str]] = SET,
          quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
          verbose: bool = VERBOSE, on_divergence: Optional[str] = ON_DIVERGENCE,
          track: Optional[list[str]] = TRACK) -> None:
    """Run a scenario once per value of one key (and per seed), then compare the runs: fogsim compare's table,
    CSV and plots, and accuracy against the value (groups.csv, sweep.png)."""
    from fogsim.rundir import check_free, default_run_dir, given_dir
    from fogsim.sim.sweep import plan, split_seeds, split_values, sweep as run_sweep
    from fogsim.tracking import parse_tracks

    out = given_dir(out)
    tracks = parse_tracks(track)
    if out is not None:
        check_free(out, "sweep")
    points = plan(scenario, key, split_values(values), [*(sets or []), *divergence_set(on_divergence)],
                  split_seeds(seeds))
    out = out or default_run_dir(f"sweep-{points[0].prepared.scenario.name}")
    if quiet:
        frame = run_sweep(points, out, key, verbose=verbose, tracks=tracks)
    else:
        err = stderr_console()
        with progress_bar(err) as bar:
            runs = bar.add_task("runs  ", total=len(points), status="")
            rounds = bar.add_task("rounds", total=points[0].prepared.scenario.rounds, status="starting Ray ...")

            def on_start(index: int, point) -> None:
                bar.update(runs, completed=index, status=point.name)
                bar.reset(rounds, total=point.prepared.scenario.rounds, status="starting Ray ...")

            def on_round(row: dict) -> None:
                bar.update(rounds, completed=row["round"], status=round_status(row))

            def on_client(round_: int, done: int, total: int) -> None:
                bar.update(rounds, status=f"round {round_}: clients {done}/{total} ...")
            frame = run_sweep(points, out, key, on_start, on_round, verbose, on_client, tracks)
            bar.update(runs, completed=len(points), status="comparing")
    print_comparison(frame)
    stdout_console().print(f"sweep directory: {out}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("sweep")(sweep)
