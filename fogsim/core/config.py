"""The settings of one device's training, validated in one place.

The same object configures ``fogsim train`` and the local training of every federated device,
so its field descriptions are the documentation of both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fogsim.errors import FogsimError, describe

METHODS = ("dense", "gmp", "soft", "dynhp")
LR_RULES = ("keep", "linear", "sqrt")

# Bounds that keep every number a user can give finite and every loop and allocation it drives sane.
MAX_COMPRESSION = 1000.0   # 1/1000 of the weights; the smallest model keeps a few, and ``auto`` stops there too
MAX_EPOCHS = 1_000_000     # passes over the data; also bounds the samples a schedule is laid out over
MAX_BATCH = 1_000_000      # samples per step; no device's memory holds more activations
MAX_LR = 10.0              # beyond this, SGD and Adam only diverge
MAX_SEED = 2**32 - 1       # scikit-learn's random_state (the digits split) takes no more; numpy and torch take it too


class TrainConfig(BaseModel):
    """How one device trains: method, pruning target and schedule, batch sizing, optimizer."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    method: Literal["dense", "gmp", "soft", "dynhp"] = Field(
        "dynhp", description="dense: no pruning, fixed batch; gmp: hard incremental pruning, fixed batch; "
        "soft: masks recomputed at every pruning step, weights may regrow; dynhp: hard incremental pruning "
        "with the batch grown from the freed memory")
    compression: float = Field(10.0, ge=1.0, le=MAX_COMPRESSION, description="target compression 1/d* over all "
                               "prunable tensors (ignored by dense)")
    epochs: float = Field(10.0, gt=0, le=MAX_EPOCHS, description="passes over the device's training data")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="base batch b0: the fixed batch of dense, gmp and "
                            "soft, and the batch the default budget is sized for")
    batch_min: int | None = Field(None, ge=1, le=MAX_BATCH, description="dynhp's smallest batch b_min "
                                  "(default: batch_size)")
    batch_max: int = Field(1024, ge=1, le=MAX_BATCH, description="dynhp's largest batch b_max")
    lr: float = Field(0.05, gt=0, le=MAX_LR, description="learning rate at the base batch")
    lr_rule: Literal["keep", "linear", "sqrt"] = Field(
        "sqrt", description="learning rate as the batch b changes: keep lr, lr*b/b0 (linear) or lr*sqrt(b/b0)")
    optimizer: Literal["sgd", "momentum", "adam"] = Field("momentum", description="sgd, SGD with momentum 0.9, or Adam")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty of the optimizer")
    schedule: Literal["cubic", "linear", "oneshot"] = Field("cubic", description="shape of the density "
                                                             "schedule from the start density to the target")
    prune_start: float = Field(0.0, ge=0, le=1, description="start of the pruning window, as a fraction of training "
                               "progress (samples)")
    prune_end: float = Field(0.6, ge=0, le=1, description="end of the pruning window (target reached), fraction "
                             "of training progress")
    prune_every: float = Field(0.1, gt=0, le=MAX_EPOCHS, description="epochs of progress between pruning steps")
    criterion: Literal["magnitude"] = Field("magnitude", description="importance of a weight: its magnitude |w|")
    scope: Literal["global", "layer"] = Field("global", description="rank weights across all layers or within each")
    granularity: Literal["unstructured", "structured"] = Field(
        "unstructured", description="single weights, or whole neurons/channels by L2 norm (shrinks activations)")
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
