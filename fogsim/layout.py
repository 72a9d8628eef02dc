"""Sparse layouts: a masked tensor as its kept values plus one index of the kept entries.

Two indexes, whichever is smaller for the tensor's size ``n`` and kept entries ``k``:

* ``coo``    — the kept entries' positions in the flattened tensor, int32: ``4 k`` bytes;
* ``bitmap`` — the mask itself, one bit per entry, packed as ``numpy.packbits`` lays it out:
  ``ceil(n / 8)`` bytes.

``coo`` wins below a density of 1/32 (and only for tensors int32 can index); on a tie the
bitmap is used. The memory accountant (how a device holds its model, ``fogsim.core.memory``) and
the wire encoding (what it sends and receives, ``strategies.encoding``) both lay out masked
tensors this way, so this module is the one place the rule lives. Plain numpy, no torch.
"""

from __future__ import annotations

import math

import numpy as np

COO = "coo"
BITMAP = "bitmap"
INDEX_DTYPE = np.int32
INDEX_BYTES = 4  # per kept entry of a coo index
_INDEX_MAX = np.iinfo(INDEX_DTYPE).max


def index_nbytes(numel: int, kept: int, index: str) -> int:
    """Bytes of the ``index`` (``COO`` or ``BITMAP``) of a tensor of ``numel`` entries, ``kept`` kept."""
    if index == COO:
        return kept * INDEX_BYTES
    if index == BITMAP:
        return math.ceil(numel / 8)
    raise ValueError(f"unknown sparse index {index!r} (known: {COO}, {BITMAP})")


def cheaper_index(numel: int, kept: int) -> str:
    """``COO`` where it is strictly smaller than the bitmap (and int32 can index the tensor), else ``BITMAP``."""
    if index_nbytes(numel, kept, COO) < index_nbytes(numel, kept, BITMAP) and numel - 1 <= _INDEX_MAX:
        return COO
    return BITMAP


def make_index(kept: np.ndarray, index: str) -> np.ndarray:
    """The ``index`` of the boolean mask ``kept``: int32 flat positions, or the packed bitmap (uint8)."""
    flat = np.asarray(kept, dtype=bool).ravel()
    if index == COO:
        return np.flatnonzero(flat).astype(INDEX_DTYPE)
    if index == BITMAP:
        return np.packbits(flat)
    raise ValueError(f"unknown sparse index {index!r} (known: {COO}, {BITMAP})")


def read_index(index: np.ndarray, kind: str, numel: int) -> np.ndarray:
    """The flat boolean mask of ``numel`` entries that ``index`` (of kind ``kind``) stands for.

    Raises ValueError when the index does not fit the tensor: a position out of range, or a
    bitmap of the wrong length.
    """
    index = np.asarray(index)
    if kind == COO:
        if index.size and (index.min() < 0 or index.max() >= numel):
            raise ValueError(f"coo indices fall outside a tensor of {numel} entries")
        kept = np.zeros(numel, dtype=bool)
        kept[index.astype(np.int64)] = True
        return kept
    if kind == BITMAP:
        if index.size != math.ceil(numel / 8):
            raise ValueError(f"a bitmap of {index.size} bytes does not fit a tensor of {numel} entries")
        return np.unpackbits(index.astype(np.uint8, copy=False), count=numel).astype(bool)
    raise ValueError(f"unknown sparse index {kind!r} (known: {COO}, {BITMAP})")


def as_bool_mask(mask, shape: tuple[int, ...], owner: str = "") -> np.ndarray:
    """``mask`` as a boolean array of ``shape``; 0/1 masks of any dtype are accepted (torch's pruning
    keeps float ones). ``owner`` (``"client 3"``) starts the ValueError raised for a mask that does
    not fit."""
    mask = np.asarray(mask)
    who = f"{owner}: " if owner else ""
    if mask.shape != tuple(shape):
        raise ValueError(f"{who}mask has shape {mask.shape}, its tensor has shape {tuple(shape)}")
    if mask.dtype == np.bool_:
        return mask
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{who}a mask must hold only 0/1 or True/False")
    return mask.astype(bool)
