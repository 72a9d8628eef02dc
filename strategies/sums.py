"""A round's uploads as running sums, added up where the clients train, in an order that never changes.

Every rule fogsim aggregates with (Flower's FedAvg, and the mask-aware rules of
:mod:`strategies.masked_average`) reads a round's uploads only through these sums over its clients
``k``, with weight ``n_k`` (examples, or 1), mask ``m_k`` (1 where kept) and values ``w_k``:

``weighted``  ``Σ_k n_k m_kj w_kj`` per entry (float64);
``weight``    ``Σ_k n_k m_kj`` per entry of a tensor some client masks, ``Σ_k n_k`` (one number) otherwise;
``kept``      ``OR_k m_kj`` per entry of a tensor every client masks (``None``: some client sent it dense);
``total``     ``Σ_k n_k``, and ``clients``, how many were added.

So a simulation worker that trains many clients adds their contributions and sends the sums of a
round, never each client's upload, and the server adds the workers' sums (:class:`Sums`).

Float addition is not associative: to give the same digits however the clients are spread over
workers, every sum is taken in one fixed order. The round's clients, in an order fixed before the
round, are the leaves of a complete binary tree, and the sum over an aligned block of ``2**j``
leaves is always (sum of its left half) + (sum of its right half). A worker that simulates a
contiguous run of leaves adds them on a :class:`SumStack`, which keeps the sums of the largest
aligned blocks of its run (at most about ``2 log2(run)`` of them), and the server completes the
tree from the blocks of all workers (:func:`tree_total`): the same additions, in the same order,
whichever worker computed which block. A leaf that has no contribution (a client that dropped
out) is skipped: a block of one present half is that half.

Plain numpy; :func:`to_arrays` / :func:`from_arrays` lay sums out as flat arrays for a Flower
``ArrayRecord``, and :func:`is_sums` tells such a record from an upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fogsim.layout import as_bool_mask

SEPARATOR = "::"
_FIELDS = ("weighted", "weight", "kept")
_TOTAL, _CLIENTS = "::total", "::clients"  # keys no tensor name can take (names never contain "::")


@dataclass
class Sums:
    """The sums of some clients' uploads (see the module); add two with ``+``."""

    weighted: dict[str, np.ndarray]
    weight: dict[str, np.ndarray | float]
    kept: dict[str, np.ndarray | None] = field(default_factory=dict)
    total: float = 0.0
    clients: int = 0

    @classmethod
    def of_client(cls, state: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], n: float) -> "Sums":
        """One client's contribution: ``state`` (name to array), the ``masks`` of the tensors it
        sent sparse (others count as fully kept) and its weight ``n``. Values at entries a mask did
        not keep are never read, so they may hold anything (NaN included)."""
        n = np.float64(n)  # float64 products of float32 values: exact
        if not np.isfinite(n) or n < 0:
            raise ValueError(f"a client's weight must be finite and non-negative, got {float(n)}")
        unknown = set(masks) - set(state)
        if unknown:
            raise ValueError(f"masks for tensors the client does not send: {sorted(unknown)}")
        weighted, weight, kept = {}, {}, {}
        for name, values in state.items():
            values = np.asarray(values)
            if name in masks:
                mask = as_bool_mask(masks[name], values.shape, "client")
                # Multiplying by the mask is several times faster than np.where, and the same where
                # every value is finite (a zero may keep its sign: no value changes).
                finite = values.dtype.kind == "f" and np.isfinite(values).all()
                weighted[name] = n * (values * mask) if finite else n * np.where(mask, values, 0.0)
                weight[name] = n * mask
                kept[name] = mask.copy()
            else:
                weighted[name] = n * values
                weight[name] = float(n)
        return cls(weighted, weight, kept, float(n), 1)

    def __add__(self, other: "Sums") -> "Sums":
        out = Sums({name: values.copy() for name, values in self.weighted.items()},
                   {name: value.copy() if isinstance(value, np.ndarray) else value for name, value in self.weight.items()},
                   {name: None if mask is None else mask.copy() for name, mask in self.kept.items()},
                   self.total, self.clients)
        out += other
        return out

    def __iadd__(self, other: "Sums") -> "Sums":
        """Add ``other`` in place (the same digits as ``+``, without new arrays where the shapes allow)."""
        if set(self.weighted) != set(other.weighted):
            raise ValueError(f"cannot add the sums of clients that send different tensors: "
                             f"{sorted(self.weighted)} and {sorted(other.weighted)}")
        for name, values in self.weighted.items():
            if values.shape != other.weighted[name].shape:
                raise ValueError(f"tensor {name!r}: shapes {values.shape} and {other.weighted[name].shape} differ")
        for name in self.kept.keys() | other.kept.keys():
            mine, theirs = self.kept.get(name), other.kept.get(name)
            if mine is not None and theirs is not None:
                mine |= theirs
            else:
                self.kept[name] = None  # a client that sent it dense kept all of it
        for name, values in self.weighted.items():
            values += other.weighted[name]
            mine, theirs = self.weight[name], other.weight[name]
            if isinstance(mine, np.ndarray):
                mine += theirs
            else:
                self.weight[name] = mine + theirs
        self.total += other.total
        self.clients += other.clients
        return self

    def masked(self) -> set[str]:
        """The tensors some client masked."""
        return set(self.kept)

    def union(self) -> dict[str, np.ndarray]:
        """Per tensor every client masked, the entries some client kept."""
        return {name: mask for name, mask in self.kept.items() if mask is not None}

    def mean(self) -> dict[str, np.ndarray]:
        """``Σ n_k w_k / Σ n_k`` per tensor (float64): FedAvg's average of dense uploads."""
        if self.total <= 0:
            raise ValueError("cannot average clients whose weights sum to zero")
        return {name: values / self.total for name, values in self.weighted.items()}


def combine(a: Sums | None, b: Sums | None) -> Sums | None:
    """``a + b``, where a missing side (``None``: no client there) adds nothing."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class SumStack:
    """Adds leaves of the tree (see the module) one after another, left to right, and keeps the
    sums of the largest aligned blocks of those leaves (``blocks``: ``(start, size, sums)``)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int, Sums | None]] = []

    def push(self, leaf: int, sums: Sums | None) -> None:
        """Add leaf ``leaf`` (the one after the last pushed), ``None`` if it has nothing to add. The stack
        adds into the sums it is given: pass sums nothing else holds."""
        if self.blocks and sum(self.blocks[-1][:2]) != leaf:
            raise ValueError(f"leaf {leaf} does not follow leaf {sum(self.blocks[-1][:2]) - 1}")
        self.blocks.append((leaf, 1, sums))
        while len(self.blocks) >= 2:
            (start, size, left), (_, other, right) = self.blocks[-2], self.blocks[-1]
            if size != other or start % (2 * size):
                break
            if left is not None and right is not None:
                left += right  # the stack's own sums: added in place
            self.blocks[-2:] = [(start, 2 * size, right if left is None else left)]


def tree_total(blocks: Mapping[tuple[int, int], Sums | None], leaves: int) -> Sums | None:
    """The sum of ``leaves`` leaves from the ``(start, size)`` blocks workers sent (``SumStack``), completed
    up the tree; ``None`` when no leaf added anything. A leaf outside every block adds nothing."""
    for start, size in blocks:
        if size < 1 or size & (size - 1) or start % size or start + size > max(leaves, 1) * 2:
            raise ValueError(f"({start}, {size}) is not an aligned block of a tree of {leaves} leaves")
    width = 1
    while width < leaves:
        width *= 2

    def walk(start: int, size: int) -> Sums | None:
        if (start, size) in blocks:
            return blocks[start, size]
        if size == 1 or start >= leaves:
            return None
        half = size // 2
        return combine(walk(start, half), walk(start + half, half))

    return walk(0, width) if leaves else None


def to_arrays(sums: Sums) -> dict[str, np.ndarray]:
    """``sums`` as flat arrays (``name::weighted``, ``name::weight``, ``name::kept`` as packed bits,
    empty for ``None``; ``::total``, ``::clients``), for an ``ArrayRecord``."""
    out: dict[str, np.ndarray] = {}
    for name, values in sums.weighted.items():
        out[f"{name}{SEPARATOR}weighted"] = values
        out[f"{name}{SEPARATOR}weight"] = np.asarray(sums.weight[name], dtype=np.float64)
        if name in sums.kept:
            mask = sums.kept[name]
            out[f"{name}{SEPARATOR}kept"] = np.packbits(mask.ravel()) if mask is not None else np.zeros(0, np.uint8)
    out[_TOTAL] = np.array(sums.total, dtype=np.float64)
    out[_CLIENTS] = np.array(sums.clients, dtype=np.int64)
    return out


def is_sums(arrays: Mapping[str, object]) -> bool:
    """Whether ``arrays`` (keys to arrays) are sums laid out by :func:`to_arrays`, not an upload."""
    return _TOTAL in arrays


def from_arrays(arrays: Mapping[str, np.ndarray]) -> Sums:
    """Invert :func:`to_arrays`."""
    weighted, weight, kept = {}, {}, {}
    for key, array in arrays.items():
        if key in (_TOTAL, _CLIENTS):
            continue
        name, sep, part = key.rpartition(SEPARATOR)
        if not sep or part not in _FIELDS:
            raise ValueError(f"{key!r} is not a key of a round's sums")
        {"weighted": weighted, "weight": weight, "kept": kept}[part][name] = np.asarray(array)
    for name, values in weighted.items():
        if name not in weight:
            raise ValueError(f"the sums of tensor {name!r} lack its weight")
        weight[name] = weight[name] if weight[name].ndim else float(weight[name])
        if name in kept:
            bits = kept[name]
            kept[name] = None if bits.size == 0 else \
                np.unpackbits(bits, count=values.size).astype(bool).reshape(values.shape)
    return Sums(weighted, weight, kept, float(np.asarray(arrays[_TOTAL])), int(np.asarray(arrays[_CLIENTS])))
