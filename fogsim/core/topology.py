"""What a model is made of, found once by a dry forward pass of one sample.

The DynHP core needs three facts about a model that its code does not state: which tensors
are prunable (the weights of Linear and Conv layers), which tensors autograd keeps for the
backward pass (the activation memory ``a(d)``), and which parameters die together when a whole
neuron or channel is removed (structured pruning). ``Topology`` records them for a flat
``nn.Sequential`` whose every step is a module, which is what fogsim's models are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fogsim.errors import FogsimError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
# What each module keeps for the backward pass (checked against autograd in the tests).
SAVES_OUTPUT = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid)
SAVES_OWN_MASK = (nn.Dropout,)  # a float mask of the output's size, a tensor of its own
SAVES_INPUT = (nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.AvgPool1d, nn.AvgPool2d,
               nn.BatchNorm1d, nn.BatchNorm2d) + PRUNABLE
SAVES_INPUT_AND_INDICES = (nn.MaxPool1d, nn.MaxPool2d)
SAVES_NOTHING = (nn.Flatten, nn.Identity, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
# Modules that act channel by channel, so a removed channel stays removed through them.
CHANNELWISE = SAVES_OUTPUT + SAVES_OWN_MASK + SAVES_INPUT_AND_INDICES + SAVES_NOTHING + (
    nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.AvgPool1d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
POOL_INDEX_BYTES = 8  # max pooling keeps int64 argmax indices


@dataclass(frozen=True)
class Tensor:
    """One activation tensor of the forward pass, per sample."""

    key: int            # identity within the dry run
    numel: int          # elements per sample
    owner: int | None   # Sequential index of the prunable layer whose units make its channels


@dataclass(frozen=True)
class Saved:
    """A tensor autograd keeps for backward: which one, and bytes per element."""

    tensor: Tensor
    element_bytes: int


@dataclass
class PrunableLayer:
    """A Linear or Conv layer: its weight is a prunable tensor; its units are neurons/channels."""

    index: int
    weight: str                  # parameter name of the weight, e.g. "1.weight"
    units: int                   # output neurons / channels
    unit_size: int               # weight entries per unit (one row of the weight)
    bias: str | None
    consumer: str | None = None  # weight of the next prunable layer, whose inputs these units feed
    consumer_span: int = 1       # consumer input columns fed by one unit (spatial size after flatten)
    norms: list[str] = field(default_factory=list)  # per-channel norm parameters between the two

    @property
    def numel(self) -> int:
        return self.units * self.unit_size


class Topology:
    """Prunable layers, activation tensors and unit coupling of a flat ``nn.Sequential``."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        if not isinstance(model, nn.Sequential):
            raise FogsimError(
                f"fogsim needs the model as a flat torch.nn.Sequential of modules, got {type(model).__name__}; "
                "wrap its layers in nn.Sequential")
        self.model = model
        self.input_shape = tuple(input_shape)
        self.saved: list[Saved] = []
        self.layers: list[PrunableLayer] = []
        self._trace()
        if not self.layers:
            raise FogsimError("the model has no Linear or Conv layer, so there is nothing to prune")
        self._couple()

    @property
    def prunable(self) -> list[str]:
        return [layer.weight for layer in self.layers]

    def layer(self, weight: str) -> PrunableLayer:
        return next(layer for layer in self.layers if layer.weight == weight)

    def _trace(self) -> None:
        param = next(self.model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        x = torch.zeros((1, *self.input_shape), dtype=dtype)
        keep = [x]  # hold every intermediate so that no storage address is reused
        current = Tensor(key=x.data_ptr(), numel=x.numel(), owner=None)
        self.steps: list[tuple[nn.Module, Tensor, Tensor]] = []
        with torch.no_grad():
            for index, module in enumerate(self.model):
                y = module(x)
                keep.append(y)
                owner = index if isinstance(module, PRUNABLE) else current.owner
                out = Tensor(key=y.data_ptr(), numel=y.numel(), owner=owner)
                self.steps.append((module, current, out))
                self._record_saves(index, module, current, out, x.element_size())
                if isinstance(module, PRUNABLE):
                    self.layers.append(PrunableLayer(
                        index=index, weight=f"{index}.weight", units=module.weight.shape[0],
                        unit_size=module.weight[0].numel(),
                        bias=f"{index}.bias" if module.bias is not None else None))
                x, current = y, out
        self.output_numel = current.numel
        self.output_owner = current.owner

    def _record_saves(self, index: int, module: nn.Module, inp: Tensor, out: Tensor, size: int) -> None:
        if isinstance(module, SAVES_INPUT_AND_INDICES):
            self.saved += [Saved(inp, size), Saved(Tensor(-index - 1, out.numel, out.owner), POOL_INDEX_BYTES)]
        elif isinstance(module, SAVES_OWN_MASK):
            self.saved.append(Saved(Tensor(-index - 1, out.numel, out.owner), size))
        elif isinstance(module, SAVES_INPUT):
            self.saved.append(Saved(inp, size))
        elif isinstance(module, SAVES_OUTPUT):
            self.saved.append(Saved(out, size))
        elif not isinstance(module, SAVES_NOTHING):
            raise FogsimError(
                f"layer {index} ({type(module).__name__}) is not supported by fogsim's memory accountant; "
                "build the model from Linear, Conv1d/2d, BatchNorm, pooling, Flatten, Dropout and the usual activations")

    def _couple(self) -> None:
        """Link each prunable layer to the next one, through channel-wise modules only."""
        for layer, nxt in zip(self.layers, self.layers[1:]):
            between = [self.steps[i] for i in range(layer.index + 1, nxt.index)]
            if not all(isinstance(module, CHANNELWISE) for module, _, _ in between):
                continue  # units cannot be removed structurally across this layer
            fan_in = self.model[nxt.index].weight.shape[1]
            if fan_in % layer.units:
                continue
            layer.consumer = nxt.weight
            layer.consumer_span = fan_in // layer.units
            layer.norms = [f"{layer.index + 1 + k}.{p}" for k, (module, _, _) in enumerate(between)
                           if isinstance(module, NORMS) for p in ("weight", "bias")
                           if getattr(module, p) is not None]

    def structured_layers(self) -> list[PrunableLayer]:
        """Layers whose units may be removed whole: every coupled one (the output layer never is)."""
        return [layer for layer in self.layers if layer.consumer is not None]

    def activation_bytes(self, alive_units: dict[int, int] | None = None, *, num_classes: int | None = None) -> int:
        """``a(d)``: bytes per sample autograd keeps for backward, the loss included.

        ``alive_units`` maps a prunable layer's Sequential index to how many of its units are
        still alive (structured pruning); channels of removed units are not stored.
        """
        alive_units = alive_units or {}
        counted: dict[int, int] = {}
        for item in self.saved:
            t = item.tensor
            numel = t.numel
            if t.owner is not None and t.owner in alive_units:
                units = self.model[t.owner].weight.shape[0]
                numel = numel * alive_units[t.owner] // units
            counted[t.key] = max(counted.get(t.key, 0), numel * item.element_bytes)
        # Cross-entropy keeps its log-softmax (one float per class) and the int64 target.
        classes = num_classes if num_classes is not None else self.output_numel
        return sum(counted.values()) + classes * 4 + 8


def compact(model: nn.Sequential, topology: Topology, masks: dict[str, torch.Tensor]) -> nn.Sequential:
    """A physically smaller copy of ``model`` without the units that structured pruning removed.

    This is the network a device really holds after structured pruning; the tests measure its
    memory to check the accountant.
    """
    import copy

    alive = {layer.index: masks[layer.weight].reshape(layer.units, -1).any(1) if layer.consumer else
             torch.ones(layer.units, dtype=torch.bool) for layer in topology.layers}
    out = copy.deepcopy(model)
    incoming = None  # (alive mask of the feeding layer, span per unit)
    for index, module in enumerate(out):
        if isinstance(module, PRUNABLE):
            rows = alive[index]
            weight = module.weight.data[rows]
            if incoming is not None:
                cols = incoming[0].repeat_interleave(incoming[1])
                weight = weight[:, cols]
            replacement = _resized(module, weight.shape[0], weight.shape[1])
            replacement.weight.data.copy_(weight)
            if module.bias is not None:
                replacement.bias.data.copy_(module.bias.data[rows])
            out[index] = replacement
            layer = next(layer for layer in topology.layers if layer.index == index)
            incoming = (rows, layer.consumer_span)
        elif isinstance(module, NORMS) and incoming is not None:
            rows = incoming[0]
            norm = type(module)(int(rows.sum()), eps=module.eps, momentum=module.momentum,
                                affine=module.affine, track_running_stats=module.track_running_stats)
            state = {k: v[rows] if v.dim() and v.shape[0] == rows.numel() else v
                     for k, v in module.state_dict().items()}
            norm.load_state_dict(state)
            out[index] = norm
    return out


def _resized(module: nn.Module, out_units: int, inputs: int) -> nn.Module:
    """A layer like ``module`` with ``out_units`` units and ``inputs`` input features / channels."""
    if isinstance(module, nn.Linear):
        return nn.Linear(inputs, out_units, bias=module.bias is not None)
    return type(module)(inputs, out_units, module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, bias=module.bias is not None)
