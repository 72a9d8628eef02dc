"""Model construction: shapes for every dataset's samples, flatness, and seeded determinism."""

import pytest
import torch
from torch import nn

from fogsim.errors import FogsimError
from fogsim.models import MODELS, build_model

SHAPES = {"digits": (1, 8, 8), "fashion": (1, 28, 28), "cifar": (3, 32, 32)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", MODELS)
def test_output_shape_for_each_dataset_shape(name, shape):
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.randn(5, *shape)).shape == (5, 10)


@pytest.mark.parametrize("name", MODELS)
def test_model_is_a_flat_sequential_of_modules(name):
    model = build_model(name, (1, 28, 28), 7)
    assert type(model) is nn.Sequential
    assert all(len(list(layer.children())) == 0 for layer in model)
    assert model[-1].out_features == 7


def test_mlp_is_lenet_300_100():
    linears = [m for m in build_model("mlp", (1, 28, 28), 10) if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 300), (300, 100), (100, 10)]


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_gives_identical_weights_and_other_seeds_differ(name):
    a, b, c = (build_model(name, (1, 8, 8), 10, seed=s) for s in (1, 1, 2))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_seeded_build_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("lenet5", (1, 28, 28), 10, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(FogsimError) as error:
        build_model("resnet50", (1, 28, 28), 10)
    assert all(name in str(error.value) for name in ("resnet50", *MODELS))


def test_lenet5_refuses_non_image_samples():
    with pytest.raises(FogsimError, match="lenet5"):
        build_model("lenet5", (64,), 10)
