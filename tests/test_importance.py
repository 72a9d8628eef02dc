import numpy as np
import pytest
import torch

from fogsim.core.importance import Magnitude, StructuredL2, make_criterion
from fogsim.core.masks import MaskSet
from fogsim.core.topology import Topology, compact
from fogsim.errors import FogsimError


@pytest.mark.parametrize("density", [0.5, 0.1, 0.013])
def test_global_magnitude_keeps_exactly_the_largest(mlp, density):
    model, shape = mlp
    masks = MaskSet(model, Topology(model, shape))
    masks.update(Magnitude("global").propose(masks, density))
    assert masks.kept() == round(density * masks.total())
    kept = torch.cat([masks.params[n].detach().abs()[m] for n, m in masks.masks.items()])
    dropped = torch.cat([masks.params[n].detach().abs()[~m] for n, m in masks.masks.items()])
    assert kept.min() >= dropped.max()


def test_layer_magnitude_prunes_every_layer_to_the_density(mlp):
    model, shape = mlp
    masks = MaskSet(model, Topology(model, shape))
    masks.update(Magnitude("layer").propose(masks, 0.25))
    for name, mask in masks.masks.items():
        assert int(mask.sum()) == round(0.25 * mask.numel())


def test_hard_proposal_never_picks_pruned_weights(mlp):
    model, shape = mlp
    masks = MaskSet(model, Topology(model, shape))
    masks.update(Magnitude().propose(masks, 0.5))
    masks.apply()
    with torch.no_grad():  # make pruned weights look important: a hard criterion must ignore them
        for name, mask in masks.masks.items():
            masks.params[name][~mask] = 100.0
    masks.update(Magnitude().propose(masks, 0.25))
    assert masks.kept() == round(0.25 * masks.total())


@pytest.mark.parametrize("fixture", ["mlp", "cnn"])
def test_structured_removes_whole_units_and_their_inputs(fixture, request):
    model, shape = request.getfixturevalue(fixture)
    topology = Topology(model, shape)
    masks = MaskSet(model, topology)
    masks.update(StructuredL2().propose(masks, 0.3))
    assert 0.2 < masks.density() <= 0.3
    for layer in topology.structured_layers():
        rows = masks.masks[layer.weight].reshape(layer.units, -1)
        alive = rows.any(1)
        assert (rows[alive] == rows[alive][0]).all(), "a unit is only partly removed"
        consumer = masks.masks[layer.consumer]
        cols = consumer.reshape(consumer.shape[0], consumer.shape[1], -1).any(0).any(-1)
        assert torch.equal(cols, alive.repeat_interleave(layer.consumer_span))
    output = topology.layers[-1]
    assert masks.masks[output.weight].reshape(output.units, -1).any(1).all(), "an output class was removed"
    masks.apply()
    small = compact(model, topology, masks.masks)
    x = torch.randn(4, *shape)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert sum(p.numel() for n, p in small.named_parameters() if n.endswith("weight")) == masks.kept()


def test_make_criterion_rejects_unknown_names():
    with pytest.raises(FogsimError, match="unknown importance criterion 'taylor'"):
        make_criterion("taylor")
    with pytest.raises(FogsimError, match="unknown pruning scope"):
        make_criterion(scope="model")
    with pytest.raises(FogsimError, match="unknown granularity"):
        make_criterion(granularity="blocks")


def test_the_top_k_by_threshold_is_the_top_k_by_sort_ties_and_nan_included():
    """The partition's answer where it is unambiguous, torch.topk's otherwise: the same masks as ever."""
    from fogsim.core.importance import _top, _top_by_sort

    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 400))
        scores = torch.from_numpy(np.abs(rng.normal(size=n)).astype(np.float32))
        if trial % 3 == 1:
            scores = torch.from_numpy(rng.integers(0, 4, size=n).astype(np.float32))  # many equal scores
        if trial % 5 == 2:
            scores[torch.from_numpy(rng.random(n) < 0.1)] = float("nan")
        candidates = torch.from_numpy(rng.random(n) < rng.uniform(0.1, 1.0)) if trial % 2 else torch.ones(n, dtype=torch.bool)
        k = int(rng.integers(0, n + 2))
        got, expected = _top(scores, candidates, k), _top_by_sort(scores, candidates, k)
        assert torch.equal(got, expected), f"trial {trial}"
        assert int(got.sum()) == min(k, int(candidates.sum())) and not (got & ~candidates).any()
    for trial in range(4):  # many scores to a histogram bucket
        scores = torch.from_numpy(np.abs(rng.normal(size=60_000)).astype(np.float32))
        candidates = torch.from_numpy(rng.random(60_000) < (1.0 if trial % 2 else 0.4))
        k = int(rng.integers(1, int(candidates.sum())))
        assert torch.equal(_top(scores, candidates, k), _top_by_sort(scores, candidates, k))
