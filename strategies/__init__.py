"""Server-side aggregation: Flower's FedAvg and fogsim's pruned-mask-aware ``masked-fedavg``.

``STRATEGIES`` maps the names a scenario may use to strategy classes. A client learns
which upload to send from the train config (``UPLOAD_ENCODING_KEY``): packed sparse for
``masked-fedavg``, dense with zeros at pruned entries for ``fedavg``.
"""

from flwr.serverapp.strategy import FedAvg

from .encoding import (
    decode_sparse,
    dense_masked_state,
    encode_sparse,
    encoded_nbytes,
    pack_masked_state,
    unpack_masked_state,
)
from .masked_average import masked_average, masked_average_arrays
from .masked_fedavg import UPLOAD_ENCODING_KEY, MaskedFedAvg

STRATEGIES: dict[str, type[FedAvg]] = {
    "masked-fedavg": MaskedFedAvg,
    "fedavg": FedAvg,
}

__all__ = [
    "STRATEGIES",
    "UPLOAD_ENCODING_KEY",
    "MaskedFedAvg",
    "decode_sparse",
    "dense_masked_state",
    "encode_sparse",
    "encoded_nbytes",
    "masked_average",
    "masked_average_arrays",
    "pack_masked_state",
    "unpack_masked_state",
]
