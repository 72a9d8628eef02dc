"""Server optimizers on the masked pseudo-gradient: ``masked-fedavgm`` and ``masked-fedadam``.

Flower's FedAvgM and FedAdam step from the previous global model along the pseudo-gradient
``aggregate − previous``, where ``aggregate`` is what FedAvg's ``aggregate_train`` returns.
The mask-aware variants put :class:`MaskedFedAvg` under them in the method resolution order,
so Flower's own optimizer code runs unchanged on the aggregate of a mask-aware rule::

    MaskedFedAdam -> FedAdam -> FedOpt -> MaskedFedAvg -> FedAvg

One thing is added: an entry that no client of the round kept takes the rule's value (for
``keepers`` and ``delta`` its previous value), because nobody trained it and the optimizer's
momentum alone should not move an entry that no device holds. With every mask full, the
variants are exactly Flower's strategies.

All strategies fogsim builds also carry :class:`~strategies.resumable.Resumable`: their
optimizer state can be written to a checkpoint and read back, and a resumed run counts rounds
from where it stopped (FedAdam's bias correction depends on the round).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM

from .masked_fedavg import _SUMS_READERS, MaskedFedAvg
from .resumable import Resumable

class _MaskedServerOpt:
    """Mixin for Flower optimizer strategies stacked on :class:`MaskedFedAvg`.

    It comes first in the method resolution order, so it also adds ``round_offset``
    (:class:`Resumable`, which :class:`MaskedFedAvg` carries, comes after the optimizer).
    """

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round + self.round_offset, replies)
        arrays = self.in_sent_dtypes(arrays)  # Flower's FedAdam steps in float64 (see Resumable)
        uncovered = {name: ~kept for name, kept in self.round_union().items()} if arrays is not None else {}
        if not uncovered:
            return arrays, metrics
        stepped = {k: a.numpy() for k, a in arrays.items()}
        for name, nobody in uncovered.items():
            stepped[name] = np.where(nobody, self._rule_arrays[name], stepped[name]).astype(stepped[name].dtype)
        record = ArrayRecord({k: Array(np.asarray(v)) for k, v in stepped.items()})
        if isinstance(self, FedAvgM) and self.server_opt:
            self.current_arrays = record  # FedAvgM steps from its own copy of the global model: keep it this one
        return record, metrics


_SUMS_READERS.add(_MaskedServerOpt.aggregate_train)  # it reads the round through MaskedFedAvg's


class MaskedFedAvgM(_MaskedServerOpt, FedAvgM, MaskedFedAvg):
    """Flower's FedAvgM (server momentum) on the pseudo-gradient of a mask-aware rule.

    Takes FedAvgM's options (``server_learning_rate``, ``server_momentum``) and
    :class:`MaskedFedAvg`'s (``rule``, ``quorum``).
    """

    def __init__(self, *, rule: str = "keepers", quorum: float = 0.5, **fedavgm_options) -> None:
        super().__init__(**fedavgm_options)
        self.set_rule(rule, quorum)


class MaskedFedAdam(_MaskedServerOpt, FedAdam, MaskedFedAvg):
    """Flower's FedAdam on the pseudo-gradient of a mask-aware rule.

    Takes FedAdam's options (``eta``, ``beta_1``, ``beta_2``, ``tau``) and
    :class:`MaskedFedAvg`'s (``rule``, ``quorum``).
    """

    def __init__(self, *, rule: str = "keepers", quorum: float = 0.5, **fedadam_options) -> None:
        super().__init__(**fedadam_options)
        self.set_rule(rule, quorum)


class ResumableFedAvg(Resumable, FedAvg):
    """Flower's FedAvg, resumable."""


class ResumableFedAvgM(Resumable, FedAvgM):
    """Flower's FedAvgM, resumable."""


class ResumableFedAdam(Resumable, FedAdam):
    """Flower's FedAdam, resumable."""
