"""``fogsim run``, ``fogsim validate`` and ``fogsim profiles``: the simulation's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fogsim.console import progress_bar, round_status, stderr_console, stdout_console
from fogsim.errors import FogsimError
from fogsim.units import format_bytes

SCENARIO = typer.Argument(..., help="scenario YAML file, e.g. scenarios/quickstart.yaml")
SET = typer.Option(None, "--set", help="change one key for this run, e.g. --set rounds=3 --set fleet[0].count=4")


def _bits(rate: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {unit}"
    return f"{rate:.3g} bit/s"


def _flops(rate: float) -> str:
    for unit, scale in (("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if rate >= scale:
            return f"{rate / scale:.3g} {unit}"
    return f"{rate:.3g} FLOP/s"


def strategy_label(strategy) -> str:
    """``masked-fedavg (delta)``: the strategy, and the rule where it has one."""
    return f"{strategy.name} ({strategy.rule})" if strategy.name.startswith("masked-") else strategy.name


def plan_table(prepared) -> Table:
    """One row per fleet entry: what its devices may use and what their training needs."""
    scenario = prepared.scenario
    table = Table(title=f"{scenario.name}: {len(prepared.fleet)} devices, {scenario.pruning.method} on "
                        f"{scenario.model} / {scenario.data.name} ({scenario.data.partition.kind}), "
                        f"{strategy_label(scenario.strategy)}, {scenario.rounds} rounds")
    for column in ("fleet entry", "devices", "budget", "dense needs", "target needs", "start density",
                   "target compression", "batch", "samples / device"):
        table.add_column(column, justify="left" if column == "fleet entry" else "right")
    sizes = prepared.spec.partitions.sizes()
    for tier in prepared.fleet.tiers:
        plan = tier.plan
        low, high = int(sizes[tier.ids].min()), int(sizes[tier.ids].max())
        start = f"{plan.start_density:.3f} (one-shot)" if plan.one_shot else "1"
        table.add_row(f"fleet[{tier.entry}] {tier.profile_name}", str(tier.count), format_bytes(plan.budget_bytes),
                      format_bytes(plan.dense_bytes), format_bytes(plan.target_bytes), start,
                      f"{1 / plan.target_density:.3g}x", f"{plan.batch_min}..{plan.batch_max}",
                      f"{low}..{high}" if low != high else str(low))
    return table


def _accuracy(value) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"  # None, or NaN (value != value)


def summary_table(summary: dict) -> Table:
    """Per profile: what its devices cost, and ``accuracy``, the final global model under each device's
    last known mask (the server's, always there); ``local accuracy``, the devices' own models after
    their last local training, only when some trained in the last round."""
    table = Table(title=f"{summary['scenario']}: accuracy {summary['accuracy']:.4f} after {summary['rounds']} rounds, "
                        f"simulated {summary['sim_time_s']:.1f} s, wall {summary['wall_time_s']:.1f} s")
    for column in ("profile", "devices", "budget", "peak memory", "batch", "compression", "accuracy", "local accuracy",
                   "rounds ok / failed", "uploaded", "downloaded", "simulated time"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for name, tier in summary["profiles"].items():
        trained = "peak_memory_bytes" in tier
        table.add_row(
            name, str(tier["devices"]), format_bytes(tier["budget_bytes"]),
            format_bytes(tier["peak_memory_bytes"]) if trained else "-",
            f"{tier['batch_size_min']}..{tier['batch_size_max']}" if trained else "-",
            f"{tier['final_compression']:.3g}x" if trained else "-",
            _accuracy(tier.get("accuracy")), _accuracy(tier.get("local_accuracy")),
            f"{tier['rounds_trained']} / {tier['rounds_failed']}",
            format_bytes(tier["upload_bytes"]) if trained else "-",
            format_bytes(tier["download_bytes"]) if trained else "-",
            f"{tier['sim_time_s']:.2f} s" if trained else "-")
    return table


VERBOSE = typer.Option(False, "--verbose", help="show Flower's and Ray's own logs (quiet by default)")


def run(scenario: Optional[Path] = typer.Argument(None, help="scenario YAML file, e.g. scenarios/quickstart.yaml"),
        out: Optional[Path] = typer.Option(None, help="run directory (default: runs/<name>-<time>)"),
        sets: Optional[list[str]] = SET,
        resume: Optional[Path] = typer.Option(None, help="go on with the interrupted run in this directory from "
                                              "its last finished round (instead of SCENARIO)"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
        verbose: bool = VERBOSE) -> None:
    """Run a scenario: the fleet trains with DynHP on Flower and Ray; results go to the run directory."""
    from fogsim.rundir import free_run_dir
    from fogsim.sim.run import prepare, prepare_resume, run as run_scenario

    err = stderr_console()
    if (scenario is None) == (resume is None):
        raise FogsimError("give a scenario file to run, or --resume RUN_DIR to go on with an interrupted run")
    if resume is not None:
        if out is not None or sets:
            raise FogsimError("--resume goes on with the run's own scenario and directory; drop --out and --set")
        prepared, out = prepare_resume(resume), resume
    else:
        prepared = prepare(scenario, sets or [])
        out = free_run_dir(out, prepared.scenario.name, "run")
    resuming = resume is not None
    if quiet:
        summary = run_scenario(prepared, out, verbose=verbose, resume=resuming)
    else:
        err.print(plan_table(prepared))
        with progress_bar(err) as bar:
            task = bar.add_task("rounds", total=prepared.scenario.rounds, status="starting Ray ...")

            def on_round(row: dict) -> None:
                bar.update(task, completed=row["round"], status=round_status(row))

            def on_client(round_: int, done: int, total: int) -> None:
                bar.update(task, status=f"round {round_}: clients {done}/{total} ...")
            summary = run_scenario(prepared, out, on_round, verbose, on_client, resume=resuming)
    stdout_console().print(summary_table(summary))
    stdout_console().print(f"run directory: {out}")


def validate(scenario: Path = SCENARIO, sets: Optional[list[str]] = SET) -> None:
    """Check a scenario completely and print the per-device plan, without training."""
    from fogsim.sim.run import prepare

    stdout_console().print(plan_table(prepare(scenario, sets or [])))
    stdout_console().print(f"{scenario}: valid")


FILES = typer.Option(None, "--file", help="also load the profiles of this YAML file (repeatable, in order)")
profiles_app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False,
                           help="List the device profiles, or show one in full.")


@profiles_app.callback(invoke_without_command=True)
def profiles(ctx: typer.Context, files: Optional[list[Path]] = FILES) -> None:
    """List the device profiles (built-in and from --file); `fogsim profiles show NAME` shows one in full."""
    if ctx.invoked_subcommand is None:
        profiles_list(files)


@profiles_app.command("list")
def profiles_list(files: Optional[list[Path]] = FILES) -> None:
    """List the device profiles (built-in and from --file) with their figures; descriptions are in the YAML."""
    from fogsim.sim.profiles import load_profiles

    table = Table(title="device profiles")
    for column in ("name", "memory budget", "compute", "uplink", "downlink", "availability", "failure rate"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for name, p in load_profiles(files or []).items():
        table.add_row(name, format_bytes(p.memory_budget), _flops(p.flops), _bits(p.uplink), _bits(p.downlink),
                      f"{p.availability:g}", f"{p.failure_rate:g}")
    stdout_console().print(table)


def _field_value(field: str, value) -> str:
    if field == "memory_budget":
        return f"{format_bytes(value)} ({value} bytes)"
    if field == "flops":
        return f"{_flops(value)} ({value:g})"
    if field in ("uplink", "downlink"):
        return f"{_bits(value)} ({value:g})"
    return str(value) if isinstance(value, str) else f"{value:g}"


@profiles_app.command("show")
def profiles_show(ctx: typer.Context, name: str = typer.Argument(..., help="profile name, e.g. samd21"),
                  files: Optional[list[Path]] = FILES) -> None:
    """Print one profile as resolved (every field, after its base chain), its file and what it derives from."""
    from fogsim.sim.profiles import load_library

    files = [*(ctx.parent.params.get("files") or [] if ctx.parent else []), *(files or [])]
    library = load_library(files)
    if name not in library:
        raise FogsimError(f"unknown profile {name!r} (known: {', '.join(sorted(library))})")
    entry = library[name]
    table = Table(title=f"profile {name}")
    for column in ("key", "value", "set by"):
        table.add_column(column)
    for field, value in entry.profile.model_dump().items():
        setter = entry.set_by(field)
        table.add_row(field, _field_value(field, value), "default" if setter is None else
                      ("this profile" if setter is entry else f"base {setter.name} ({Path(setter.source).name})"))
    out = stdout_console()
    out.print(table)
    out.print(f"source: {entry.source}", soft_wrap=True, highlight=False)
    chain = " <- ".join(f"{e.name} ({e.source})" for e in entry.chain)
    out.print(f"derived from: {chain}" if chain else "derived from: nothing (a complete definition)",
              soft_wrap=True, highlight=False)


def keys(markdown: bool = typer.Option(False, "--markdown", help="print a Markdown table (as in the README)")) -> None:
    """List every scenario key with its default and what it means."""
    from fogsim.sim.scenario import reference

    if markdown:
        print("| key | default | meaning |\n|---|---|---|")
        for key, default, meaning in reference():
            meaning = meaning.replace("|", "\\|")  # a literal pipe would end the Markdown cell
            print(f"| `{key}` | {f'`{default}`' if default else ''} | {meaning} |")
        return
    table = Table(title="scenario keys")
    for column in ("key", "default", "meaning"):
        table.add_column(column)
    for row in reference():
        table.add_row(*row)
    stdout_console().print(table)


def compare(runs: Optional[list[Path]] = typer.Argument(None, help="run directories written by fogsim run"),
            out: Optional[Path] = typer.Option(None, help="where to write the comparison (default: "
                                               "runs/compare-<time>)")) -> None:
    """Compare finished runs: a table, comparison.csv / .md and overlaid plots of accuracy, memory, batch, upload."""
    from fogsim.rundir import default_run_dir
    from fogsim.sim.compare import compare as compare_runs, rich_table

    out = out or default_run_dir("compare")
    frame = compare_runs(runs or [], out)
    stdout_console().print(rich_table(frame))
    stdout_console().print(f"comparison written to {out}")


def sweep(scenario: Path = SCENARIO,
          key: str = typer.Option(..., help="the scenario key to vary, e.g. pruning.compression, strategy.name or "
                                  "fleet[0].overrides.memory_budget"),
          values: str = typer.Option(..., help="comma-separated values of --key, each read as YAML like --set, "
                                     "e.g. 256KiB,512KiB,1MiB"),
          out: Optional[Path] = typer.Option(None, help="sweep directory: one run directory per value and the "
                                             "comparison (default: runs/sweep-<name>-<time>)"),
          sets: Optional[list[str]] = SET,
          quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
          verbose: bool = VERBOSE) -> None:
    """Run a scenario once per value of one key, then compare the runs (fogsim compare's table, CSV and plots)."""
    from fogsim.rundir import check_free, default_run_dir
    from fogsim.sim.compare import rich_table
    from fogsim.sim.sweep import plan, split_values, sweep as run_sweep

    if out is not None:
        check_free(out, "sweep")
    points = plan(scenario, key, split_values(values), sets or [])
    out = out or default_run_dir(f"sweep-{points[0].prepared.scenario.name}")
    if quiet:
        frame = run_sweep(points, out, key, verbose=verbose)
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
            frame = run_sweep(points, out, key, on_start, on_round, verbose, on_client)
            bar.update(runs, completed=len(points), status="comparing")
    stdout_console().print(rich_table(frame))
    stdout_console().print(f"sweep directory: {out}")


def register(app: typer.Typer) -> None:
    """Add the simulation's commands to the ``fogsim`` app."""
    app.command("run")(run)
    app.command("validate")(validate)
    app.add_typer(profiles_app, name="profiles")
    app.command("keys")(keys)
    app.command("compare")(compare)
    app.command("sweep")(sweep)
