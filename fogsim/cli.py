"""The ``fogsim`` command. Typer for parsing, rich for progress and tables.

Every error a user can cause ends as one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

from fogsim.telemetry import telemetry_off

telemetry_off()  # before anything below imports Flower

import click  # noqa: E402
import typer  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from rich.table import Table  # noqa: E402

from fogsim import signals  # noqa: E402
from fogsim.console import progress_bar, stderr_console, stdout_console  # noqa: E402
from fogsim.errors import FogsimError, one_line  # noqa: E402
from fogsim.sim import commands as sim_commands  # noqa: E402
from fogsim.units import format_bytes, parse_bytes, parse_percentage  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]},
                  help="Federated fog simulation of memory-budgeted devices training with DynHP.")
console = stderr_console()


def _print_version(value: bool) -> None:
    if value:
        from fogsim import __version__

        print(f"fogsim {__version__}")
        raise typer.Exit()


@app.callback()
def _group(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                        help="print fogsim's version and exit")) -> None:
    """Federated fog simulation of memory-budgeted devices training with DynHP."""


def settings_options(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One ``--option`` per field of the settings ``model``: its default, its description as the help
    (with the default), its ``Literal`` values as the choices."""
    params = []
    for name, field in model.model_fields.items():
        annotation, choices = field.annotation, None
        if get_origin(annotation) is Literal:
            annotation, choices = str, click.Choice(get_args(field.annotation))
        shown_default = "" if field.default is None else f" (default: {field.default})"
        option = typer.Option(field.default, f"--{name.replace('_', '-')}", help=f"{field.description}{shown_default}",
                              show_default=False, click_type=choices)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def train(dataset: str, model: str, budget: Optional[str], data_root: Optional[str], download: bool,
          out: Optional[Path], overwrite: bool, quiet: bool, **settings) -> None:
    """Train one device under a memory budget and write trace.csv, epochs.csv, summary.json, training.png."""
    from fogsim.core.config import make_train_config
    from fogsim.rundir import default_run_dir
    from fogsim.train import TrainingRun

    _check_budget(budget)
    config = make_train_config(**settings)
    out = out or default_run_dir(f"train-{dataset}-{config.method}")
    request = TrainingRun(dataset=dataset, model=model, config=config, budget=budget, data_root=data_root,
                          download=download, out=out, overwrite=overwrite)
    plan = request.plan
    console.print(f"[bold]{config.method}[/] on {dataset} with {model}: budget {format_bytes(plan.budget_bytes)}, "
                  f"dense training needs {format_bytes(plan.dense_bytes)}, target {format_bytes(plan.target_bytes)} "
                  f"at batch {plan.batch_start}")
    if plan.one_shot:
        console.print(f"the dense model does not fit the budget: one-shot prune to density "
                      f"{plan.start_density:.3f} before training, then incremental pruning")
    summary = _with_progress(request, quiet)
    _print_summary(summary, out)


def _option(name: str, default, help: str, annotation, choices=None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
        default, f"--{name.replace('_', '-')}", help=help, show_default=False,
        click_type=click.Choice(choices) if choices else None))


def _train_command():
    """``train`` with its options: those of the run, then every setting of ``TrainConfig``."""
    from fogsim.core.config import TrainConfig
    from fogsim.catalog import DATASETS, MODELS

    params = [
        _option("dataset", "digits", "the data (default: digits, scikit-learn's, embedded)", str, DATASETS),
        _option("model", "mlp-small", "the network: mlp is 784-300-100-10, lenet5 two conv + pool, mlp-small "
                "64-32 for digits (default: mlp-small)", str, MODELS),
        _option("budget", None, "device memory budget: a size (512KiB, 1MiB, 2.5MB) or a percentage of what dense "
                "training needs (25%) (default: 100%)", Optional[str]),
        *settings_options(TrainConfig),
        _option("data_root", None, "directory of the dataset's files (or a torchvision root)", Optional[str]),
        _option("download", False, "let torchvision download the dataset into --data-root", bool),
        _option("out", None, "run directory, created or empty (default: runs/train-<dataset>-<method>-<time>)",
                Optional[Path]),
        _option("overwrite", False, "replace a non-empty --out that an earlier fogsim train wrote", bool),
        _option("quiet", False, "no progress bar", bool),
    ]

    def command(**options) -> None:
        fixed = {name: options.pop(name) for name in ("dataset", "model", "budget", "data_root", "download", "out",
                                                       "overwrite", "quiet")}
        train(**fixed, **options)

    command.__doc__ = train.__doc__
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


app.command("train")(_train_command())


def _check_budget(budget: str | None) -> None:
    """Refuse a budget that is not a size or a percentage, before any data is loaded."""
    if budget is None:
        return
    if budget.strip().endswith("%"):
        parse_percentage(budget, what="budget")
    else:
        parse_bytes(budget, what="budget")


def _with_progress(request, quiet: bool) -> dict:
    if quiet:
        return request.run()
    with progress_bar(console, transient=True) as bar:
        task = bar.add_task("samples", total=request.total, status="")

        def on_step(row: dict) -> None:
            bar.update(task, completed=row["progress"],
                       status=f"d={row['density']:.3f} b={row['batch_size']} "
                              f"mem={format_bytes(row['memory_bytes'])} loss={row['loss']:.3f}")
        return request.run(on_step)


def _print_summary(summary: dict, out: Path) -> None:
    table = Table(title=f"{summary['method']} — {summary['model']} on {summary['dataset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("test accuracy", f"{summary['test_accuracy']:.4f}"),
        ("density", f"{summary['density']:.4f}"),
        ("compression", f"{summary['compression']:.2f}x"),
        ("peak training memory", format_bytes(summary["peak_memory_bytes"])),
        ("budget", format_bytes(summary["budget_bytes"])),
        ("mean model state S(d)", format_bytes(summary["mean_state_bytes"])),
        ("batch size (final / max)", f"{summary['batch_size_final']} / {summary['batch_size_max']}"),
        ("optimizer steps", str(summary["steps"])),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    stdout_console().print(table)
    stdout_console().print(f"run directory: {out}")


sim_commands.register(app)  # fogsim run / validate / profiles: the federated simulation


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn user errors into one line and exit code 2.

    A message is printed with its control characters escaped, so that a newline in a file name
    or in a value the user typed cannot split it.
    """
    previous = signals.install()
    try:
        if app(args=argv, standalone_mode=False) == 130:  # typer turns KeyboardInterrupt into Exit(130)
            raise KeyboardInterrupt
    except FogsimError as error:
        print(f"fogsim: error: {one_line(str(error))}", file=sys.stderr)
        return error.exit_code
    except click.exceptions.NoArgsIsHelpError as usage:
        print(usage.ctx.get_help() if usage.ctx else "", file=sys.stderr)
        return 2
    except click.UsageError as error:
        print(f"fogsim: error: {one_line(error.format_message())}", file=sys.stderr)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns an interrupt into Abort
        print(f"fogsim: interrupted by {signals.name()}; what finished is kept", file=sys.stderr)
        return signals.exit_code()
    finally:
        signals.restore(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
