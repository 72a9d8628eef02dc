"""``fogsim run``, ``validate``, ``profiles`` and ``keys``: the federated simulation's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fogsim.cli.console import print_table, progress_bar, round_status, stderr_console, stdout_console
from fogsim.cli.tables import bits, fog_table, flops, plan_table, summary_table
from fogsim.errors import FogsimError, shown
from fogsim.units import format_bytes

SCENARIO = typer.Argument(..., help="scenario YAML file, e.g. scenarios/quickstart.yaml")
SET = typer.Option(None, "--set", help="change one key for this run, e.g. --set rounds=3 --set fleet[0].count=4")


TRACK = typer.Option(None, "--track", help="also log every round to tensorboard:DIR or mlflow:URI (repeatable; "
                     "needs fogsim's tracking extra: pip install tensorboard mlflow-skinny)")
VERBOSE = typer.Option(False, "--verbose", help="show Flower's and Ray's own logs (quiet by default)")
ON_DIVERGENCE = typer.Option(None, "--on-divergence", help="stop (the scenario's default) or continue when training "
                             "diverges: the same as --set training.on_divergence=...")


def divergence_set(choice: Optional[str]) -> list[str]:
    """``--on-divergence`` as the ``--set`` it stands for."""
    if choice is None:
        return []
    if choice not in ("stop", "continue"):
        raise FogsimError(f"--on-divergence {shown(choice)}: choose stop or continue")
    return [f"training.on_divergence={choice}"]


def run(scenario: Optional[Path] = typer.Argument(None, help="scenario YAML file, e.g. scenarios/quickstart.yaml"),
        out: Optional[str] = typer.Option(None, help="run directory (default: runs/<name>-<time>)"),
        sets: Optional[list[str]] = SET,
        resume: Optional[str] = typer.Option(None, help="go on with the interrupted run in this directory from "
                                              "its last finished round (instead of SCENARIO)"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
        verbose: bool = VERBOSE, on_divergence: Optional[str] = ON_DIVERGENCE,
        track: Optional[list[str]] = TRACK) -> None:
    """Run a scenario: the fleet trains with DynHP on Flower and Ray; results go to the run directory."""
    from fogsim.rundir import free_run_dir, given_dir
    from fogsim.sim.run import prepare, prepare_resume, run as run_scenario
    from fogsim.tracking import parse_tracks

    out, resume = given_dir(out), given_dir(resume, "--resume")
    tracks = parse_tracks(track)

    err = stderr_console()
    if (scenario is None) == (resume is None):
        raise FogsimError("give a scenario file to run, or --resume RUN_DIR to go on with an interrupted run")
    sets = [*(sets or []), *divergence_set(on_divergence)]
    if resume is not None:
        if out is not None or sets:
            raise FogsimError("--resume goes on with the run's own scenario and directory; drop --out, --set and "
                              "--on-divergence")
        prepared, out = prepare_resume(resume), resume
    else:
        prepared = prepare(scenario, sets or [])
        out = free_run_dir(out, prepared.scenario.name, "run")
    resuming = resume is not None
    if quiet:
        summary = run_scenario(prepared, out, verbose=verbose, resume=resuming, tracks=tracks)
    else:
        print_table(plan_table(prepared), err)
        if (fogs := fog_table(prepared)) is not None:
            print_table(fogs, err)
        with progress_bar(err) as bar:
            task = bar.add_task("rounds", total=prepared.scenario.rounds, status="starting Ray ...")

            def on_round(row: dict) -> None:
                bar.update(task, completed=row["round"], status=round_status(row))

            def on_client(round_: int, done: int, total: int) -> None:
                bar.update(task, status=f"round {round_}: clients {done}/{total} ...")
            summary = run_scenario(prepared, out, on_round, verbose, on_client, resume=resuming, tracks=tracks)
    print_table(summary_table(summary))
    stdout_console().print(f"run directory: {out}")


def validate(scenario: Path = SCENARIO, sets: Optional[list[str]] = SET) -> None:
    """Check a scenario completely and print the per-device plan, without training."""
    from fogsim.sim.run import prepare

    prepared = prepare(scenario, sets or [])
    print_table(plan_table(prepared))
    if (fogs := fog_table(prepared)) is not None:
        print_table(fogs)
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
        table.add_row(name, format_bytes(p.memory_budget), flops(p.flops), bits(p.uplink), bits(p.downlink),
                      f"{p.availability:g}", f"{p.failure_rate:g}")
    print_table(table)


def _field_value(field: str, value) -> str:
    if field == "memory_budget":
        return f"{format_bytes(value)} ({value} bytes)"
    if field == "flops":
        return f"{flops(value)} ({value:g})"
    if field in ("uplink", "downlink"):
        return f"{bits(value)} ({value:g})"
    return str(value) if isinstance(value, str) else f"{value:g}"


@profiles_app.command("show")
def profiles_show(ctx: typer.Context, name: str = typer.Argument(..., help="profile name, e.g. samd21"),
                  files: Optional[list[Path]] = FILES) -> None:
    """Print one profile as resolved (every field, after its base chain), its file and what it derives from."""
    from fogsim.sim.profiles import known_names, load_library

    files = [*(ctx.parent.params.get("files") or [] if ctx.parent else []), *(files or [])]
    library = load_library(files)
    if name not in library:
        raise FogsimError(f"unknown profile {shown(name)} (known: {known_names(library)})")
    entry = library[name]
    table = Table(title=f"profile {name}")
    for column in ("key", "value", "set by"):
        table.add_column(column)
    for field, value in entry.profile.model_dump().items():
        setter = entry.set_by(field)
        table.add_row(field, _field_value(field, value), "default" if setter is None else
                      ("this profile" if setter is entry else f"base {setter.name} ({Path(setter.source).name})"))
    out = stdout_console()
    print_table(table, out)
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
    print_table(table)


def register(app: typer.Typer) -> None:
    """Add the simulation's commands to the ``fogsim`` app."""
    app.command("run")(run)
    app.command("validate")(validate)
    app.add_typer(profiles_app, name="profiles")
    app.command("keys")(keys)
