"""The Flower ``ClientApp``: a node is a worker that simulates whichever device a message names.

Thin glue around the DynHP core. Each training message names a device and carries its state
(mask and schedule position, kept by the server between the device's rounds: see
``device_state``). In a round it takes part in, the device

1. builds the model from the global weights it receives and applies *its own* mask to them
   (so the mask never regrows); with sparse downloads (``strategy.download``, see ``fog_grid``)
   it receives them already restricted to that mask and packed like the uploads, and unpacks
   them, zeros outside the mask; its download bytes are the payload of the arrays it received,
   by the same count for either form;
2. resumes its schedule: its progress, in samples, is set to where it would be had it trained
   in every round (``(round - 1) / rounds`` of its horizon ``rounds x epochs x partition size``),
   so a device sampled in few rounds still reaches its target compression by the last round;
3. trains ``epochs`` passes of its partition with ``DeviceTrainer`` under its budget;
4. uploads only the kept entries (``masked-fedavg``) or the dense model with zeros (``fedavg``)
   and reports examples, loss, density, (in the last round) its own model's test accuracy, peak
   memory, batch sizes, bytes and simulated time, and sends its new state back.

A device that fails this round (``draws.fails``) answers with an error; the server keeps its old state.
The fleet description (``FleetSpec``) reaches each worker process once, through Ray's object
store (``shared.SharedSpec``); messages carry only what differs per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fogsim.core import DeviceTrainer
from fogsim.data import Dataset, load_dataset
from fogsim.models import build_model
from fogsim.sim import cost, draws
from fogsim.sim.device_state import DeviceState, pack_masks, read_state, state_records, unpack_masks
from fogsim.sim.fleet import Fleet
from fogsim.sim.fog import FogLayer
from fogsim.sim.partition import Partitions
from fogsim.sim.reports import DeviceReport
from fogsim.sim.scenario import Scenario
from strategies import (UPLOAD_ENCODING_KEY, dense_masked_state, encoded_nbytes, pack_masked_state,
                        unpack_masked_state)

UNIFORM_WEIGHT_KEY = "unit-weight"  # what the strategy weights by when strategy.weighting is uniform


@dataclass(frozen=True)
class FleetSpec:
    """What every worker needs to know, sent to each once: the scenario, its fleet, the split and
    the fog nodes (None without a fog layer)."""

    scenario: Scenario
    fleet: Fleet
    partitions: Partitions
    fog: FogLayer | None = None

    def link_profile(self, device: int):
        """The profile whose links time the device's transfers: its own, capped by its fog node's local link."""
        return self.fog.device_profile(device) if self.fog is not None else self.fleet[device].profile


@lru_cache(maxsize=2)
def cached_dataset(name: str, root: str | None, download: bool, seed: int) -> Dataset:
    """One copy of the dataset per Ray worker process, loaded the first time a client needs it."""
    return load_dataset(name, root=root, download=download, seed=seed)


def dataset_of(scenario: Scenario) -> Dataset:
    data = scenario.data
    return cached_dataset(data.name, data.root, data.download, scenario.seed)


def _restore(trainer: DeviceTrainer, state: DeviceState | None, progress: int) -> None:
    if state is None:
        trainer.load_state_dict({**trainer.state_dict(), "progress": progress})
        return
    masks = {} if state.mask is None else {
        name: torch.from_numpy(mask.copy()) for name, mask in
        unpack_masks(state.mask, {n: tuple(trainer.masks.masks[n].shape) for n in trainer.topology.prunable}).items()}
    trainer.load_state_dict({"masks": masks, "progress": progress, "steps": state.steps,
                             "next_prune": state.next_prune})


def _state(trainer: DeviceTrainer) -> DeviceState:
    state = trainer.state_dict()
    mask = pack_masks(state["masks"], trainer.topology.prunable) if state["masks"] else None
    return DeviceState(int(state["steps"]), float(state["next_prune"]), mask)


def train_device(spec: FleetSpec, msg: Message) -> Message:
    """Simulate the device ``msg`` names for one round."""
    scenario = spec.scenario
    device_id, state = read_state(msg.content)
    device = spec.fleet[device_id]
    round_ = int(msg.content["config"]["server-round"])
    if draws.fails(device.profile.failure_rate, scenario.seed, round_, device_id):
        return Message(Error(code=draws.FAILED, reason=f"device {device_id} dropped out mid-round {round_}"), reply_to=msg)

    data = dataset_of(scenario)
    rows = torch.from_numpy(spec.partitions[device_id])
    x, y = data.train_x[rows], data.train_y[rows]
    received = {k: a.numpy() for k, a in msg.content["arrays"].items()}  # dense, or packed by a sparse download
    global_state, _ = unpack_masked_state(received)  # the device's own mask is applied below (_restore)
    model = build_model(scenario.model, data.input_shape, data.num_classes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in global_state.items()})
    per_round = int(round(scenario.training.epochs * len(x)))
    trainer = DeviceTrainer(model, data.input_shape, data.num_classes, device.config,
                            horizon=scenario.rounds * per_round, budget=device.profile.memory_budget,
                            device=device.label)
    _restore(trainer, state, progress=(round_ - 1) * per_round)
    flops_before = cost.forward_flops(trainer.topology, trainer.masks)
    steps = trainer.train(x, y, per_round, generator=draws.generator(scenario.seed, round_, device_id))
    accuracy = float("nan")
    if round_ == scenario.rounds:
        trainer.finish()
        limit = scenario.evaluation.test_samples
        accuracy, _ = trainer.evaluate(data.test_x[:limit], data.test_y[:limit])  # what this tier ends with
    flops = cost.training_flops((flops_before + cost.forward_flops(trainer.topology, trainer.masks)) / 2, per_round)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    masks = {name: (trainer.masks.masks[name] if trainer.masks is not None else torch.ones_like(model.get_parameter(name),
             dtype=torch.bool)).numpy() for name in trainer.topology.prunable}
    packed = msg.content["config"].get(UPLOAD_ENCODING_KEY, "dense") == "packed"
    upload = pack_masked_state(weights, masks) if packed else dense_masked_state(weights, masks)
    download_bytes = encoded_nbytes(received)
    upload_bytes = encoded_nbytes(upload)
    report = DeviceReport(
        peak_memory_bytes=int(max(s["memory_bytes"] for s in steps)),
        batch_size_min=int(min(s["batch_size"] for s in steps)),
        batch_size_max=int(max(s["batch_size"] for s in steps)),
        density=float(trainer.density),
        num_examples=len(x),
        train_loss=float(np.mean([s["loss"] for s in steps])),
        accuracy=accuracy,
        progress=int(trainer.progress),
        upload_bytes=upload_bytes,
        download_bytes=download_bytes,
        compute_s=flops / device.profile.flops,
        sim_time_s=cost.device_seconds(spec.link_profile(device_id), flops, download_bytes, upload_bytes))
    metrics = MetricRecord({**report.to_metrics(), UNIFORM_WEIGHT_KEY: 1})
    content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in upload.items()}),
                          "metrics": metrics, **state_records(None, _state(trainer))})
    return Message(content, reply_to=msg)


def make_client_app(spec: Callable[[], FleetSpec]) -> ClientApp:
    """A ClientApp that simulates the devices of ``spec()`` that its messages name.

    ``spec`` is called in the worker, once per message; ``shared.SharedSpec`` makes that a
    lookup after the first, so the fleet description is not pickled with every message.
    """
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one Ray CPU per client; more threads only fight each other
        return train_device(spec(), msg)

    return app
