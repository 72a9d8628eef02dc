import torch

from fogsim.core.masks import MaskSet
from fogsim.core.topology import Topology


def _random_masks(masks, density, seed):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.shape, generator=g) < density for n, m in masks.masks.items()}


def test_hard_masks_only_shrink(mlp):
    model, shape = mlp
    masks = MaskSet(model, Topology(model, shape), hard=True)
    masks.update(_random_masks(masks, 0.5, 0))
    before = masks.state_dict()
    masks.update(_random_masks(masks, 0.9, 1))  # proposes to bring many entries back
    for name, mask in masks.masks.items():
        assert not (mask & ~before[name]).any(), "a pruned entry came back"
    assert masks.density() < 0.5 * 0.9 + 0.01


def test_soft_masks_may_regrow(mlp):
    model, shape = mlp
    masks = MaskSet(model, Topology(model, shape), hard=False)
    masks.update(_random_masks(masks, 0.1, 0))
    masks.update(_random_masks(masks, 0.9, 1))
    assert 0.85 < masks.density() < 0.95


def test_apply_gradients_and_optimizer_state_are_masked(mlp):
    model, shape = mlp
    masks = MaskSet(model, Topology(model, shape))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    masks.update(_random_masks(masks, 0.3, 0))
    masks.apply()
    masks.mask_optimizer_state(optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        masks.mask_gradients()
        for name, mask in masks.masks.items():
            assert (masks.params[name].grad[~mask] == 0).all()
        optimizer.step()
    for name, mask in masks.masks.items():
        param = masks.params[name]
        assert (param[~mask] == 0).all(), "a pruned weight moved"
        for value in optimizer.state[param].values():
            if value.shape == mask.shape:
                assert (value[~mask] == 0).all(), "optimizer state kept for a pruned weight"


def test_state_dict_round_trip(mlp):
    model, shape = mlp
    topology = Topology(model, shape)
    masks = MaskSet(model, topology)
    masks.update(_random_masks(masks, 0.2, 3))
    other = MaskSet(model, topology)
    other.load_state_dict(masks.state_dict())
    assert other.kept() == masks.kept()
    assert all(torch.equal(other.masks[n], masks.masks[n]) for n in masks.masks)
