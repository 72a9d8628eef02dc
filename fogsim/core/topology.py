"""What a model is made of, found once by a dry forward pass of one sample.

The DynHP core needs three facts about a model that its code does not state: which tensors
are prunable (the weights of Linear and Conv layers), which tensors autograd keeps for the
backward pass (the activation memory ``a(d)``), and which parameters die together when a whole
neuron or channel is removed (structured pruning). ``Topology`` records them for a flat
``nn.Sequential`` whose every step is a known module, which is what fogsim's built-in models are,
by reading each module's saves off a table.

Any other model (a residual or branching network, a custom ``forward``, an unknown module) is
*measured*: one forward and backward pass of ``MEASURE_BATCH`` samples under autograd's
saved-tensor hooks gives the bytes kept for backward, each storage counted once, parameters and
buffers excluded, divided by the batch. Its prunable tensors are the weights of every Linear and
Conv layer in the module tree, named by their parameter names. Unstructured pruning leaves every
activation in place, so this ``a(d)`` holds at every density; structured pruning, which needs to
know which layer feeds which, is refused for such a model (``structured_refusal``).
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
# The modules whose saves the table above knows: a flat Sequential of these is traced, not measured.
TABLED = SAVES_OUTPUT + SAVES_OWN_MASK + SAVES_INPUT + SAVES_INPUT_AND_INDICES + SAVES_NOTHING
MEASURE_BATCH = 8  # samples of the measuring pass of a model that is not a flat Sequential


def is_flat(model: nn.Module) -> bool:
    """A plain ``nn.Sequential`` of modules whose saves fogsim's table knows (the traced path)."""
    return type(model) is nn.Sequential and all(isinstance(module, TABLED) for module in model)


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
    """Prunable layers, activation tensors and unit coupling of a model.

    ``flat``: traced from the table of a flat ``nn.Sequential`` (structured pruning possible);
    otherwise measured (``measured_bytes``), and a ``PrunableLayer.index`` is the layer's position
    in ``layers`` (and ``steps``), not a Sequential index.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        if not isinstance(model, nn.Module):
            raise FogsimError(f"the model is a {type(model).__name__}, not a torch.nn.Module")
        self.model = model
        self.input_shape = tuple(input_shape)
        self.saved: list[Saved] = []
        self.layers: list[PrunableLayer] = []
        self.flat = is_flat(model)
        self.measured_bytes: int | None = None  # a(d) per sample, the loss included (measured models)
        self._unfollowable: str | None = None   # the first layer structured pruning cannot follow
        if self.flat:
            self._trace()
        else:
            self._measure()
        if not self.layers:
            raise FogsimError("the model has no Linear or Conv layer, so there is nothing to prune")
        if self.flat:
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

    def _measure(self) -> None:
        """Prunable layers from the module tree; ``a(d)`` and each layer's output size from one forward
        and backward pass of a copy of the model (the model itself and PyTorch's RNG are untouched)."""
        import copy

        params = dict(self.model.named_parameters())
        probe = copy.deepcopy(self.model)
        probe.train()
        probe_modules = dict(probe.named_modules())
        chosen = [name for name, module in self.model.named_modules()
                  if isinstance(module, PRUNABLE) and f"{name}.weight" in params
                  and params[f"{name}.weight"] is module.weight and module.weight.requires_grad]
        outputs = {name: 0 for name in chosen}
        calls: list[tuple[str, nn.Module, tuple, object]] = []

        def record(module, args, out):
            name = names_in_probe[id(module)]
            calls.append((name, module, args, out))
            if name in outputs and torch.is_tensor(out):
                outputs[name] += out.numel()

        names_in_probe = {id(module): name for name, module in probe.named_modules()}
        leaves = [module for module in probe.modules() if not list(module.children())]
        handles = [module.register_forward_hook(record) for module in leaves]
        param = next(probe.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        owned = {t.untyped_storage().data_ptr() for t in [*probe.parameters(), *probe.buffers()]}
        held: dict[int, int] = {}

        def pack(t):
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # a tensor without storage of its own
                return t
            if storage.data_ptr() not in owned:
                held[storage.data_ptr()] = max(held.get(storage.data_ptr(), 0), storage.nbytes())
            return t

        batch = MEASURE_BATCH
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                x = torch.randn((batch, *self.input_shape), dtype=dtype)
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    out = probe(x)
                    if not (torch.is_tensor(out) and out.dim() == 2 and out.shape[0] == batch
                            and out.is_floating_point()):
                        what = f"a tensor of shape {tuple(out.shape)}" if torch.is_tensor(out) else \
                            f"a {type(out).__name__}"
                        raise FogsimError(f"the model returns {what} for a batch of {batch} samples of shape "
                                          f"{self.input_shape}; a classifier returns (batch, classes) scores")
                    loss = nn.functional.cross_entropy(out, torch.zeros(batch, dtype=torch.long))
                    loss.backward()
        except FogsimError:
            raise
        except Exception as error:  # a model that cannot run on these samples
            text = str(error).strip().splitlines()
            raise FogsimError(f"the model fails on a batch of samples of shape {self.input_shape} "
                              f"({type(error).__name__}: {text[0][:160] if text else ''})") from None
        finally:
            for handle in handles:
                handle.remove()
        self.measured_bytes = -(-sum(held.values()) // batch)
        self.output_numel = out.shape[1]
        self.output_owner = None
        self.steps = []
        for position, name in enumerate(chosen):
            module = self.model.get_submodule(name)
            self.layers.append(PrunableLayer(
                index=position, weight=f"{name}.weight", units=module.weight.shape[0],
                unit_size=module.weight[0].numel(), bias=f"{name}.bias" if module.bias is not None else None))
            self.steps.append((module, Tensor(-1, 0, None), Tensor(-position - 2, outputs[name] // batch, position)))
        self._unfollowable = _first_unfollowable(x, calls, probe_modules, out)

    def structured_refusal(self) -> str | None:
        """Why structured pruning cannot work on this model (None: it can), naming the first layer it cannot follow."""
        if self.flat:
            return None
        return (f"structured pruning cannot follow layer {self._unfollowable} of this model: it removes a "
                "neuron or channel together with its inputs in the next layer, which it finds only in a flat "
                "torch.nn.Sequential of Linear, Conv, BatchNorm, pooling, Flatten, Dropout and activations; "
                "use unstructured pruning with this model")

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
        if self.measured_bytes is not None:
            return self.measured_bytes  # unstructured pruning leaves every activation in place
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


def _first_unfollowable(x: torch.Tensor, calls: list, modules: dict, out: torch.Tensor) -> str:
    """The first layer, in call order, whose output does not simply flow into the next module called:
    a skip connection, a branch, an operation outside a module, a module the table does not know."""
    previous, last = x, None  # the tensor flowing along the chain, and the last prunable layer on it
    for name, module, args, result in calls:
        inputs = [a for a in args if torch.is_tensor(a)]
        if len(inputs) == 1 and inputs[0] is previous and not isinstance(module, TABLED):
            return f"{name!r} ({type(module).__name__})"  # on the chain, but a module the table does not know
        if len(inputs) != 1 or inputs[0] is not previous:
            return last or f"{name!r} ({type(module).__name__})"
        if isinstance(module, PRUNABLE):
            last = f"{name!r} ({type(module).__name__})"
        previous = result
    if previous is not out and last is not None:
        return last
    # a chain of modules, but not a flat Sequential's steps: the first layer inside a nested module
    called = [(name, module) for name, module, _, _ in calls if isinstance(module, PRUNABLE)]
    name, module = next(((n, m) for n, m in called if "." in n), called[0] if called else ("?", modules[""]))
    return f"{name!r} ({type(module).__name__})"


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
