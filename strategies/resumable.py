"""``Resumable``: a strategy's optimizer state as plain arrays, and rounds counted across a resume.

Every strategy fogsim builds carries it, so a run resumed from a checkpoint continues with the
server optimizer's momentum and moments where they were, and FedAdam's bias correction (which
depends on the round) sees the run's round, not the resumed loop's.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message

SUMS_KEY = "sums-in-workers"
"""Train-config key by which a strategy that reads only a round's sums (``Resumable.reads_sums``) lets the
simulation add the clients' uploads up where they train; a client (or worker) that does not know it
sends its own upload, as ever."""

STATE_SEPARATOR = "::"
"""Joins an optimizer attribute and a tensor key (or list position) in :meth:`Resumable.state_arrays`."""

_STATE = ("momentum_vector", "m_t", "v_t")  # FedAvgM's momentum, FedOpt's first and second moments


class Resumable:
    """Mixin: optimizer state to and from plain arrays, rounds counted from ``round_offset``, and
    the global model kept in the dtypes it was sent in.

    Flower's strategies number the rounds of their own loop from 1; a resumed run's loop starts
    at the round after its checkpoint, so ``round_offset`` (rounds already done) is added to the
    round that ``aggregate_train`` sees. Flower's FedAdam returns float64 arrays for a float32
    model under numpy 2 (its bias correction is a numpy float64 scalar), which would double what
    every device downloads from then on; the aggregate is cast back to the dtypes of the arrays
    ``configure_train`` sent.
    """

    round_offset = 0
    _sent_dtypes: dict[str, np.dtype] | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config, grid):
        self.set_previous(arrays)
        if self.reads_sums():
            config[SUMS_KEY] = True
        return super().configure_train(server_round, arrays, config, grid)

    def reads_sums(self) -> bool:
        """Whether this strategy aggregates a round from its sums (``strategies.sums``), so that the
        clients' uploads may be added up before they reach it: Flower's FedAvg family (the weighted
        mean), and ``MaskedFedAvg`` with a rule of the sums. A subclass with its own ``aggregate_train``
        (which may read every client's reply) gets every client's reply."""
        return type(self).aggregate_train is Resumable.aggregate_train

    def set_previous(self, arrays: ArrayRecord) -> None:
        """Take ``arrays`` as the global model the next ``aggregate_train`` starts from (what
        ``configure_train`` sent); ``strategies.Hierarchical`` calls it with a fog node's model."""
        self._sent_dtypes = {key: np.dtype(array.dtype) for key, array in arrays.items()}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        arrays, metrics = super().aggregate_train(server_round + self.round_offset, replies)
        return self.in_sent_dtypes(arrays), metrics

    def in_sent_dtypes(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """``arrays`` with every array in the dtype the same key had when ``configure_train`` sent it."""
        if arrays is None or not self._sent_dtypes:
            return arrays
        if all(np.dtype(a.dtype) == self._sent_dtypes.get(k, np.dtype(a.dtype)) for k, a in arrays.items()):
            return arrays
        return ArrayRecord({k: Array(np.asarray(a.numpy(), dtype=self._sent_dtypes.get(k)))
                            for k, a in arrays.items()})

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The optimizer state as ``{"m_t::fc.weight": array, "momentum_vector::0": array, ...}``."""
        out = {}
        for attribute in _STATE:
            value = getattr(self, attribute, None)
            if isinstance(value, dict):
                out.update({f"{attribute}{STATE_SEPARATOR}{k}": np.asarray(v) for k, v in value.items()})
            elif isinstance(value, list):
                out.update({f"{attribute}{STATE_SEPARATOR}{i}": np.asarray(v) for i, v in enumerate(value)})
        return out

    def check_state_arrays(self, arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise ValueError naming the first of ``arrays`` that is not :meth:`state_arrays` of this
        strategy for a model whose arrays have ``shapes`` (in model order): a key it does not keep,
        a shape that is not its array's, a value that is not a finite float."""
        names = list(shapes)
        for key, array in arrays.items():
            attribute, sep, name = key.partition(STATE_SEPARATOR)
            if not sep or attribute not in _STATE or not hasattr(self, attribute):
                raise ValueError(f"{state_key(key)} does not belong to {type(self).__name__}")
            if attribute == "momentum_vector":
                name = names[int(name)] if name.isdigit() and int(name) < len(names) else ""
            check_state_array(key, array, shapes.get(name))

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Invert :meth:`state_arrays`; raises ValueError on a key this strategy does not keep."""
        found: dict[str, dict[str, np.ndarray]] = {}
        for key, array in arrays.items():
            attribute, sep, name = key.partition(STATE_SEPARATOR)
            if not sep or attribute not in _STATE or not hasattr(self, attribute):
                raise ValueError(f"strategy state {key!r} does not belong to {type(self).__name__}")
            found.setdefault(attribute, {})[name] = np.asarray(array)
        for attribute, values in found.items():
            if attribute == "momentum_vector":
                setattr(self, attribute, [values[str(i)] for i in range(len(values))])
            else:
                setattr(self, attribute, values)


def state_key(key: str, limit: int = 60) -> str:
    """A state array's key as a message shows it: quoted, cut to ``limit`` characters."""
    text = repr(key)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def check_state_array(key: str, array: np.ndarray, shape: tuple[int, ...] | None, kinds: str = "fiu") -> None:
    """Raise ValueError unless ``array`` has ``shape`` (None: the key names no array of the model) and a
    dtype of one of ``kinds`` (numpy's kind letters), and is finite where it is a float."""
    if shape is None:
        raise ValueError(f"{state_key(key)} names no array of the scenario's model")
    if array.dtype.kind not in kinds or array.shape != tuple(shape):
        raise ValueError(f"{state_key(key)} is {array.dtype} {list(array.shape)}, not the model's {list(shape)}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{state_key(key)} holds values that are not finite")
