"""The ``fogsim`` command. Typer for parsing, rich for progress and tables.

Every error a user can cause ends as one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from fogsim.telemetry import telemetry_off

telemetry_off()  # before anything below imports Flower

import click  # noqa: E402
import typer  # noqa: E402
from rich.table import Table  # noqa: E402

from fogsim import signals  # noqa: E402
from fogsim.console import progress_bar, stderr_console, stdout_console  # noqa: E402
from fogsim.errors import FogsimError, one_line  # noqa: E402
from fogsim.sim import commands as sim_commands  # noqa: E402
from fogsim.units import format_bytes, parse_bytes, parse_percentage  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Federated fog simulation of memory-budgeted devices training with DynHP.")
console = stderr_console()


@app.callback()
def _group() -> None:
    """Federated fog simulation of memory-budgeted devices training with DynHP."""


@app.command()
def train(
    dataset: str = typer.Option("digits", help="digits, fashion-mnist, mnist, cifar10 or synthetic"),
    model: str = typer.Option("mlp-small", help="mlp (784-300-100), lenet5 or mlp-small"),
    method: str = typer.Option("dynhp", help="dense, gmp, soft or dynhp"),
    budget: Optional[str] = typer.Option(None, help="device memory budget: a size (512KiB, 1MiB, 2.5MB) or a "
                                         "percentage of what dense training needs (25%); default: 100%"),
    compression: float = typer.Option(10.0, help="target compression 1/d (>= 1)"),
    epochs: float = typer.Option(10.0, help="passes over the training set"),
    batch_size: int = typer.Option(64, help="base batch: the fixed batch of dense/gmp/soft"),
    batch_min: Optional[int] = typer.Option(None, help="dynhp's smallest batch (default: --batch-size)"),
    batch_max: int = typer.Option(1024, help="dynhp's largest batch"),
    lr: float = typer.Option(0.05, help="learning rate at the base batch"),
    lr_rule: str = typer.Option("sqrt", help="learning rate as the batch grows: keep, linear or sqrt"),
    optimizer: str = typer.Option("momentum", help="sgd, momentum or adam"),
    schedule: str = typer.Option("cubic", help="density schedule: cubic, linear or oneshot"),
    prune_start: float = typer.Option(0.0, help="start of the pruning window (fraction of training)"),
    prune_end: float = typer.Option(0.6, help="end of the pruning window (fraction of training)"),
    prune_every: float = typer.Option(0.1, help="epochs between pruning steps"),
    scope: str = typer.Option("global", help="magnitude ranking: global or layer"),
    granularity: str = typer.Option("unstructured", help="unstructured or structured (whole neurons/channels)"),
    seed: int = typer.Option(0, help="seed of initialisation and data order"),
    data_root: Optional[str] = typer.Option(None, help="directory of the dataset's files (or a torchvision root)"),
    download: bool = typer.Option(False, help="let torchvision download the dataset into --data-root"),
    out: Optional[Path] = typer.Option(None, help="run directory (default: runs/train-<method>-<time>)"),
    overwrite: bool = typer.Option(False, help="replace a non-empty --out"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train one device under a memory budget and write trace.csv, epochs.csv, summary.json, training.png."""
    from fogsim.core.config import make_train_config
    from fogsim.rundir import default_run_dir
    from fogsim.train import TrainingRun

    _check_budget(budget)
    config = make_train_config(
        method=method, compression=compression, epochs=epochs, batch_size=batch_size, batch_min=batch_min,
        batch_max=batch_max, lr=lr, lr_rule=lr_rule, optimizer=optimizer, schedule=schedule,
        prune_start=prune_start, prune_end=prune_end, prune_every=prune_every, scope=scope,
        granularity=granularity, seed=seed)
    out = out or default_run_dir(f"train-{dataset}-{method}")
    request = TrainingRun(dataset=dataset, model=model, config=config, budget=budget, data_root=data_root,
                          download=download, out=out, overwrite=overwrite)
    plan = request.plan
    console.print(f"[bold]{method}[/] on {dataset} with {model}: budget {format_bytes(plan.budget_bytes)}, "
                  f"dense training needs {format_bytes(plan.dense_bytes)}, target {format_bytes(plan.target_bytes)} "
                  f"at batch {plan.batch_start}")
    if plan.one_shot:
        console.print(f"the dense model does not fit the budget: one-shot prune to density "
                      f"{plan.start_density:.3f} before training, then incremental pruning")
    summary = _with_progress(request, quiet)
    _print_summary(summary, out)


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
