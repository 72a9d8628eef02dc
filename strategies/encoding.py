"""Sparse upload encoding: a client sends only the entries its mask kept.

A masked tensor travels as its kept values plus an index, whichever of two is cheaper for its
density (``fogsim.layout``, the same rule by which a device holds its model in memory):

- ``coo``: int32 flat positions, 4 bytes per kept entry: wins below a density of 1/32;
- ``bitmap``: the mask packed with ``np.packbits``, 1 bit per entry: wins above it.

Everything is plain numpy arrays so that a whole packed model fits in one Flower
``ArrayRecord`` (one ``Array`` per key) and this module needs no Flower import.

Which upload a client sends depends on the server strategy. ``masked-fedavg`` unpacks
the packed form (:func:`pack_masked_state`) and averages over kept entries only; Flower's
``fedavg`` averages whatever arrays arrive, so a pruned client sends it the dense model
with zeros at pruned entries (:func:`dense_masked_state`) - the dilution that
``masked-fedavg`` exists to avoid.
"""

from collections.abc import Mapping

import numpy as np

from fogsim import layout

COO = 0
"""Index encoding code: the kept entries' positions in the flattened tensor, as int32."""
BITMAP = 1
"""Index encoding code: the mask itself, one bit per entry, packed with ``np.packbits``."""
_CODES = {layout.COO: COO, layout.BITMAP: BITMAP}
_KINDS = {code: kind for kind, code in _CODES.items()}

SEPARATOR = "::"
"""Joins a tensor name and a field in packed keys (``fc1.weight::values``).

Torch names are dotted, so a dotted suffix could collide with a real tensor name (a
parameter called ``shape`` or ``index``); torch names never contain ``::`` in practice,
and :func:`pack_masked_state` refuses names that do.
"""
FIELDS = ("values", "index", "encoding", "shape")
"""The arrays each masked tensor is packed into, the same for every client.

The index encoding lives in a field rather than in the key, so clients that chose
different encodings still send the same keys, which Flower's reply validation requires.
"""


def encode_sparse(values: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Encode the kept entries of ``values`` with the cheaper index encoding.

    Parameters
    ----------
    values : np.ndarray
        The dense tensor; entries outside the mask are not sent.
    mask : np.ndarray
        Boolean (or 0/1) array of ``values``' shape; true where the entry is kept.

    Returns
    -------
    dict[str, np.ndarray]
        ``values``: the kept values in row-major order, 1-D, of ``values``' dtype;
        ``index``: int32 flat positions or a uint8 packed bitmap;
        ``encoding``: an int8 array of one element, :data:`COO` or :data:`BITMAP`.
    """
    values = np.asarray(values)
    kept = layout.as_bool_mask(mask, values.shape).ravel()
    kind = layout.cheaper_index(kept.size, int(np.count_nonzero(kept)))
    return {
        "values": values.ravel()[kept],
        "index": layout.make_index(kept, kind),
        "encoding": np.array([_CODES[kind]], dtype=np.int8),
    }


def decode_sparse(
    encoded: Mapping[str, np.ndarray], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`encode_sparse`.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        The dense tensor of ``shape`` with zeros at the entries not kept, and its
        boolean mask.
    """
    shape = tuple(int(d) for d in shape)
    size = int(np.prod(shape, dtype=np.int64))
    code = int(np.asarray(encoded["encoding"]).ravel()[0])
    if code not in _KINDS:
        raise ValueError(f"unknown index encoding {code} (known: {COO}, {BITMAP})")
    try:
        kept = layout.read_index(encoded["index"], _KINDS[code], size)
    except ValueError as error:
        raise ValueError(f"{error} (shape {shape})") from None
    kept_values = np.asarray(encoded["values"]).ravel()
    if kept_values.size != np.count_nonzero(kept):
        raise ValueError(
            f"{kept_values.size} values sent for {np.count_nonzero(kept)} kept entries"
        )
    dense = np.zeros(size, dtype=kept_values.dtype)
    dense[kept] = kept_values
    return dense.reshape(shape), kept.reshape(shape)


def encoded_nbytes(encoded: Mapping[str, np.ndarray]) -> int:
    """Payload bytes of an encoded tensor or a packed model: the sum of its arrays.

    Flower adds a fixed header of about 130 bytes per array on the wire (numpy's ``.npy``
    header); ``ArrayRecord.count_bytes()`` includes it.
    """
    return sum(int(np.asarray(a).nbytes) for a in encoded.values())


def packed_nbytes(state: Mapping[str, np.ndarray], kept: Mapping[str, int]) -> int:
    """``encoded_nbytes(pack_masked_state(state, masks))`` without packing, from ``kept``: per tensor
    with a mask, how many entries the mask keeps."""
    total = 0
    for name, tensor in state.items():
        tensor = np.asarray(tensor)
        if name not in kept:
            total += tensor.nbytes
            continue
        count, size = int(kept[name]), tensor.size
        index = layout.index_nbytes(size, count, layout.cheaper_index(size, count))
        total += count * tensor.itemsize + index + np.dtype(np.int8).itemsize + tensor.ndim * np.dtype(np.int64).itemsize
    return total


def pack_masked_state(
    state: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Pack a model for a ``masked-fedavg`` upload: masked tensors sparse, others dense.

    Each tensor named in ``masks`` becomes the keys ``<name>::values``, ``<name>::index``,
    ``<name>::encoding`` and ``<name>::shape``; every other tensor is sent dense under its
    own name. Give every prunable tensor a mask, even an all-true one: Flower refuses to
    aggregate a round whose clients send different keys.
    """
    unknown = set(masks) - set(state)
    if unknown:
        raise ValueError(f"masks given for tensors not in the state: {sorted(unknown)}")
    packed: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        if SEPARATOR in name:
            raise ValueError(f"tensor name {name!r} contains the reserved {SEPARATOR!r}")
        tensor = np.asarray(tensor)
        if name not in masks:
            packed[name] = tensor
            continue
        for field, array in encode_sparse(tensor, masks[name]).items():
            packed[f"{name}{SEPARATOR}{field}"] = array
        packed[f"{name}{SEPARATOR}shape"] = np.array(tensor.shape, dtype=np.int64)
    return packed


def unpack_masked_state(
    packed: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Invert :func:`pack_masked_state`.

    A dense upload (no packed keys) unpacks to itself with no masks, so the server can
    read either form.

    Returns
    -------
    tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
        The dense state (zeros at pruned entries) in packing order, and the masks of the
        tensors that were sent sparse.
    """
    parts: dict[str, dict[str, np.ndarray]] = {}
    order: list[str] = []
    for key, array in packed.items():
        name, sep, field = key.rpartition(SEPARATOR)
        if not sep:
            order.append(key)
            continue
        if field not in FIELDS:
            raise ValueError(f"unknown packed field {field!r} in key {key!r}")
        if name not in parts:
            parts[name] = {}
            order.append(name)
        parts[name][field] = array
    state: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name in order:
        if name not in parts:
            state[name] = np.asarray(packed[name])
            continue
        missing = [field for field in FIELDS if field not in parts[name]]
        if missing:
            raise ValueError(f"packed tensor {name!r} lacks fields {missing}")
        shape = tuple(int(d) for d in np.asarray(parts[name]["shape"]).ravel())
        state[name], masks[name] = decode_sparse(parts[name], shape)
    return state, masks


def dense_masked_state(
    state: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The dense upload for Flower's ``fedavg``: every tensor whole, zeros where pruned."""
    unknown = set(masks) - set(state)
    if unknown:
        raise ValueError(f"masks given for tensors not in the state: {sorted(unknown)}")
    dense: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        tensor = np.asarray(tensor)
        if name in masks:
            tensor = np.where(layout.as_bool_mask(masks[name], tensor.shape), tensor, 0).astype(tensor.dtype)
        dense[name] = tensor
    return dense
