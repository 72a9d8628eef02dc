"""The settings of one device's training, declared and validated in one place.

``TrainingSettings`` and ``PruningSettings`` hold every setting with its default, bounds and
description; ``TrainConfig`` (both, plus the seed) configures ``fogsim train``, whose
options, defaults, choices and help come from its fields, and the local training of every
federated device; the scenario's ``training`` and ``pruning`` sections are the two settings
models again. The values a setting may take are its ``Literal`` (``typing.get_args``): to add
a method, schedule or criterion, extend its Literal and implement it.
"""

from __future__ import annotations

import math
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fogsim.errors import FogsimError, describe

# The values each choice may take; ``typing.get_args`` lists them wherever they are needed.
Method = Literal["dense", "gmp", "soft", "dynhp"]
LrRule = Literal["keep", "linear", "sqrt"]
Optimizer = Literal["sgd", "momentum", "adam"]
ScheduleShape = Literal["cubic", "linear", "oneshot"]   # implemented in core/schedule.py
CriterionName = Literal["magnitude"]                    # implemented in core/importance.py
Scope = Literal["global", "layer"]
Granularity = Literal["unstructured", "structured"]
OnDivergence = Literal["stop", "continue"]
DIVERGED_LOSS = 100.0  # x ln(classes): a loss above it (or not finite) has diverged (``has_diverged``)
METHODS = get_args(Method)

# Bounds that keep every number a user can give finite and every loop and allocation it drives sane.
MAX_COMPRESSION = 1000.0   # 1/1000 of the weights; the smallest model keeps a few, and ``auto`` stops there too
MAX_EPOCHS = 1_000_000     # passes over the data; also bounds the samples a schedule is laid out over
MAX_BATCH = 1_000_000      # samples per step; no device's memory holds more activations
MAX_LR = 10.0              # beyond this, SGD and Adam only diverge
MAX_SEED = 2**32 - 1       # scikit-learn's random_state (the digits split) takes no more; numpy and torch take it too


def has_diverged(loss: float, num_classes: int) -> bool:
    """Whether a cross-entropy ``loss`` has diverged: not finite, or above ``DIVERGED_LOSS`` times
    ln(classes) (chance is ln(classes)). Where training stops on it: ``training.on_divergence``."""
    return not loss <= DIVERGED_LOSS * math.log(max(num_classes, 2))  # NaN compares false


def lower_advice(settings: list[tuple[str, str]], on_divergence: str) -> str:
    """What to do about a divergence: lower one of ``settings`` (name and value as shown, likeliest
    first), or go on with ``on_divergence`` (the name of that setting where the user gives it)."""
    lower = " or ".join(f"{name} (now {value})" for name, value in settings)
    return f"lower {lower}, or set {on_divergence} to continue for the numbers anyway"


def _numbers_only(annotation) -> bool:
    """Whether a field of ``annotation`` takes numbers (int or float) and not booleans."""
    leaves, todo = set(), [annotation]
    while todo:
        kind = todo.pop()
        args = get_args(kind)
        if get_origin(kind) is Literal:
            leaves.update(type(a) for a in args)
        elif args:
            todo.extend(args)
        else:
            leaves.add(kind)
    return bool(leaves & {int, float}) and bool not in leaves


class NumbersAreNotBooleans(BaseModel):
    """Base of every settings model: a number field refuses a boolean (YAML reads ``yes`` and ``on``
    as ``true``, which pydantic would take as 1)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value, info: ValidationInfo):
        if isinstance(value, bool) and _numbers_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"a number is needed, not the boolean {str(value).lower()} "
                             "(YAML reads yes, no, on and off as booleans): write the number")
        return value


class _Settings(NumbersAreNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TrainingSettings(_Settings):
    """How long and how a device trains: epochs, optimizer, learning rate and its rule, batch sizes."""

    epochs: float = Field(10.0, gt=0, le=MAX_EPOCHS, description="passes over the device's training data")
    optimizer: Optimizer = Field("momentum", description="sgd, SGD with momentum 0.9, or Adam")
    lr: float = Field(0.05, gt=0, le=MAX_LR, description="learning rate at the base batch")
    lr_rule: LrRule = Field(
        "sqrt", description="learning rate as the batch b changes: keep lr, lr*b/b0 (linear) or lr*sqrt(b/b0)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty of the optimizer")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="base batch b0: the fixed batch of dense, gmp and "
                            "soft, and the batch the default budget is sized for")
    batch_min: int | None = Field(None, ge=1, le=MAX_BATCH, description="dynhp's smallest batch b_min "
                                  "(default: batch_size)")
    batch_max: int = Field(1024, ge=1, le=MAX_BATCH, description="dynhp's largest batch b_max")
    on_divergence: OnDivergence = Field(
        "stop", description="a loss that is not finite or above 100 x ln(classes) (chance is ln(classes)): stop "
        "with one line naming the round, device and setting to lower (exit 1), or continue with the numbers")


class PruningSettings(_Settings):
    """What a device prunes, how far, and when."""

    method: Method = Field(
        "dynhp", description="dense: no pruning, fixed batch; gmp: hard incremental pruning, fixed batch; "
        "soft: masks recomputed at every pruning step, weights may regrow; dynhp: hard incremental pruning "
        "with the batch grown from the freed memory")
    compression: float = Field(10.0, ge=1.0, le=MAX_COMPRESSION, description="target compression 1/d* over all "
                               "prunable tensors (ignored by dense)")
    schedule: ScheduleShape = Field("cubic", description="shape of the density schedule from the start density "
                                    "to the target")
    prune_start: float = Field(0.0, ge=0, le=1, description="start of the pruning window, as a fraction of training "
                               "progress (samples)")
    prune_end: float = Field(0.6, ge=0, le=1, description="end of the pruning window (target reached), fraction "
                             "of training progress")
    prune_every: float = Field(0.1, gt=0, le=MAX_EPOCHS, description="epochs of progress between pruning steps")
    criterion: CriterionName = Field("magnitude", description="importance of a weight: its magnitude |w|")
    scope: Scope = Field("global", description="rank weights across all layers or within each")
    granularity: Granularity = Field(
        "unstructured", description="single weights, or whole neurons/channels by L2 norm (shrinks activations)")


class TrainConfig(TrainingSettings, PruningSettings):
    """How one device trains: method, pruning target and schedule, batch sizing, optimizer.

    The scenario's ``training`` and ``pruning`` sections are the same two settings models
    (``fogsim.sim.scenario``), with the defaults a federated round needs.
    """

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of initialisation, data order and sampling "
                      "(0 to 2**32 - 1)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.prune_end < self.prune_start:
            raise ValueError(f"prune_end ({self.prune_end:g}) must not be before prune_start ({self.prune_start:g})")
        if self.batch_max < self.min_batch:
            raise ValueError(f"batch_max ({self.batch_max}) must be at least batch_min ({self.min_batch})")
        return self

    @property
    def min_batch(self) -> int:
        return self.batch_min if self.batch_min is not None else self.batch_size

    @property
    def target_density(self) -> float:
        return 1.0 if self.method == "dense" else 1.0 / self.compression

    @property
    def prunes(self) -> bool:
        return self.method != "dense"

    @property
    def hard(self) -> bool:
        return self.method != "soft"

    @property
    def dynamic_batch(self) -> bool:
        return self.method == "dynhp"

    @property
    def start_batch(self) -> int:
        """The batch the device must fit before it has pruned anything it does not have to."""
        return self.min_batch if self.dynamic_batch else self.batch_size


def make_train_config(**values) -> TrainConfig:
    """Validate ``values`` into a TrainConfig, or raise a one-line FogsimError."""
    try:
        return TrainConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        raise FogsimError(describe(error)) from None
