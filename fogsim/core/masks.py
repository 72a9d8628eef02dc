"""Masks over the prunable weights of a model, and the one rule of hard pruning.

``MaskSet.update`` is the only place a mask changes. When the set is *hard* (``gmp``, ``dynhp``)
it intersects the proposal with the current mask, so an entry that turned 0 can never turn 1
again; when it is *soft* (``soft``) the proposal replaces the mask and weights may regrow.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fogsim.core.topology import Topology


class MaskSet:
    """Boolean masks for the prunable weights (and the tensors that die with whole units)."""

    def __init__(self, model: nn.Module, topology: Topology, *, hard: bool = True):
        self.model = model
        self.topology = topology
        self.hard = hard
        self.params = dict(model.named_parameters())
        # Biases and norm parameters of removed units (structured pruning only); not counted
        # in density, which is over prunable tensors.
        self.dependents: dict[str, torch.Tensor] = {}
        self.reset()

    def reset(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        """Start again from full masks, or from copies of ``masks`` (as ``load_state_dict``), without
        building a new set: a simulation worker begins many devices on one model."""
        if masks:
            self.load_state_dict(masks)
            return
        self.masks = {name: torch.ones_like(self.params[name], dtype=torch.bool) for name in self.topology.prunable}
        self._changed()

    # --- the one place a mask changes -----------------------------------------------------
    def update(self, proposed: dict[str, torch.Tensor]) -> None:
        """Adopt ``proposed`` masks: intersected with the current ones when hard, as they are when soft."""
        for name, mask in proposed.items():
            mask = mask.to(dtype=torch.bool)
            if mask.shape != self.masks[name].shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, expected {tuple(self.masks[name].shape)}")
            self.masks[name] = self.masks[name] & mask if self.hard else mask.clone()
        self._changed()

    def _changed(self) -> None:
        """After every change of the masks: the tensors that die with removed units, and the counts."""
        self.dependents = {}
        self._alive: dict[int, int] = {}  # per structurally prunable layer, its units with weights
        for layer in self.topology.structured_layers():
            # numpy reduces boolean arrays many times faster than torch; the arrays are shared, not copied
            alive = self.masks[layer.weight].numpy().reshape(layer.units, -1).any(1)
            self._alive[layer.index] = int(np.count_nonzero(alive))
            if self._alive[layer.index] == layer.units:
                continue
            for name in ([layer.bias] if layer.bias else []) + layer.norms:
                self.dependents[name] = torch.from_numpy(alive.copy())
        # Counted here, once per change: the trainer, the memory accountant and the cost model ask
        # after every pruning step and every round.
        self._kept = {name: int(np.count_nonzero(mask.numpy())) for name, mask in self.all_masks().items()}
        # What apply() and mask_gradients() multiply by after every optimizer step: the masks in
        # their tensors' dtype (multiplying by a boolean converts it each time), and only the
        # masks that remove something (multiplying by ones changes nothing).
        self._factors = {name: mask.to(self.params[name].dtype) for name, mask in self.all_masks().items()
                         if self._kept[name] < mask.numel()}

    # --- applying masks ------------------------------------------------------------------
    def all_masks(self) -> dict[str, torch.Tensor]:
        return {**self.masks, **self.dependents}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every masked weight."""
        for name, factor in self._factors.items():
            self.params[name].mul_(factor)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Drop the gradients of masked weights, so that no optimizer state grows there."""
        for name, factor in self._factors.items():
            grad = self.params[name].grad
            if grad is not None:
                grad.mul_(factor)

    @torch.no_grad()
    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the optimizer state (momentum, Adam moments) of masked weights."""
        for name, factor in self._factors.items():
            for value in optimizer.state.get(self.params[name], {}).values():
                if torch.is_tensor(value) and value.shape == factor.shape:
                    value.mul_(factor)

    # --- counts ----------------------------------------------------------------------------
    def kept(self) -> int:
        return sum(self._kept[name] for name in self.masks)

    def kept_of(self, name: str) -> int:
        """Entries kept of one masked tensor (a prunable one, or a dependent of removed units)."""
        return self._kept[name]

    def total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    def density(self) -> float:
        return self.kept() / self.total()

    def alive_units(self) -> dict[int, int]:
        """Per structurally prunable layer (Sequential index), how many units still have weights."""
        return dict(self._alive)

    # --- persistence (a federated device keeps its mask across rounds) ---------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: mask.clone() for name, mask in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks = {name: state[name].to(torch.bool).clone() for name in self.masks}
        self._changed()
