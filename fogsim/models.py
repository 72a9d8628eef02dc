"""The networks a device trains, each a flat ``nn.Sequential``.

Flat and module-only on purpose: the memory accountant walks the modules in order to count
parameter and activation bytes, and structured pruning removes a neuron or channel by editing a
layer and the one after it. A functional call hidden in a ``forward`` would escape both.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fogsim.catalog import MODELS
from fogsim.errors import FogsimError, shown



def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, *,
                seed: int | None = None) -> nn.Sequential:
    """Build model ``name`` for samples of ``input_shape``; ``seed`` fixes its initial weights.

    The seeded build runs inside ``torch.random.fork_rng`` so that it does not move the global
    RNG that the caller's shuffling and dropout rely on.
    """
    if name not in MODELS:
        raise FogsimError(f"Unknown model {shown(name)}: choose one of {', '.join(MODELS)}.")
    if seed is None:
        return _BUILDERS[name](tuple(input_shape), num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _BUILDERS[name](tuple(input_shape), num_classes)


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden[0]),
        nn.ReLU(),
        nn.Linear(hidden[0], hidden[1]),
        nn.ReLU(),
        nn.Linear(hidden[1], num_classes),
    )


def _lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """LeNet-5 with 'same' padding, so 8x8 digits survive both poolings (8 -> 4 -> 2)."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise FogsimError(
            f"lenet5 needs image samples of shape (channels, height, width) at least 4x4, "
            f"not {input_shape}: pick the mlp model for this dataset."
        )
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (height // 4) * (width // 4), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


_BUILDERS = {
    "mlp": lambda shape, classes: _mlp(shape, classes, (300, 100)),  # LeNet-300-100
    "lenet5": _lenet5,
    "mlp-small": lambda shape, classes: _mlp(shape, classes, (64, 32)),  # sized for 8x8 digits
}
