"""fogsim's public API: what a notebook or a script needs, by the names the command line uses.

* ``train_device`` — one device under one memory budget (``fogsim train``);
* ``run_scenario`` — a federated scenario through Flower and Ray (``fogsim run``);
* ``sweep_scenario`` — one scenario per value of one key, compared (``fogsim sweep``);
* ``load_run`` / ``compare_runs`` — finished run directories, read and side by side (``fogsim compare``);
* ``plot_run`` / ``plot_comparison`` / ``plot_training`` — the pictures the commands draw.

Everything else in the package is internal and may change. Import from ``fogsim``:
``from fogsim import run_scenario, load_run``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from fogsim.plots import plot_comparison, plot_run, plot_training
from fogsim.sim.compare import Run, comparison_frame, load_run as _load_run, name_runs

__all__ = ["train_device", "run_scenario", "sweep_scenario", "load_run", "compare_runs", "plot_run",
           "plot_comparison", "plot_training", "Run"]


def train_device(dataset: str = "digits", model: str = "mlp-small", budget: str | int | None = None, *,
                 out: str | Path | None = None, on_step: Callable[[dict], None] | None = None,
                 data_root: str | None = None, **settings) -> dict:
    """Train one device and return its summary (``summary.json``'s content).

    ``budget`` is bytes, a size (``"512KiB"``) or a share of what dense training needs (``"25%"``);
    ``settings`` are the training settings (``method="gmp"``, ``compression=20``, ``epochs=5``, ...:
    see ``fogsim train --help``); ``out``, if given, receives the run's files; ``on_step`` sees
    every optimizer step's row of ``trace.csv`` as it happens.
    """
    from fogsim.core.config import make_train_config
    from fogsim.one_device import TrainingRun

    request = TrainingRun(dataset=dataset, model=model, config=make_train_config(**settings), budget=budget,
                          data_root=data_root, out=None if out is None else Path(out))
    return request.run(on_step)


def run_scenario(scenario: str | Path, sets: Sequence[str] = (), out: str | Path | None = None, *,
                 on_round: Callable[[dict], None] | None = None, verbose: bool = False) -> dict:
    """Run the scenario file ``scenario`` (with ``sets`` such as ``"rounds=3"``) into ``out`` (default:
    ``runs/<name>-<time>``) and return its summary, with ``run_dir`` added; ``on_round`` sees every
    ``rounds.csv`` row."""
    from fogsim.rundir import free_run_dir
    from fogsim.sim.run import prepare, run

    prepared = prepare(scenario, list(sets))
    directory = free_run_dir(None if out is None else Path(out), prepared.scenario.name, "run")
    return {**run(prepared, directory, on_round, verbose), "run_dir": str(directory)}


def sweep_scenario(scenario: str | Path, key: str, values: Sequence[str], sets: Sequence[str] = (),
                   out: str | Path | None = None, *, on_run: Callable[[int, str], None] | None = None,
                   verbose: bool = False, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Run ``scenario`` once per value of ``key`` into ``out/<key>=<value>`` (with ``seeds``, once per value and
    seed into ``out/<key>=<value>,seed=<seed>``) and return the comparison (``comparison.csv``, also written
    to ``out`` with its plots, and with ``groups.csv`` and ``sweep.png``: mean and standard deviation over
    seeds); ``on_run(index, value)`` is called as each run starts."""
    from fogsim.rundir import check_free, default_run_dir
    from fogsim.sim.sweep import plan, sweep

    if out is not None:
        check_free(Path(out), "sweep")
    from fogsim.sim.sweep import split_seeds

    chosen = None if seeds is None else split_seeds(",".join(str(s) for s in seeds))
    points = plan(Path(scenario), key, [str(v) for v in values], list(sets), chosen)
    directory = Path(out) if out is not None else default_run_dir(f"sweep-{points[0].prepared.scenario.name}")
    on_start = (lambda index, point: on_run(index, point.value)) if on_run else None
    return sweep(points, directory, key, on_start=on_start, verbose=verbose)


def load_run(path: str | Path) -> Run:
    """A finished run directory: ``scenario``, ``rounds`` and ``clients`` (DataFrames), ``summary``."""
    return _load_run(Path(path))


def compare_runs(paths: Sequence[str | Path], out: str | Path | None = None) -> pd.DataFrame:
    """Finished runs side by side: one row per run and profile (``comparison.csv``'s columns). With
    ``out``, the CSV, the Markdown table and the plots are written there as ``fogsim compare`` does."""
    if out is not None:
        from fogsim.sim.compare import compare

        return compare([Path(p) for p in paths], Path(out))
    runs = [_load_run(Path(p)) for p in paths]
    name_runs(runs)
    return comparison_frame(runs)
