"""The Flower ``ClientApp``: each simulated node is one device of the fleet.

Thin glue around the DynHP core. In each round it takes part in, a device

1. builds the model from the global weights it receives and applies *its own* mask to them
   (kept in ``Context.state`` between rounds, so the mask never regrows);
2. resumes its schedule: its progress, in samples, is set to where it would be had it trained
   in every round (``(round - 1) / rounds`` of its horizon ``rounds x epochs x partition size``),
   so a device sampled in few rounds still reaches its target compression by the last round;
3. trains ``epochs`` passes of its partition with ``DeviceTrainer`` under its budget;
4. uploads only the kept entries (``masked-fedavg``) or the dense model with zeros (``fedavg``)
   and reports examples, loss, density, (in the last round) its own model's test accuracy, peak memory, batch sizes, bytes and simulated time.

A device that fails this round (``fog.fails``) answers with an error and keeps its old state.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fogsim.core import DeviceTrainer
from fogsim.data import Dataset, load_dataset
from fogsim.models import build_model
from fogsim.sim import fog
from fogsim.sim.fleet import Device
from fogsim.sim.scenario import Scenario
from strategies import UPLOAD_ENCODING_KEY, dense_masked_state, encoded_nbytes, pack_masked_state

STATE_KEY, MASK_KEY = "fogsim", "fogsim-mask"
UNIFORM_WEIGHT_KEY = "unit-weight"  # what the strategy weights by when strategy.weighting is uniform


@dataclass(frozen=True)
class FleetSpec:
    """What every client needs to know; small and picklable (partitions are row indices)."""

    scenario: Scenario
    devices: list[Device]
    partitions: list[np.ndarray]


@lru_cache(maxsize=2)
def cached_dataset(name: str, root: str | None, download: bool, seed: int) -> Dataset:
    """One copy of the dataset per Ray worker process, loaded the first time a client needs it."""
    return load_dataset(name, root=root, download=download, seed=seed)


def dataset_of(scenario: Scenario) -> Dataset:
    data = scenario.data
    return cached_dataset(data.name, data.root, data.download, scenario.seed)


def _restore(trainer: DeviceTrainer, context: Context, progress: int) -> None:
    if STATE_KEY not in context.state:
        trainer.load_state_dict({**trainer.state_dict(), "progress": progress})
        return
    saved = context.state[STATE_KEY]
    masks = {k: torch.from_numpy(a.numpy().copy()) for k, a in context.state[MASK_KEY].items()} \
        if MASK_KEY in context.state else {}
    trainer.load_state_dict({"masks": masks, "progress": progress, "steps": int(saved["steps"]),
                             "next_prune": float(saved["next_prune"])})


def _save(trainer: DeviceTrainer, context: Context) -> None:
    state = trainer.state_dict()
    context.state[STATE_KEY] = ConfigRecord({"steps": state["steps"], "next_prune": float(state["next_prune"]),
                                             "progress": state["progress"]})
    if state["masks"]:
        context.state[MASK_KEY] = ArrayRecord({k: Array(v.numpy()) for k, v in state["masks"].items()})


def train_device(spec: FleetSpec, device_id: int, msg: Message, context: Context) -> Message:
    scenario = spec.scenario
    device = spec.devices[device_id]
    round_ = int(msg.content["config"]["server-round"])
    if fog.fails(device.profile.failure_rate, scenario.seed, round_, device_id):
        return Message(Error(code=fog.FAILED, reason=f"device {device_id} dropped out mid-round {round_}"), reply_to=msg)

    data = dataset_of(scenario)
    rows = torch.from_numpy(spec.partitions[device_id])
    x, y = data.train_x[rows], data.train_y[rows]
    arrays = msg.content["arrays"]
    model = build_model(scenario.model, data.input_shape, data.num_classes)
    model.load_state_dict(arrays.to_torch_state_dict())
    per_round = int(round(scenario.training.epochs * len(x)))
    trainer = DeviceTrainer(model, data.input_shape, data.num_classes, device.config,
                            horizon=scenario.rounds * per_round, budget=device.profile.memory_budget,
                            device=device.label)
    _restore(trainer, context, progress=(round_ - 1) * per_round)
    flops_before = fog.forward_flops(trainer.topology, trainer.masks)
    steps = trainer.train(x, y, per_round, generator=fog.generator(scenario.seed, round_, device_id))
    accuracy = float("nan")
    if round_ == scenario.rounds:
        trainer.finish()
        limit = scenario.evaluation.test_samples
        accuracy, _ = trainer.evaluate(data.test_x[:limit], data.test_y[:limit])  # what this tier ends with
    _save(trainer, context)

    flops = fog.training_flops((flops_before + fog.forward_flops(trainer.topology, trainer.masks)) / 2, per_round)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    masks = {name: (trainer.masks.masks[name] if trainer.masks is not None else torch.ones_like(model.get_parameter(name),
             dtype=torch.bool)).numpy() for name in trainer.topology.prunable}
    packed = msg.content["config"].get(UPLOAD_ENCODING_KEY, "dense") == "packed"
    upload = pack_masked_state(weights, masks) if packed else dense_masked_state(weights, masks)
    download_bytes = sum(int(a.numpy().nbytes) for a in arrays.values())
    upload_bytes = encoded_nbytes(upload)
    metrics = MetricRecord({
        "num-examples": len(x),
        UNIFORM_WEIGHT_KEY: 1,
        "device-id": device_id,
        "train-loss": float(np.mean([s["loss"] for s in steps])),
        "density": float(trainer.density),
        "budget-bytes": int(trainer.budget),
        "peak-memory-bytes": int(max(s["memory_bytes"] for s in steps)),
        "batch-size-min": int(min(s["batch_size"] for s in steps)),
        "batch-size-max": int(max(s["batch_size"] for s in steps)),
        "progress": int(trainer.progress),
        "accuracy": accuracy,
        "download-bytes": download_bytes,
        "upload-bytes": upload_bytes,
        "compute-s": flops / device.profile.flops,
        "sim-time-s": fog.device_seconds(device.profile, flops, download_bytes, upload_bytes),
    })
    content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in upload.items()}),
                          "metrics": metrics})
    return Message(content, reply_to=msg)


def make_client_app(spec: FleetSpec) -> ClientApp:
    """A ClientApp whose node with partition id ``i`` is device ``i`` of ``spec``."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one Ray CPU per client; more threads only fight each other
        return train_device(spec, int(context.node_config["partition-id"]), msg, context)

    @app.query()
    def _whoami(msg: Message, context: Context) -> Message:
        """The server maps Flower's random node ids to device ids with this, once, before round 1."""
        device_id = int(context.node_config["partition-id"])
        return Message(RecordDict({"device": MetricRecord({"device-id": device_id})}), reply_to=msg)

    return app
