"""One device training one model under one memory budget: the four methods behind one interface.

``plan`` checks feasibility before any training and decides the start density (a one-shot prune
when the dense model does not fit but the target does). ``DeviceTrainer`` then trains for a
given number of samples at a time, so a federated device can resume it round after round:

* at every pruning step (each ``prune_every`` epochs of progress) the criterion proposes masks
  at the schedule's density and ``MaskSet.update`` adopts them (intersected when hard); the
  first one, before the first step, is the one-shot prune to the plan's start density when the
  dense model does not fit (the schedule starts there);
* with ``dynhp`` the batch becomes ``clamp(floor((B - S(d)) / a(d)), b_min, b_max)`` and the
  learning rate follows ``lr_rule``;
* gradients and optimizer state of pruned weights are dropped, and the weights stay zero;
* the memory of every step is checked against the budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Hashable

import torch
from torch import nn

from fogsim.core.config import TrainConfig, has_diverged, lower_advice
from fogsim.core.importance import make_criterion
from fogsim.core.masks import MaskSet
from fogsim.core.memory import Footprint, MemoryAccountant
from fogsim.core.schedule import Schedule
from fogsim.core.topology import Topology
from fogsim.errors import FogsimError
from fogsim.units import format_bytes


@dataclass(frozen=True)
class Plan:
    """What a device will do, decided before it trains."""

    method: str
    budget_bytes: int
    dense_bytes: int        # dense training at the start batch
    target_bytes: int       # training at the target density and the start batch
    start_density: float    # 1.0, or the density of the one-shot prune that makes the device fit
    target_density: float
    batch_start: int
    batch_min: int
    batch_max: int
    layout: str

    @property
    def one_shot(self) -> bool:
        return self.start_density < 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def batch_size_for(footprint: Footprint, budget: int, batch_min: int, batch_max: int) -> int:
    """Dynamic batch sizing: ``clamp(floor((B - S(d)) / a(d)), b_min, b_max)``."""
    return max(batch_min, min(batch_max, footprint.batch_capacity(budget)))


def scaled_lr(lr: float, rule: str, batch: int, base_batch: int) -> float:
    """The learning rate for ``batch`` when ``lr`` is right for ``base_batch``."""
    ratio = batch / base_batch
    return {"keep": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio)}[rule]


def layout_for(config: TrainConfig) -> str:
    """How the device stores its state: soft pruning and dense training keep every weight."""
    if config.method in ("dense", "soft"):
        return "dense"
    return "compact" if config.granularity == "structured" else "sparse"


def plan(model: nn.Module, topology: Topology, config: TrainConfig, budget: int | None,
         num_classes: int | None = None, device: str = "the device") -> Plan:
    """Check that ``config`` can train ``model`` within ``budget`` bytes and decide the start density.

    ``budget=None`` means exactly what dense training needs at the base batch. Raises
    FogsimError naming the device, its budget and the bytes needed when even the target does
    not fit.
    """
    refusal = topology.structured_refusal() if config.granularity == "structured" and config.prunes else None
    if refusal is not None:
        raise FogsimError(refusal)
    if num_classes is not None and topology.output_numel != num_classes and not topology.flat:
        raise FogsimError(f"the model returns {topology.output_numel} scores per sample but the data has "
                          f"{num_classes} classes; give its last layer {num_classes} outputs")
    layout = layout_for(config)
    accountant = MemoryAccountant(model, topology, config.optimizer, layout, num_classes)
    criterion = make_criterion(config.criterion, config.scope, config.granularity)
    dense = accountant.footprint(None)
    b = config.start_batch
    if budget is None:
        budget = dense.at(config.batch_size)
    target = dense if layout == "dense" else accountant.planned(config.target_density, criterion)
    if target.at(b) > budget:
        what = "the dense model" if layout == "dense" else f"compression {config.compression:g}x"
        hint = "raise the budget or lower the batch" if layout == "dense" else \
            "raise the budget, raise the compression or lower the (minimum) batch"
        raise FogsimError(
            f"{device} cannot train {config.method}: budget {format_bytes(budget)} ({budget} B) is below the "
            f"{format_bytes(target.at(b))} ({target.at(b)} B) needed for {what} at batch {b} "
            f"(state {format_bytes(target.state_bytes)} + {b} x {format_bytes(target.activation_bytes)} "
            f"activations); {hint}")
    start = 1.0
    if dense.at(b) > budget:
        lo, hi = config.target_density, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if accountant.planned(mid, criterion).at(b) <= budget else (lo, mid)
        start = lo
    return Plan(method=config.method, budget_bytes=budget, dense_bytes=dense.at(b), target_bytes=target.at(b),
                start_density=start, target_density=config.target_density, batch_start=b,
                batch_min=config.min_batch if config.dynamic_batch else config.batch_size,
                batch_max=config.batch_max if config.dynamic_batch else config.batch_size, layout=layout)


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    momentum = 0.9 if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=config.lr, momentum=momentum, weight_decay=config.weight_decay)


StepCallback = Callable[[dict], None]


class Diverged(FogsimError):
    """Training diverged: a step's loss was not finite or above ``DIVERGED_LOSS`` x ln(classes).

    Raised by ``DeviceTrainer.train`` unless the config says ``on_divergence: continue``. The
    message names the settings to change as ``names`` (lr, weight decay, on-divergence) spell them
    where the user gave them: ``--lr`` on the command line, ``training.lr`` in a scenario."""

    exit_code = 1

    def __init__(self, step: int, loss: float, config: TrainConfig,
                 names: tuple[str, str, str] = ("lr", "weight_decay", "on_divergence")):
        self.step, self.loss, self.config = step, loss, config
        super().__init__(f"training diverged at step {step} (loss {loss:.4g}): {self.advice(*names)}")

    def advice(self, lr: str, weight_decay: str, on_divergence: str) -> str:
        """What to lower, with the values used, and how to go on anyway."""
        settings = [(lr, f"{self.config.lr:g}")]
        if self.config.weight_decay > 0:
            settings.append((weight_decay, f"{self.config.weight_decay:g}"))
        return lower_advice(settings, on_divergence)


class DeviceTrainer:
    """Trains ``model`` in place under ``config`` and ``budget``; resumable across calls to ``train``.

    ``horizon`` is the training progress, in samples, over which the pruning window
    (``prune_start``..``prune_end``) is laid out: for one device, epochs x training set size.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], num_classes: int, config: TrainConfig,
                 *, horizon: int, budget: int | None = None, device: str = "the device"):
        self.model = model
        self.config = config
        self.topology = Topology(model, input_shape)
        self.plan = plan(model, self.topology, config, budget, num_classes, device)
        self.budget = self.plan.budget_bytes
        self.accountant = MemoryAccountant(model, self.topology, config.optimizer, self.plan.layout, num_classes)
        self.criterion = make_criterion(config.criterion, config.scope, config.granularity)
        self.optimizer = make_optimizer(model.parameters(), config)
        self.num_classes = num_classes
        self.stop_on_divergence = config.on_divergence == "stop"
        self._proposals: dict[tuple, dict[str, torch.Tensor]] = {}  # by (origin, density): see start()
        self.masks: MaskSet | None = MaskSet(self.model, self.topology, hard=config.hard) if config.prunes else None
        self.start(horizon)

    def start(self, horizon: int, *, progress: int = 0, steps: int = 0, next_prune: float = 0.0,
              masks: dict[str, torch.Tensor] | None = None, origin: Hashable | None = None) -> None:
        """Begin training a device from the model's current weights, at a schedule position.

        ``__init__`` calls it for a fresh device. Calling it again begins another device of the
        same configuration and budget on the same model object, as if the trainer had been
        built anew: the plan, the memory accountant and the criterion, which depend only on
        the architecture, the configuration and the budget, are kept; the masks (full, or
        ``masks``), the optimizer's state and the schedule (over ``horizon`` samples) are not.
        A simulation worker that trains many devices one after another loads each device's
        weights into the model, then calls this.

        ``origin`` names where the weights and ``masks`` came from: devices started from the same
        origin hold the same weights and masks until their first optimizer step, so a pruning step
        before it proposes the same masks for all of them, and is computed once (``forget``
        drops what was kept, as the origin's weights change).
        """
        config = self.config
        if self.masks is not None:
            self.masks.reset(masks)
        self.horizon = horizon
        self.schedule = Schedule(self.plan.start_density, config.target_density, config.prune_start * horizon,
                                 config.prune_end * horizon, config.schedule) if config.prunes else None
        self.optimizer.state.clear()  # momentum and moments belong to the previous device
        self.prune_interval = None  # samples between pruning steps, known once the data size is
        self.progress, self.steps, self.next_prune = int(progress), int(steps), float(next_prune)
        self._origin, self._started_at = origin, self.steps
        if self.masks is not None and masks:
            self.masks.apply()
        self._refresh()

    # --- pruning and batch sizing ----------------------------------------------------------
    def forget(self) -> None:
        """Drop the proposals kept for devices that start from the same origin (see ``start``)."""
        self._proposals.clear()

    def _prune(self, density: float) -> None:
        # Before its first step a device holds what its origin holds: the same proposal as every
        # other device started from it.
        shared = self._origin is not None and self.steps == self._started_at
        key = (self._origin, density)
        proposal = self._proposals.get(key) if shared else None
        if proposal is None:
            proposal = self.criterion.propose(self.masks, density)
            if shared:
                self._proposals[key] = proposal
        self.masks.update(proposal)
        self.masks.apply()
        self.masks.mask_optimizer_state(self.optimizer)

    def _refresh(self) -> None:
        """Recompute memory, batch and learning rate after the masks changed."""
        self.footprint = self.accountant.footprint(self.masks if self.plan.layout != "dense" else None)
        self.density = self.masks.density() if self.masks is not None else 1.0
        if self.config.dynamic_batch:
            self.batch_size = batch_size_for(self.footprint, self.budget, self.config.min_batch, self.config.batch_max)
        else:
            self.batch_size = self.config.batch_size
        self.lr = scaled_lr(self.config.lr, self.config.lr_rule, self.batch_size, self.config.batch_size)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def _maybe_prune(self) -> None:
        if self.masks is None:
            return
        overdue = self.masks.hard and self.progress >= self.schedule.t1 and self.density > self.schedule.target
        if self.progress < self.next_prune and not overdue:
            return
        density = self.schedule.density(self.progress)
        if not self.masks.hard or density < self.density:
            self._prune(density)
            self._refresh()
        while self.next_prune <= self.progress:
            self.next_prune += self.prune_interval

    def finish(self) -> None:
        """Reach the target now if the schedule has not (soft pruning re-prunes regrown weights)."""
        if self.masks is None:
            return
        target = self.schedule.target
        if not self.masks.hard or self.density > target:
            self._prune(target)
            self._refresh()

    # --- persistence (a federated device resumes its schedule round after round) ------------
    def state_dict(self) -> dict:
        """Masks and schedule position: what a device must keep between rounds to resume."""
        return {"masks": self.masks.state_dict() if self.masks is not None else {},
                "progress": self.progress, "steps": self.steps, "next_prune": self.next_prune}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``; the masks are applied to the model's current weights."""
        self.progress = int(state["progress"])
        self.steps = int(state["steps"])
        self.next_prune = float(state["next_prune"])
        if self.masks is not None and state["masks"]:
            self.masks.load_state_dict(state["masks"])
            self.masks.apply()
        self._refresh()

    # --- training --------------------------------------------------------------------------
    def train(self, x: torch.Tensor, y: torch.Tensor, samples: int, *, generator: torch.Generator | None = None,
              on_step: StepCallback | None = None) -> list[dict]:
        """Train on ``samples`` samples drawn from ``(x, y)`` in shuffled passes; return one row per step."""
        if self.prune_interval is None:
            self.prune_interval = max(1, round(self.config.prune_every * len(x)))
        self.model.train()
        rows: list[dict] = []
        order = torch.empty(0, dtype=torch.long)
        done = 0
        while done < samples:
            self._maybe_prune()
            if len(order) == 0:
                order = torch.randperm(len(x), generator=generator)
            take = min(self.batch_size, samples - done, len(order))
            batch, order = order[:take], order[take:]
            loss = self._step(x[batch], y[batch])
            if self.stop_on_divergence and has_diverged(loss, self.num_classes):
                raise Diverged(self.steps + 1, loss, self.config)
            memory = self.footprint.at(take)
            if memory > self.budget:
                raise RuntimeError(f"bug: step {self.steps} uses {memory} B, over the budget of {self.budget} B")
            done += take
            self.progress += take
            self.steps += 1
            row = {"step": self.steps, "progress": self.progress, "density": self.density,
                   "batch_size": take, "planned_batch": self.batch_size, "lr": self.lr, "loss": loss,
                   "state_bytes": self.footprint.state_bytes,
                   "activation_bytes": take * self.footprint.activation_bytes,
                   "memory_bytes": memory, "budget_bytes": self.budget}
            rows.append(row)
            if on_step is not None:
                on_step(row)
        return rows

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        if self.masks is not None and self.masks.hard:
            self.masks.mask_gradients()
        self.optimizer.step()
        if self.masks is not None and self.masks.hard:
            self.masks.apply()
        return loss.item()

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
        """Accuracy and mean loss of the current model on ``(x, y)``."""
        return evaluate(self.model, x, y, batch)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``; leaves the model in the mode it found."""
    training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        loss += float(nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
    model.train(training)
    return correct / len(x), loss / len(x)
