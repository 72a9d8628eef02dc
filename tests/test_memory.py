"""The accountant against the bytes really held: the layout's tensors and autograd's saved tensors."""

import pytest
import torch
from torch import nn

from fogsim.core.importance import make_criterion
from fogsim.core.masks import MaskSet
from fogsim.core.memory import MemoryAccountant, nbytes, pack, pack_bits, unpack_bits
from fogsim.core.topology import Topology, compact
from fogsim.core.trainer import make_optimizer
from fogsim.core.config import TrainConfig

from conftest import batch


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for backward, parameters and buffers excluded."""
    owned = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    held: dict[int, int] = {}

    def keep(t):
        if t.data_ptr() not in owned:
            held[t.data_ptr()] = max(held.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        nn.functional.cross_entropy(model(x), y)
    return sum(held.values())


def trained_step(model, shape, optimizer_name, masks=None):
    optimizer = make_optimizer(model.parameters(), TrainConfig(optimizer=optimizer_name))
    x, y = batch(shape, 8)
    nn.functional.cross_entropy(model(x), y).backward()
    if masks is not None:
        masks.mask_gradients()
    optimizer.step()
    if masks is not None:
        masks.apply()
        masks.mask_optimizer_state(optimizer)
    return optimizer


def pruned(model, shape, density, granularity="unstructured"):
    topology = Topology(model, shape)
    masks = MaskSet(model, topology)
    if density < 1:
        masks.update(make_criterion(granularity=granularity).propose(masks, density))
        masks.apply()
    return topology, masks


@pytest.mark.parametrize("fixture", ["mlp", "cnn"])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.1, 0.02])
@pytest.mark.parametrize("optimizer_name", ["sgd", "momentum", "adam"])
def test_state_bytes_match_the_sparse_layout(fixture, density, optimizer_name, request):
    model, shape = request.getfixturevalue(fixture)
    topology, masks = pruned(model, shape, density)
    optimizer = trained_step(model, shape, optimizer_name, masks)
    measured = nbytes(pack(model, masks, optimizer, "sparse"))
    predicted = MemoryAccountant(model, topology, optimizer_name, "sparse").state_bytes(masks)
    assert predicted == pytest.approx(measured, rel=0.10)
    dense = sum(p.numel() * 4 for p in model.parameters()) * (2 + {"sgd": 0, "momentum": 1, "adam": 2}[optimizer_name])
    if density <= 0.5:
        assert measured < 0.6 * dense, "the sparse layout does not save memory"


def test_layout_round_trips_the_kept_values(mlp):
    model, shape = mlp
    topology, masks = pruned(model, shape, 0.1)
    optimizer = trained_step(model, shape, "momentum", masks)
    packed = pack(model, masks, optimizer, "sparse")
    name = "1.weight"
    mask = unpack_bits(packed[f"{name}/index"], masks.masks[name].numel()).reshape(masks.masks[name].shape)
    assert torch.equal(mask, masks.masks[name])
    assert torch.equal(packed[f"{name}/0"], model.get_parameter(name).detach()[mask])
    assert torch.equal(unpack_bits(pack_bits(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.bool)), 9),
                       torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.bool))


@pytest.mark.parametrize("fixture", ["mlp", "cnn"])
@pytest.mark.parametrize("batch_size", [1, 16, 64])
def test_activation_bytes_match_autograd(fixture, batch_size, request):
    model, shape = request.getfixturevalue(fixture)
    topology = Topology(model, shape)
    x, y = batch(shape, batch_size)
    measured = saved_activation_bytes(model, x, y)
    predicted = batch_size * MemoryAccountant(model, topology).activation_bytes(None)
    assert predicted == pytest.approx(measured, rel=0.10)


@pytest.mark.parametrize("fixture", ["mlp", "cnn"])
@pytest.mark.parametrize("density", [0.6, 0.25, 0.08])
@pytest.mark.parametrize("batch_size", [4, 32])
def test_structured_memory_matches_the_compacted_network(fixture, density, batch_size, request):
    model, shape = request.getfixturevalue(fixture)
    topology, masks = pruned(model, shape, density, "structured")
    small = compact(model, topology, masks.masks)
    optimizer = trained_step(small, shape, "momentum")
    held = sum(p.numel() * p.element_size() * 2 for p in small.parameters())
    held += sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v))
    accountant = MemoryAccountant(model, topology, "momentum", "compact")
    assert accountant.state_bytes(masks) == pytest.approx(held, rel=0.10)
    x, y = batch(shape, batch_size)
    measured = saved_activation_bytes(small, x, y)
    assert batch_size * accountant.activation_bytes(masks) == pytest.approx(measured, rel=0.10)
    assert accountant.activation_bytes(masks) < accountant.activation_bytes(None)


def test_planned_bound_is_never_below_the_real_state(mlp):
    model, shape = mlp
    topology, masks = pruned(model, shape, 0.1)
    accountant = MemoryAccountant(model, topology, "momentum", "sparse")
    planned = accountant.planned(0.1, make_criterion())
    assert accountant.state_bytes(masks) <= planned.state_bytes <= 1.02 * accountant.state_bytes(masks)
