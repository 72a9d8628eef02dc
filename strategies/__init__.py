"""Server-side aggregation: fogsim's mask-aware strategies and Flower's own, by name.

``STRATEGIES`` maps the names a scenario may use to strategy classes:

- ``masked-fedavg``: FedAvg with a mask-aware rule (``masked_average.RULES``) for pruned tensors;
- ``masked-fedavgm`` / ``masked-fedadam``: Flower's FedAvgM / FedAdam stepping on that rule's
  pseudo-gradient (``server_opt``);
- ``fedavg`` / ``fedavgm`` / ``fedadam``: Flower's strategies, which average pruned zeros in.

``Hierarchical`` (``hierarchical``) puts fog nodes between the clients and any of these: each
node aggregates its clients every round, the wrapped strategy the nodes every few rounds.

All are resumable (``resumable``). :func:`build` makes one from plain options. A client learns
which upload to send from the train config (``UPLOAD_ENCODING_KEY``): packed sparse for the
``masked-*`` strategies, dense with zeros at pruned entries for Flower's.
"""

from flwr.serverapp.strategy import FedAvg

from .encoding import (
    decode_sparse,
    dense_masked_state,
    encode_sparse,
    encoded_nbytes,
    pack_masked_state,
    packed_nbytes,
    unpack_masked_state,
)
from .hierarchical import Hierarchical, NodeRound
from .masked_average import RULES, consensus, delta, keepers, masked_average, masked_average_arrays
from .masked_fedavg import UPLOAD_ENCODING_KEY, MaskedFedAvg
from .resumable import SUMS_KEY, Resumable
from .server_opt import MaskedFedAdam, MaskedFedAvgM, ResumableFedAdam, ResumableFedAvg, ResumableFedAvgM

STRATEGIES: dict[str, type[FedAvg]] = {
    "masked-fedavg": MaskedFedAvg,
    "masked-fedavgm": MaskedFedAvgM,
    "masked-fedadam": MaskedFedAdam,
    "fedavg": ResumableFedAvg,
    "fedavgm": ResumableFedAvgM,
    "fedadam": ResumableFedAdam,
}

FEDAVGM_LR = 1.0  # Flower's default server_learning_rate of FedAvgM
FEDADAM_LR = 0.1  # Flower's default eta of FedAdam


def build(
    name: str,
    *,
    rule: str = "keepers",
    quorum: float = 0.5,
    server_lr: float | None = None,
    server_momentum: float = 0.9,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-3,
    **flower_options,
) -> FedAvg:
    """The strategy ``name`` of :data:`STRATEGIES`, given only the options it takes.

    ``rule`` and ``quorum`` go to the ``masked-*`` strategies; ``server_lr`` (default: Flower's,
    1.0 for FedAvgM, 0.1 for FedAdam) and ``server_momentum`` to the FedAvgM ones; ``server_lr``
    as ``eta``, ``beta_1``, ``beta_2`` and ``tau`` to the FedAdam ones; ``flower_options``
    (``fraction_train``, ``weighted_by_key``, ...) to every one.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    options = dict(flower_options)
    if name.startswith("masked-"):
        options.update(rule=rule, quorum=quorum)
    if name.endswith("fedavgm"):
        options.update(server_learning_rate=server_lr or FEDAVGM_LR, server_momentum=server_momentum)
    if name.endswith("fedadam"):
        options.update(eta=server_lr or FEDADAM_LR, beta_1=beta_1, beta_2=beta_2, tau=tau)
    return STRATEGIES[name](**options)


__all__ = [
    "RULES",
    "Hierarchical",
    "NodeRound",
    "STRATEGIES",
    "UPLOAD_ENCODING_KEY",
    "MaskedFedAdam",
    "MaskedFedAvg",
    "MaskedFedAvgM",
    "Resumable",
    "SUMS_KEY",
    "ResumableFedAdam",
    "ResumableFedAvg",
    "ResumableFedAvgM",
    "build",
    "consensus",
    "decode_sparse",
    "delta",
    "dense_masked_state",
    "encode_sparse",
    "encoded_nbytes",
    "keepers",
    "masked_average",
    "masked_average_arrays",
    "pack_masked_state",
    "packed_nbytes",
    "unpack_masked_state",
]
