"""The memory accountant: training memory ``S(d) + b * a(d)`` of one device.

``S(d)`` is the bytes of parameters, gradients and optimizer state; every prunable tensor is
stored in the cheapest of three layouts, with one index shared by the value, gradient and state
copies of a tensor:

* ``dense``  — every entry: ``c * n * 4`` bytes;
* ``coo``    — kept values plus int32 flat indices: ``c * k * 4 + k * 4``;
* ``bitmap`` — kept values plus one bit per entry: ``c * k * 4 + ceil(n / 8)``;

(the two sparse indexes of ``fogsim.layout``, which the wire encoding uses too)

where ``n`` is the tensor's size, ``k`` its kept entries and ``c`` the copies (1 value + 1
gradient + the optimizer's state tensors). Structured pruning stores the physically smaller
network instead (``compact``: ``c * k * 4``, no index). ``a(d)`` is the bytes per sample
autograd keeps for backward (``Topology.activation_bytes``).

``pack`` builds those layouts as real tensors; the tests hold the accountant to their size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fogsim import layout as _layout  # ``layout`` names the accountant's argument
from fogsim.core.masks import MaskSet
from fogsim.core.topology import Topology
from fogsim.errors import FogsimError, shown

# State tensors the optimizer keeps per parameter, besides the parameter and its gradient.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}
ADAM_STEP_BYTES = 4  # torch keeps Adam's step count as a float32 scalar per parameter
LAYOUTS = ("dense", "sparse", "compact")


@dataclass(frozen=True)
class Footprint:
    """Training memory of a device at one pruning state."""

    state_bytes: int       # S(d)
    activation_bytes: int  # a(d), per sample

    def at(self, batch_size: int) -> int:
        return self.state_bytes + batch_size * self.activation_bytes

    def batch_capacity(self, budget: int) -> int:
        """The largest batch that fits ``budget`` (may be 0 or negative when nothing fits)."""
        return math.floor((budget - self.state_bytes) / self.activation_bytes)


def tensor_bytes(numel: int, kept: int, copies: int, layout: str, value_bytes: int = 4) -> tuple[int, str]:
    """Bytes of ``copies`` copies of one masked tensor, and the encoding that achieves them."""
    options = {"dense": copies * numel * value_bytes}
    if layout == "compact":
        options = {"compact": copies * kept * value_bytes}
    elif layout == "sparse":
        index = _layout.cheaper_index(numel, kept)
        options[index] = copies * kept * value_bytes + _layout.index_nbytes(numel, kept, index)
    encoding = min(options, key=lambda name: (options[name], name != "dense"))
    return options[encoding], encoding


class MemoryAccountant:
    """``S(d)`` and ``a(d)`` of one model, optimizer and layout."""

    def __init__(self, model: nn.Module, topology: Topology, optimizer: str = "momentum",
                 layout: str = "sparse", num_classes: int | None = None):
        if optimizer not in OPTIMIZER_STATES:
            raise FogsimError(f"unknown optimizer {shown(optimizer)}: use one of {', '.join(OPTIMIZER_STATES)}")
        if layout not in LAYOUTS:
            raise FogsimError(f"unknown memory layout {shown(layout)}: use one of {', '.join(LAYOUTS)}")
        self.model = model
        self.topology = topology
        self.optimizer = optimizer
        self.layout = layout
        self.num_classes = num_classes
        self.copies = 2 + OPTIMIZER_STATES[optimizer]
        self.shapes = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
        self.value_bytes = next(model.parameters()).element_size()
        # Held but never trained: buffers (batch-norm statistics) and frozen parameters, one copy each
        # (none in the built-in models).
        self.held_bytes = sum(t.numel() * t.element_size() for t in model.buffers()) + sum(
            p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)

    def state_bytes(self, masks: MaskSet | None) -> int:
        """``S(d)`` for the masks as they are now (``None``: the dense model)."""
        all_masks = masks.all_masks() if masks is not None else {}
        total = 0
        for name, numel in self.shapes.items():
            if name in all_masks:
                kept = masks.kept_of(name)
                total += tensor_bytes(numel, kept, self.copies, self.layout, self.value_bytes)[0]
            else:
                total += self.copies * numel * self.value_bytes
        if self.optimizer == "adam":
            total += ADAM_STEP_BYTES * len(self.shapes)
        return total + self.held_bytes

    def activation_bytes(self, masks: MaskSet | None) -> int:
        alive = masks.alive_units() if masks is not None else None
        return self.topology.activation_bytes(alive, num_classes=self.num_classes)

    def footprint(self, masks: MaskSet | None) -> Footprint:
        return Footprint(self.state_bytes(masks), self.activation_bytes(masks))

    def planned(self, density: float, criterion) -> Footprint:
        """Training memory at ``density`` before any training: what the plan checks against the budget.

        For unstructured pruning which entries survive is not known in advance, so ``S`` is the
        bound that holds for every distribution of the kept entries over the tensors (all bitmap,
        or all dense); the real ``S`` is never larger. Structured pruning keeps the same fraction
        of units in every layer, so its footprint is known exactly from the counts.
        """
        fresh = MaskSet(self.model, self.topology, hard=True)
        if self.layout == "compact":
            fresh.update(criterion.propose(fresh, density))
            return self.footprint(fresh)
        activation = self.activation_bytes(None)
        if self.layout == "dense" or density >= 1:
            return Footprint(self.state_bytes(None), activation)
        prunable = {name: fresh.masks[name].numel() for name in self.topology.prunable}
        kept = round(density * sum(prunable.values()))
        others = self.state_bytes(None) - self.copies * self.value_bytes * sum(prunable.values())
        bitmap = self.copies * self.value_bytes * kept + sum(math.ceil(n / 8) for n in prunable.values())
        dense = self.copies * self.value_bytes * sum(prunable.values())
        return Footprint(others + min(bitmap, dense), activation)


# --- the layouts as real tensors ------------------------------------------------------------
def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """One bit per entry, as the wire encoding lays them out (``fogsim.layout``)."""
    return torch.from_numpy(_layout.make_index(mask.numpy(), _layout.BITMAP))


def unpack_bits(bits: torch.Tensor, numel: int) -> torch.Tensor:
    return torch.from_numpy(_layout.read_index(bits.numpy(), _layout.BITMAP, numel))


def pack(model: nn.Module, masks: MaskSet | None, optimizer: torch.optim.Optimizer,
         layout: str = "sparse") -> dict[str, torch.Tensor]:
    """Parameters, gradients and optimizer state of ``model`` as a device would hold them.

    Each masked tensor gets the encoding ``tensor_bytes`` picks; the returned tensors are the
    actual storage (kept values, shared index), so their total size is the real ``S(d)``.
    """
    all_masks = masks.all_masks() if masks is not None else {}
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        copies = [param.detach(), param.grad if param.grad is not None else torch.zeros_like(param)]
        copies += [v for k, v in sorted(state.items()) if torch.is_tensor(v) and v.shape == param.shape]
        scalars = {k: v for k, v in state.items() if torch.is_tensor(v) and v.dim() == 0}
        mask = all_masks.get(name)
        encoding = "dense"
        if mask is not None:
            encoding = tensor_bytes(param.numel(), int(mask.sum()), len(copies), layout, param.element_size())[1]
        for i, tensor in enumerate(copies):
            out[f"{name}/{i}"] = tensor.detach().clone() if encoding == "dense" else tensor.detach()[mask].clone()
        if encoding in (_layout.COO, _layout.BITMAP):
            out[f"{name}/index"] = torch.from_numpy(_layout.make_index(mask.numpy(), encoding))
        for key, value in scalars.items():
            out[f"{name}/{key}"] = value.detach().clone()
    return out


def nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
