"""The networks a device trains: a built-in one, or the user's own from a builder function.

The built-ins are flat ``nn.Sequential`` stacks on purpose: the memory accountant reads their
activation bytes off a table of modules, and structured pruning removes a neuron or channel by
editing a layer and the one after it. A user's model (``file.py:build`` or
``package.module:build``, with keyword arguments) may be any ``nn.Module``; the accountant
measures its activations (``fogsim.core.topology``), and it is pruned unstructured.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fogsim.catalog import MODELS
from fogsim.errors import FogsimError, error_text, shown, shown_path



def is_builder(name) -> bool:
    """Whether a scenario's ``model`` names a builder function rather than a built-in model."""
    return not isinstance(name, str) or ":" in name


def builder_of(name) -> tuple[str, dict]:
    """``(builder, args)`` of a builder model: ``"file.py:build"``, or a mapping (or the scenario's
    ``ModelSpec``) with ``builder`` and ``args``."""
    if isinstance(name, str):
        return name, {}
    if isinstance(name, dict):
        return name["builder"], dict(name.get("args") or {})
    return name.builder, dict(name.args)


def build_model(name, input_shape: tuple[int, ...], num_classes: int, *,
                seed: int | None = None) -> nn.Module:
    """Build model ``name`` for samples of ``input_shape``; ``seed`` fixes its initial weights.

    ``name`` is a built-in model's name or a builder (``is_builder``), whose file is absolute here
    (``run.prepare`` resolves it against the scenario file's folder).
    The seeded build runs inside ``torch.random.fork_rng`` so that it does not move the global
    RNG that the caller's shuffling and dropout rely on.
    """
    if is_builder(name):
        return _user_model(*builder_of(name), tuple(input_shape), num_classes, seed)
    if name not in MODELS:
        raise FogsimError(f"Unknown model {shown(name)}: choose one of {', '.join(MODELS)}.")
    if seed is None:
        return _BUILDERS[name](tuple(input_shape), num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _BUILDERS[name](tuple(input_shape), num_classes)


def _user_model(builder: str, args: dict, input_shape: tuple[int, ...], num_classes: int,
                seed: int | None) -> nn.Module:
    """The user's builder called as ``build(input_shape=..., num_classes=..., **args)`` with PyTorch
    seeded (``seed``, 0 when unset, in a forked RNG); every failure is one line naming the builder."""
    from fogsim.data_files import loader_module, loader_parts

    try:
        target, function = loader_parts(builder, "model builder")
    except ValueError as error:
        raise FogsimError(f"model: {error}") from None
    where = f"model builder {shown_path(builder)}"
    module = loader_module(builder, "model builder", "model")
    build = getattr(module, function, None)
    if not callable(build):
        raise FogsimError(f"{where}: {shown_path(target)} has no function {function}; define "
                          f"def {function}(input_shape, num_classes, ...) or name an existing one")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            model = build(input_shape=input_shape, num_classes=num_classes, **args)
    except (Exception, SystemExit) as error:
        raise FogsimError(f"{where} failed ({error_text(error)}); fix the builder or model.args") from None
    if not isinstance(model, nn.Module):
        what = "None" if model is None else f"a {type(model).__name__}"
        raise FogsimError(f"{where} returned {what}, not a torch.nn.Module; return the network")
    if next(model.parameters(), None) is None:
        raise FogsimError(f"{where} returned a {type(model).__name__} without parameters; there is nothing to train")
    return model


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
