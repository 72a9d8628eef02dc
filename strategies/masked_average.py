"""Pruned-mask-aware averaging: the rules of the ``masked-*`` strategies, in plain numpy.

Plain FedAvg averages a pruned client's zeros into the global model and so shrinks every
weight that some clients pruned and others kept. The rules here read a client's value only
where its mask kept the entry; one function per rule, all with the same signature
``rule(weights, masks, num_examples, previous) -> new tensor``, over the clients ``k`` of a
round with ``n_k`` examples, mask ``m_k`` (1 where kept) and values ``w_k``:

``keepers`` (:func:`keepers`)
    ``w_j = Σ_k n_k m_kj w_kj / Σ_k n_k m_kj``: each entry averaged over the clients that kept
    it (the brief's pruned-mask-aware averaging); an entry kept by few moves at full strength.
``delta`` (:func:`delta`)
    ``w_j = w_prev_j + Σ_k n_k m_kj (w_kj − w_prev_j) / Σ_k n_k``: the mean *update* over all
    clients, a client that pruned ``j`` adding a zero update, so an entry kept by few is
    damped towards its previous value instead of being shrunk to zero as FedAvg does.
``consensus`` (:func:`consensus`)
    keepers' value where clients holding at least ``quorum`` of the round's weight kept the
    entry, 0 elsewhere: a server-side mask by vote, so the global model carries only the
    entries a majority trains and devices prune the rest first (the sparsity consensus that
    FLASH, Babakniya et al. 2023, finds decisive on non-IID data).

In every rule an entry that no client kept keeps ``previous`` (consensus: 0), and a ``None``
mask means the client kept everything, so with no masks every rule is FedAvg. A client's
values at entries it did not keep are never read: they may hold anything, NaN included.
This module knows nothing of Flower so that it can be tested and reused on its own; to add
a rule, write a function of this signature and register it in :data:`RULES`.
"""

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fogsim.layout import as_bool_mask

from .sums import Sums

Rule = Callable[..., np.ndarray]


def keepers(
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
    return _keepers(*_sums(weights, masks, num_examples, previous))


def _keepers(previous: np.ndarray, kept_sum: np.ndarray, weight_sum, total: float) -> np.ndarray:
    averaged = np.divide(kept_sum, weight_sum, out=np.zeros_like(kept_sum), where=weight_sum > 0)
    return _as_previous(np.where(weight_sum > 0, averaged, previous), previous)


def delta(
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    num_examples: Sequence[float],
    previous: np.ndarray,
) -> np.ndarray:
    """Add the clients' mean update to the previous tensor, pruned entries counting as no update.

    For every entry ``j``::

        w_j = w_prev_j + Σ_k n_k m_kj (w_kj − w_prev_j) / Σ_k n_k

    The denominator is all the round's examples, so an entry that a share ``s_j`` of the
    examples kept moves ``s_j`` of the way from its previous value to the keepers' average:
    kept by all, this is keepers; kept by none, it stays. Arguments and result as
    :func:`keepers`; with no examples at all the tensor keeps ``previous``.
    """
    return _delta(*_sums(weights, masks, num_examples, previous))


def _delta(previous: np.ndarray, kept_sum: np.ndarray, weight_sum, total: float) -> np.ndarray:
    base = previous.astype(np.float64)
    moved = base + (kept_sum - weight_sum * base) / total if total > 0 else base
    return _as_previous(moved, previous)


def consensus(
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    num_examples: Sequence[float],
    previous: np.ndarray,
    quorum: float = 0.5,
) -> np.ndarray:
    """Keep an entry only where a quorum of the round kept it; average it over its keepers.

    For every entry ``j``, with ``s_j = Σ_k n_k m_kj / Σ_k n_k`` the share of the round's
    examples whose client kept it::

        w_j = Σ_k n_k m_kj w_kj / Σ_k n_k m_kj   if s_j >= quorum,   else 0

    A device that kept an entry the vote dropped receives 0 there and, pruning by magnitude,
    drops it first, so the masks of the fleet converge on the majority's. Arguments and
    result as :func:`keepers`, plus ``quorum`` in (0, 1]; with no examples at all the tensor
    keeps ``previous``.
    """
    return _consensus(*_sums(weights, masks, num_examples, previous), quorum=quorum)


def _consensus(previous: np.ndarray, kept_sum: np.ndarray, weight_sum, total: float,
               quorum: float = 0.5) -> np.ndarray:
    if not 0 < quorum <= 1:
        raise ValueError(f"quorum must lie in (0, 1], got {quorum}")
    if total <= 0:
        return _as_previous(previous.astype(np.float64), previous)
    averaged = np.divide(kept_sum, weight_sum, out=np.zeros_like(kept_sum), where=weight_sum > 0)
    # A relative tolerance so that "exactly half kept it" meets a quorum of 0.5 despite rounding.
    voted = weight_sum >= quorum * total * (1 - 1e-12)
    return _as_previous(np.where(voted & (weight_sum > 0), averaged, 0.0), previous)


RULES: dict[str, Rule] = {"keepers": keepers, "delta": delta, "consensus": consensus}
"""The rules by the name a scenario gives in ``strategy.rule``."""

_OF_SUMS: dict[Rule, Callable[..., np.ndarray]] = {keepers: _keepers, delta: _delta, consensus: _consensus}
"""The built-in rules, each as a function of ``(previous, Σ n m w, Σ n m, Σ n)``: all they read of a
round (``strategies.sums``), so that a simulation adds the uploads up where the devices train."""


def masked_average(
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    num_examples: Sequence[float],
    previous: np.ndarray,
    rule: str = "keepers",
    **options: float,
) -> np.ndarray:
    """Aggregate one tensor by the named rule of :data:`RULES` (``options``: e.g. ``quorum``)."""
    return _rule(rule)(weights, masks, num_examples, previous, **options)


def masked_average_arrays(
    client_arrays: Sequence[Mapping[str, np.ndarray]],
    client_masks: Sequence[Mapping[str, np.ndarray]],
    num_examples: Sequence[float],
    previous: Mapping[str, np.ndarray],
    rule: str = "keepers",
    **options: float,
) -> dict[str, np.ndarray]:
    """Aggregate whole models by the named rule, tensor by tensor.

    A tensor missing from a client's masks counts as fully kept by that client. Tensors
    that no client masks (biases, normalisation parameters) get ordinary example-weighted
    averaging (:func:`keepers` with no masks), exactly as FedAvg would give them, whatever
    the rule.

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
    chosen = _rule(rule)
    if not reads_sums(rule):  # a rule of the user's own reads every client's values
        averaged = {}
        for name in names:
            tensor_masks = [masks.get(name) for masks in client_masks]
            aggregate = chosen if any(m is not None for m in tensor_masks) else keepers
            averaged[name] = aggregate([arrays[name] for arrays in client_arrays], tensor_masks, num_examples,
                                       previous[name], **(options if aggregate is chosen else {}))
        return averaged
    counts = _check_num_examples(num_examples)
    total = None
    for k, (arrays, masks, n) in enumerate(zip(client_arrays, client_masks, counts, strict=True)):
        for name in names:
            if np.shape(arrays[name]) != np.shape(previous[name]):
                raise ValueError(f"client {k}: {name} has shape {np.shape(arrays[name])}, expected "
                                 f"{np.shape(previous[name])} (the shape of the previous global tensor)")
        try:
            client = Sums.of_client({name: arrays[name] for name in names}, masks, n)
        except ValueError as err:
            raise ValueError(f"client {k}: {err}") from err
        total = client if total is None else total + client
    return masked_average_of_sums(total, previous, rule, **options)


def masked_average_of_sums(
    sums: Sums, previous: Mapping[str, np.ndarray], rule: str = "keepers", **options: float
) -> dict[str, np.ndarray]:
    """Aggregate whole models by the named rule from a round's sums (``strategies.sums``).

    Tensors some client masked get the rule, every other one example-weighted averaging (FedAvg),
    as in :func:`masked_average_arrays`; entries no client kept keep ``previous``.
    """
    missing = [name for name in sums.weighted if name not in previous]
    if missing:
        raise ValueError(f"the previous global model lacks tensors {missing}")
    chosen = _OF_SUMS.get(_rule(rule))
    if chosen is None:
        raise ValueError(f"rule {rule!r} reads every client's values, not a round's sums")
    averaged = {}
    for name, kept_sum in sums.weighted.items():
        before = np.asarray(previous[name])
        if kept_sum.shape != before.shape:
            raise ValueError(f"{name}: the sums have shape {kept_sum.shape}, expected {before.shape} "
                             "(the shape of the previous global tensor)")
        masked = name in sums.kept
        aggregate = chosen if masked else _keepers
        averaged[name] = aggregate(before, kept_sum, sums.weight[name], sums.total, **(options if masked else {}))
    return averaged


def reads_sums(rule: str) -> bool:
    """Whether the rule registered as ``rule`` is a built-in one, which reads a round only through its sums."""
    return RULES.get(rule) in _OF_SUMS


def kept_by_nobody(
    client_masks: Sequence[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Per masked tensor, the entries that no client kept (a tensor a client did not mask: none)."""
    out = {}
    for name, shape in shapes.items():
        masks = [m.get(name) for m in client_masks]
        if not masks or any(m is None for m in masks):
            continue
        out[name] = ~np.logical_or.reduce([as_bool_mask(m, tuple(shape), f"client {k}") for k, m in enumerate(masks)])
    return out


def _rule(name: str) -> Rule:
    if name not in RULES:
        raise ValueError(f"unknown aggregation rule {name!r} (known: {', '.join(RULES)})")
    return RULES[name]


def _sums(
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    num_examples: Sequence[float],
    previous: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Check the arguments; return ``previous``, ``Σ_k n_k m_kj w_kj``, ``Σ_k n_k m_kj`` and ``Σ_k n_k``.

    Values at entries a client did not keep are replaced before any arithmetic, so NaN or
    infinity there never reaches the sums.
    """
    _check_lengths(len(weights), len(masks), len(num_examples))
    counts = _check_num_examples(num_examples)
    previous = np.asarray(previous)
    kept_sum = np.zeros(previous.shape, dtype=np.float64)
    weight_sum = np.zeros(previous.shape, dtype=np.float64)
    for k, (w, m, n) in enumerate(zip(weights, masks, counts, strict=True)):
        w = np.asarray(w)
        if w.shape != previous.shape:
            raise ValueError(
                f"client {k}: weights have shape {w.shape}, expected {previous.shape} "
                "(the shape of the previous global tensor)"
            )
        if m is None:
            kept_sum += n * w
            weight_sum += n
            continue
        kept = as_bool_mask(m, w.shape, f"client {k}")
        kept_sum += n * np.where(kept, w, 0.0)
        weight_sum += n * kept
    return previous, kept_sum, weight_sum, float(counts.sum())


def _as_previous(merged: np.ndarray, previous: np.ndarray) -> np.ndarray:
    if np.issubdtype(previous.dtype, np.integer):
        merged = np.rint(merged)
    return merged.astype(previous.dtype, copy=False)


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
