"""Masks over the prunable weights of a model, and the one rule of hard pruning.

``MaskSet.update`` is the only place a mask changes. When the set is *hard* (``gmp``, ``dynhp``)
it intersects the proposal with the current mask, so an entry that turned 0 can never turn 1
again; when it is *soft* (``soft``) the proposal replaces the mask and weights may regrow.
"""

from __future__ import annotations

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
        self.masks: dict[str, torch.Tensor] = {
            name: torch.ones_like(self.params[name], dtype=torch.bool) for name in topology.prunable}
        # Biases and norm parameters of removed units (structured pruning only); not counted
        # in density, which is over prunable tensors.
        self.dependents: dict[str, torch.Tensor] = {}
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
            alive = self.masks[layer.weight].reshape(layer.units, -1).any(1)
            self._alive[layer.index] = int(alive.sum())
            if self._alive[layer.index] == layer.units:
                continue
            for name in ([layer.bias] if layer.bias else []) + layer.norms:
                self.dependents[name] = alive.clone()
        # Counted here, once per change: the trainer, the memory accountant and the cost model ask
        # after every pruning step and every round.
        self._kept = {name: int(mask.sum()) for name, mask in self.all_masks().items()}

    # --- applying masks ------------------------------------------------------------------
    def all_masks(self) -> dict[str, torch.Tensor]:
        return {**self.masks, **self.dependents}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every masked weight."""
        for name, mask in self.all_masks().items():
            self.params[name].mul_(mask)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Drop the gradients of masked weights, so that no optimizer state grows there."""
        for name, mask in self.all_masks().items():
            grad = self.params[name].grad
            if grad is not None:
                grad.mul_(mask)

    @torch.no_grad()
    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the optimizer state (momentum, Adam moments) of masked weights."""
        for name, mask in self.all_masks().items():
            for value in optimizer.state.get(self.params[name], {}).values():
                if torch.is_tensor(value) and value.shape == mask.shape:
                    value.mul_(mask)

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
