"""Pruned-mask-aware averaging: the arithmetic of ``masked-fedavg``, in plain numpy.

Plain FedAvg averages a pruned client's zeros into the global model and so shrinks every
weight that some clients pruned and others kept. Here an entry is averaged only over the
clients that kept it, and an entry that no client kept keeps its previous global value.
This module knows nothing of Flower so that it can be tested and reused on its own.
"""

from collections.abc import Mapping, Sequence

import numpy as np


def masked_average(
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    num_examples: Sequence[float],
    previous: np.ndarray,
) -> np.ndarray:
    """Average one tensor over clients, entry by entry, counting only the kept entries.

    For every entry ``j``, over the clients ``k`` with ``n_k`` examples and mask ``m_k``::

        w_j = Σ_k n_k m_kj w_kj / Σ_k n_k m_kj

    Where the denominator is 0 (no client with examples kept ``j``) the entry keeps
    ``previous[j]``. A ``None`` mask means the client kept every entry, so with all masks
    ``None`` this is ordinary example-weighted averaging (FedAvg). A client's values at
    entries it did not keep are never read, so they may hold anything (zeros, NaN).

    Parameters
    ----------
    weights : Sequence[np.ndarray]
        One array per client, all of the shape of ``previous``.
    masks : Sequence[np.ndarray | None]
        One boolean (or 0/1) array per client, shaped like its weights, or ``None``.
    num_examples : Sequence[float]
        Examples each client trained on; finite and non-negative.
    previous : np.ndarray
        The global tensor of the round before; gives the result's shape and dtype.

    Returns
    -------
    np.ndarray
        The new global tensor, of ``previous``'s shape and dtype.
    """
    _check_lengths(len(weights), len(masks), len(num_examples))
    counts = _check_num_examples(num_examples)
    previous = np.asarray(previous)
    numerator = np.zeros(previous.shape, dtype=np.float64)
    denominator = np.zeros(previous.shape, dtype=np.float64)
    for k, (w, m, n) in enumerate(zip(weights, masks, counts, strict=True)):
        w = np.asarray(w)
        if w.shape != previous.shape:
            raise ValueError(
                f"client {k}: weights have shape {w.shape}, expected {previous.shape} "
                "(the shape of the previous global tensor)"
            )
        if m is None:
            numerator += n * w
            denominator += n
            continue
        kept = _as_bool_mask(m, w.shape, k)
        numerator += n * np.where(kept, w, 0.0)
        denominator += n * kept
    averaged = np.divide(
        numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0
    )
    merged = np.where(denominator > 0, averaged, previous)
    if np.issubdtype(previous.dtype, np.integer):
        merged = np.rint(merged)
    return merged.astype(previous.dtype, copy=False)


def masked_average_arrays(
    client_arrays: Sequence[Mapping[str, np.ndarray]],
    client_masks: Sequence[Mapping[str, np.ndarray]],
    num_examples: Sequence[float],
    previous: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Average whole models with :func:`masked_average`, tensor by tensor.

    A tensor missing from a client's masks counts as fully kept by that client, so
    tensors that nobody masks (biases, normalisation parameters) get ordinary
    example-weighted averaging, exactly as FedAvg would give them.

    Parameters
    ----------
    client_arrays : Sequence[Mapping[str, np.ndarray]]
        One model per client, name to array; every client has the same names.
    client_masks : Sequence[Mapping[str, np.ndarray]]
        One mapping per client from the name of a masked tensor to its mask.
    num_examples : Sequence[float]
        Examples each client trained on.
    previous : Mapping[str, np.ndarray]
        The global model of the round before; must hold every name the clients send.

    Returns
    -------
    dict[str, np.ndarray]
        The new global model, with the clients' names in the first client's order.
    """
    _check_lengths(len(client_arrays), len(client_masks), len(num_examples))
    if not client_arrays:
        raise ValueError("cannot average zero clients")
    names = list(client_arrays[0])
    for k, arrays in enumerate(client_arrays[1:], start=1):
        if set(arrays) != set(names):
            raise ValueError(
                f"client {k} sends tensors {sorted(arrays)}, client 0 sends {sorted(names)}"
            )
    for k, masks in enumerate(client_masks):
        unknown = set(masks) - set(names)
        if unknown:
            raise ValueError(f"client {k} has masks for unknown tensors {sorted(unknown)}")
    missing = [name for name in names if name not in previous]
    if missing:
        raise ValueError(f"the previous global model lacks tensors {missing}")
    return {
        name: masked_average(
            [arrays[name] for arrays in client_arrays],
            [masks.get(name) for masks in client_masks],
            num_examples,
            previous[name],
        )
        for name in names
    }


def _check_lengths(n_weights: int, n_masks: int, n_examples: int) -> None:
    if not n_weights == n_masks == n_examples:
        raise ValueError(
            "need one entry per client in each argument, got "
            f"{n_weights} weights, {n_masks} masks and {n_examples} example counts"
        )


def _check_num_examples(num_examples: Sequence[float]) -> np.ndarray:
    counts = np.asarray(num_examples, dtype=np.float64)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(
            f"example counts must be finite and non-negative, got {list(num_examples)}"
        )
    return counts


def _as_bool_mask(mask: np.ndarray, shape: tuple[int, ...], client: int) -> np.ndarray:
    # torch.nn.utils.prune keeps float 0/1 masks, so accept those as well as bool.
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(
            f"client {client}: mask has shape {mask.shape}, its weights have shape {shape}"
        )
    if mask.dtype == np.bool_:
        return mask
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"client {client}: a mask must hold only 0/1 or True/False")
    return mask.astype(bool)
