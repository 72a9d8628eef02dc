"""Importance criteria: which kept weights survive the next pruning step.

Each criterion is a small object with one job, ``propose(masks, density)``: return masks that keep
``round(density * total)`` entries of the prunable tensors (or, for whole units, the largest
configuration not denser than that). ``MaskSet.update`` then decides whether the proposal may
regrow anything (soft) or is intersected with what is kept (hard).
"""

from __future__ import annotations

import math
from typing import Protocol, get_args

import numpy as np
import torch

from fogsim.core.config import CriterionName, Granularity, Scope
from fogsim.core.masks import MaskSet
from fogsim.errors import FogsimError, shown

CRITERIA = get_args(CriterionName)
SCOPES = get_args(Scope)
GRANULARITIES = get_args(Granularity)


class Criterion(Protocol):
    def propose(self, masks: MaskSet, density: float) -> dict[str, torch.Tensor]: ...


def _candidates(masks: MaskSet, name: str) -> torch.Tensor:
    """Entries that may be kept: only the kept ones when hard, every one when soft."""
    current = masks.masks[name]
    return current if masks.hard else torch.ones_like(current)


def _top(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` highest scores among candidates (exactly k).

    Usually the candidates scoring at least the k-th highest score are exactly k: then they are
    the answer, whatever a sort would do with equal scores, and a partial partition finds that
    score (a few times faster than a top-k). Otherwise (equal scores at the threshold, NaN)
    ``torch.topk`` chooses, as it always did, so the masks are the same either way.
    """
    flat, kept = scores.detach().reshape(-1), candidates.reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64):  # numpy has no bfloat16
        return _top_by_sort(scores, candidates, k)
    every = kept.numpy()
    count = int(np.count_nonzero(every))
    k = min(k, count)
    if k <= 0:
        return torch.zeros(scores.shape, dtype=torch.bool)
    threshold = _kth_highest(flat.numpy(), None if count == flat.numel() else every, k)
    keep = (flat >= float(threshold)) & kept
    if int(keep.sum()) == k:
        return keep.reshape(scores.shape)
    return _top_by_sort(scores, candidates, k)


def _kth_highest(values: np.ndarray, kept: np.ndarray | None, k: int) -> float:
    """The ``k``-th highest of ``values`` where ``kept`` (all where None); ``1 <= k <=`` their count.

    Non-negative float32 scores (magnitudes, norms) order as their bit patterns do, so a histogram
    of the top 16 bits finds the bucket holding the k-th, and only that bucket is partitioned. Any
    other dtype is partitioned whole. A NaN orders above everything (as ``np.partition`` puts it).
    """
    if values.dtype != np.float32 or (values < 0).any():
        chosen = values if kept is None else values[kept]
        return float(np.partition(chosen, len(chosen) - k)[len(chosen) - k])
    bits = values.view(np.int32)
    high = bits >> 16
    if kept is not None:
        high = np.where(kept, high + 1, 0)  # bucket 0: not a candidate
    counts = np.bincount(high)
    from_top = np.cumsum(counts[::-1])
    j = int(np.searchsorted(from_top, k))  # the k-th highest is in the (j+1)-th bucket from the top
    bucket = len(counts) - 1 - j
    need = k - (int(from_top[j - 1]) if j else 0)
    inside = bits[high == bucket]
    kth = np.partition(inside, len(inside) - need)[len(inside) - need]
    return float(np.array(kth, dtype=np.int32).view(np.float32))


def _top_by_sort(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """``_top`` by ``torch.topk`` over all entries, non-candidates scored minus infinity."""
    flat = torch.where(candidates.flatten(), scores.flatten(), torch.tensor(-math.inf))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    k = min(k, int(candidates.sum()))
    if k > 0:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    return keep.reshape(scores.shape)


class Magnitude:
    """Keep the largest ``|w|``: over all prunable tensors at once (``global``) or per tensor (``layer``)."""

    def __init__(self, scope: str = "global"):
        if scope not in SCOPES:
            raise FogsimError(f"unknown pruning scope {shown(scope)}: use one of {', '.join(SCOPES)}")
        self.scope = scope

    def propose(self, masks: MaskSet, density: float) -> dict[str, torch.Tensor]:
        weights = {name: masks.params[name].detach().abs() for name in masks.masks}
        if self.scope == "layer":
            return {name: _top(w, _candidates(masks, name), round(density * w.numel()))
                    for name, w in weights.items()}
        names = list(weights)
        flat_scores = torch.cat([weights[n].flatten() for n in names])
        flat_cand = torch.cat([_candidates(masks, n).flatten() for n in names])
        keep = _top(flat_scores, flat_cand, round(density * masks.total()))
        out, start = {}, 0
        for n in names:
            size = weights[n].numel()
            out[n] = keep[start:start + size].reshape(weights[n].shape)
            start += size
        return out


class StructuredL2:
    """Remove whole neurons / channels with the smallest L2 norm, the same fraction in every layer.

    Removing a unit also removes its column in the next layer, so activations shrink too. Units
    are discrete, so the proposal is the largest configuration whose density does not exceed the
    one asked for. The output layer keeps all its units (they are the classes).
    """

    def propose(self, masks: MaskSet, density: float) -> dict[str, torch.Tensor]:
        lo, hi = 0.0, 1.0
        best = self._at_fraction(masks, 0.0)
        if _density(masks, best) > density:
            return best
        for _ in range(40):
            mid = (lo + hi) / 2
            proposal = self._at_fraction(masks, mid)
            if _density(masks, proposal) <= density:
                lo, best = mid, proposal
            else:
                hi = mid
        return best

    def _at_fraction(self, masks: MaskSet, fraction: float) -> dict[str, torch.Tensor]:
        topology = masks.topology
        rows: dict[str, torch.Tensor] = {}
        for layer in topology.structured_layers():
            current = _candidates(masks, layer.weight).reshape(layer.units, -1)
            alive = current.any(1)
            weight = masks.params[layer.weight].detach().reshape(layer.units, -1)
            norms = (weight * current).norm(dim=1)
            keep = max(1, math.floor(fraction * layer.units + 0.5))
            rows[layer.weight] = _top(norms, alive, keep)
        proposal = {}
        for layer in topology.layers:
            mask = _candidates(masks, layer.weight).clone()
            if layer.weight in rows:
                mask &= rows[layer.weight].reshape(-1, *[1] * (mask.dim() - 1))
            proposal[layer.weight] = mask
        for layer in topology.structured_layers():
            cols = rows[layer.weight].repeat_interleave(layer.consumer_span)
            consumer = proposal[layer.consumer]
            proposal[layer.consumer] = consumer & cols.reshape(1, -1, *[1] * (consumer.dim() - 2))
        return proposal


def _density(masks: MaskSet, proposal: dict[str, torch.Tensor]) -> float:
    return sum(int(m.sum()) for m in proposal.values()) / masks.total()


def make_criterion(criterion: str = "magnitude", scope: str = "global",
                   granularity: str = "unstructured") -> Criterion:
    """Build the criterion a configuration names."""
    if criterion not in CRITERIA:
        raise FogsimError(f"unknown importance criterion {shown(criterion)}: use one of {', '.join(CRITERIA)}")
    if granularity not in GRANULARITIES:
        raise FogsimError(f"unknown granularity {shown(granularity)}: use one of {', '.join(GRANULARITIES)}")
    return StructuredL2() if granularity == "structured" else Magnitude(scope)
