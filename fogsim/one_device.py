"""``fogsim train``: one simulated device trains one model under one budget, and the files it leaves.

Everything that can be wrong with the request (names, budget, feasibility, missing data) is
checked before the output directory is created. The run directory holds:

* ``trace.csv``   — one row per optimizer step: step, epoch, progress (samples), density,
  batch_size, lr, loss, state_bytes, activation_bytes, memory_bytes, budget_bytes;
* ``epochs.csv``  — one row per epoch: test accuracy and loss, density, batch size, peak memory;
* ``summary.json`` — configuration, plan, final test accuracy, density, compression, peak memory;
* ``training.png`` — density, batch size, memory against the budget, and accuracy over progress.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from fogsim.core.config import TrainConfig
from fogsim.core.topology import Topology
from fogsim.core.trainer import DeviceTrainer
from fogsim.core.trainer import plan as make_plan
from fogsim.catalog import DATASETS, MODELS
from fogsim.data import Dataset, load_dataset
from fogsim.errors import FogsimError, shown
from fogsim.models import build_model
from fogsim.rundir import check_free, claim
from fogsim.sim.outputs import OutputFailed
from fogsim.units import parse_bytes
from fogsim.numbers import csv_frame, json_text


def resolve_budget(spec: str | int | None, model: torch.nn.Module, input_shape: tuple[int, ...],
                   num_classes: int, config: TrainConfig) -> int | None:
    """A budget in bytes from ``1MiB``-style sizes or ``25%`` (of what dense training needs)."""
    if spec is None:
        return None
    text = str(spec).strip()
    if text.endswith("%"):
        try:
            fraction = float(text[:-1]) / 100
        except ValueError:
            fraction = -1
        if not fraction > 0:
            raise FogsimError(f"invalid budget {shown(spec)}: a percentage must be positive, like 25%")
        dense = make_plan(model, Topology(model, input_shape), config.model_copy(update={"method": "dense"}),
                          None, num_classes).budget_bytes
        return max(1, math.floor(dense * fraction))
    return parse_bytes(text, what="budget")


class TrainingRun:
    """A validated request: data loaded, model built, plan checked. ``run`` then trains."""

    def __init__(self, *, dataset: str, model: str, config: TrainConfig, budget: str | int | None = None,
                 data_root: str | None = None, download: bool = False, out: Path | None = None,
                 overwrite: bool = False):
        if dataset not in DATASETS:
            raise FogsimError(f"unknown dataset {shown(dataset)}: use one of {', '.join(DATASETS)}")
        if model not in MODELS:
            raise FogsimError(f"unknown model {shown(model)}: use one of {', '.join(MODELS)}")
        if out is not None:
            check_free(out, "train", overwrite)
        self.dataset_name, self.model_name, self.config = dataset, model, config
        self.out, self.overwrite = out, overwrite
        torch.manual_seed(config.seed)
        self.data: Dataset = load_dataset(dataset, root=data_root, download=download, seed=config.seed)
        self.model = build_model(model, self.data.input_shape, self.data.num_classes, seed=config.seed)
        budget_bytes = resolve_budget(budget, self.model, self.data.input_shape, self.data.num_classes, config)
        samples = len(self.data.train_x)
        self.total = math.ceil(config.epochs * samples)
        self.trainer = DeviceTrainer(self.model, self.data.input_shape, self.data.num_classes, config,
                                     horizon=self.total, budget=budget_bytes)

    @property
    def plan(self):
        return self.trainer.plan

    def run(self, on_step: Callable[[dict], None] | None = None) -> dict:
        """Train, write the run directory (if ``out`` was given) and return the summary."""
        if self.out is None:
            return self._train(on_step)[0]
        with claim(self.out, "train", overwrite=self.overwrite) as out:
            summary, trace, epochs = self._train(on_step)
            write_outputs(out, summary, trace, epochs)
        return summary

    def _train(self, on_step) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
        data, trainer, n = self.data, self.trainer, len(self.data.train_x)
        generator = torch.Generator().manual_seed(self.config.seed)
        rows, epochs = [], []
        start = time.perf_counter()
        epoch = 0
        while trainer.progress < self.total:
            epoch += 1
            chunk = trainer.train(data.train_x, data.train_y, min(n, self.total - trainer.progress),
                                  generator=generator, on_step=on_step)
            if trainer.progress >= self.total:
                trainer.finish()
            accuracy, loss = trainer.evaluate(data.test_x, data.test_y)
            for row in chunk:
                row["epoch"] = row["progress"] / n
            rows += chunk
            epochs.append({"epoch": epoch, "progress": trainer.progress, "test_accuracy": accuracy,
                           "test_loss": loss, "train_loss": sum(r["loss"] for r in chunk) / len(chunk),
                           "density": trainer.density, "batch_size": trainer.batch_size,
                           "peak_memory_bytes": max(r["memory_bytes"] for r in chunk)})
        trace = pd.DataFrame(rows)
        final = epochs[-1]
        summary = {
            "dataset": self.dataset_name, "model": self.model_name, "method": self.config.method,
            "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
            "density": trainer.density, "compression": 1 / trainer.density,
            "target_compression": 1 / self.config.target_density,
            "peak_memory_bytes": int(trace["memory_bytes"].max()), "budget_bytes": trainer.budget,
            # averaged over training progress (samples), not steps: dynhp takes fewer, larger steps when sparse
            "mean_state_bytes": float((trace["state_bytes"] * trace["batch_size"]).sum() / trace["batch_size"].sum()),
            "final_state_bytes": int(trainer.footprint.state_bytes),
            "batch_size_final": trainer.batch_size, "batch_size_max": int(trace["batch_size"].max()),
            "steps": trainer.steps, "samples": trainer.progress, "train_samples": n,
            "wall_time_s": time.perf_counter() - start,
            "plan": self.plan.as_dict(), "config": self.config.model_dump(),
        }
        return summary, trace, pd.DataFrame(epochs)


def write_outputs(directory: Path, summary: dict, trace: pd.DataFrame, epochs: pd.DataFrame) -> None:
    from fogsim.plots import plot_training

    columns = ["step", "epoch", "progress", "density", "batch_size", "lr", "loss", "state_bytes",
               "activation_bytes", "memory_bytes", "budget_bytes"]
    try:
        csv_frame(trace[columns]).to_csv(directory / "trace.csv", index=False)
        csv_frame(epochs).to_csv(directory / "epochs.csv", index=False)
        (directory / "summary.json").write_text(json_text(summary))
        plot_training(trace, epochs, summary, directory / "training.png")
    except OSError as error:  # a full disk, a file size limit: the claim removes what was written
        raise OutputFailed(f"{directory}: the results could not be written "
                           f"({error.strerror or type(error).__name__}); nothing is kept, free space and run again") \
            from None
