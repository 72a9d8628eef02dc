"""``fogsim train``: one device under one memory budget. Its options are the training settings'
fields (``fogsim.core.config.TrainConfig``): their defaults, descriptions and choices."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import click
import typer
from pydantic import BaseModel

from fogsim.cli.console import progress_bar, stderr_console
from fogsim.cli.tables import print_training_summary
from fogsim.units import format_bytes, parse_bytes, parse_percentage

console = stderr_console()


def settings_options(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One ``--option`` per field of the settings ``model``: its default, its description as the help
    (with the default), its ``Literal`` values as the choices."""
    params = []
    for name, field in model.model_fields.items():
        literal = get_origin(field.annotation) is Literal
        shown_default = "" if field.default is None else f" (default: {field.default})"
        params.append(_option(name, field.default, f"{field.description}{shown_default}",
                              str if literal else field.annotation, get_args(field.annotation) if literal else None))
    return params


def train(dataset: str, model: str, budget: Optional[str], data_root: Optional[str], download: bool,
          out: Optional[str], overwrite: bool, quiet: bool, **settings) -> None:
    """Train one device under a memory budget and write trace.csv, epochs.csv, summary.json, training.png."""
    from fogsim.core.config import make_train_config
    from fogsim.core.trainer import Diverged
    from fogsim.rundir import default_run_dir, given_dir
    from fogsim.one_device import TrainingRun

    out = given_dir(out)

    _check_budget(budget)
    config = make_train_config(**settings)
    out = out or default_run_dir(f"train-{dataset}-{config.method}")
    request = TrainingRun(dataset=dataset, model=model, config=config, budget=budget, data_root=data_root,
                          download=download, out=out, overwrite=overwrite)
    plan = request.plan
    console.print(f"[bold]{config.method}[/] on {dataset} with {model}: budget {format_bytes(plan.budget_bytes)}, "
                  f"dense training needs {format_bytes(plan.dense_bytes)}, target {format_bytes(plan.target_bytes)} "
                  f"at batch {plan.batch_start}", markup=True)  # the method, dataset and model are choices
    if plan.one_shot:
        console.print(f"the dense model does not fit the budget: one-shot prune to density "
                      f"{plan.start_density:.3f} before training, then incremental pruning")
    try:
        summary = _with_progress(request, quiet)
    except Diverged as error:  # named as this command's options
        raise Diverged(error.step, error.loss, error.config, ("--lr", "--weight-decay", "--on-divergence")) from None
    print_training_summary(summary, out)


def _option(name: str, default, help: str, annotation, choices=None) -> inspect.Parameter:
    """A typer option ``--name`` as a keyword parameter; the default is in ``help``, not printed again."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
        default, f"--{name.replace('_', '-')}", help=help, show_default=False,
        click_type=click.Choice(choices) if choices else None))


def _train_command():
    """``train`` with its options: those of the run, then every setting of ``TrainConfig``."""
    from fogsim.catalog import DATASETS, MODELS
    from fogsim.core.config import TrainConfig

    run_options = [
        _option("dataset", "digits", "the data (default: digits, scikit-learn's, embedded)", str, DATASETS),
        _option("model", "mlp-small", "the network: mlp is 784-300-100-10, lenet5 two conv + pool, mlp-small "
                "64-32 for digits (default: mlp-small)", str, MODELS),
        _option("budget", None, "device memory budget: a size (512KiB, 1MiB, 2.5MB) or a percentage of what dense "
                "training needs (25%) (default: 100%)", Optional[str]),
        _option("data_root", None, "directory of the dataset's files (or a torchvision root)", Optional[str]),
        _option("download", False, "let torchvision download the dataset into --data-root", bool),
        _option("out", None, "run directory, created or empty (default: runs/train-<dataset>-<method>-<time>)",
                Optional[str]),
        _option("overwrite", False, "replace a non-empty --out that an earlier fogsim train wrote", bool),
        _option("quiet", False, "no progress bar", bool),
    ]
    params = [*run_options[:3], *settings_options(TrainConfig), *run_options[3:]]

    def command(**options) -> None:
        train(**{p.name: options.pop(p.name) for p in run_options}, **options)

    command.__doc__ = train.__doc__
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


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


def register(app: typer.Typer) -> None:
    app.command("train")(_train_command())
