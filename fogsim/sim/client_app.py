"""The Flower ``ClientApp``: a node is a worker that simulates a cohort of devices per message.

Thin glue around the DynHP core. Each round a worker receives one message naming the devices
it simulates (its cohort, see ``messages``), with each device's state (mask and schedule
position, kept by the server between the device's rounds: see ``device_state``), and answers
once. The worker is warm: it loads the dataset once, and keeps one model and one
``DeviceTrainer`` (plan, memory accountant, criterion, optimizer) per distinct device
configuration and budget, which every device of that kind reuses (``DeviceTrainer.start``
begins a device on them as if they were new). Each device of the cohort, in a round it takes
part in,

1. receives the global weights and applies *its own* mask to them (so the mask never regrows);
   with sparse downloads (``strategy.download``) what it receives is the model restricted to
   that mask and packed like the uploads (or the dense model where packing saves nothing); its
   download bytes are the payload of what it received;
2. resumes its schedule: its progress, in samples, is set to where it would be had it trained
   in every round (``(round - 1) / rounds`` of its horizon ``rounds x epochs x partition size``),
   so a device sampled in few rounds still reaches its target compression by the last round;
3. trains ``epochs`` passes of its partition with the trainer under its budget;
4. uploads only the kept entries (``masked-fedavg``) or the dense model with zeros (``fedavg``)
   and reports examples, loss, density, (in the last round) its own model's test accuracy, peak
   memory, batch sizes, bytes and simulated time, and its new state.

A device that fails this round (``draws.fails``) is reported as failed and keeps its old state.
What a device computes depends only on the device, the round and the weights it receives,
never on the cohort or the worker it fell into.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch import nn
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fogsim.core import DeviceTrainer
from fogsim.core.trainer import Diverged
from fogsim.data import Dataset, load_dataset
from fogsim.models import build_model
from fogsim.sim import cost, draws
from fogsim.sim.device_state import DeviceState, pack_masks, unpack_masks
from fogsim.sim.messages import (CONFIG, MODEL, ROUND_KEY, SUMS_KEY, UNIFORM_WEIGHT_KEY, UPLOAD_ENCODING_KEY,
                                 WARM_UP, Assignment, Block, Outcome, cohort_reply, read_cohort)
from fogsim.sim.reports import DeviceReport
from fogsim.sim.scenario import Scenario
from fogsim.sim.shared import FleetSpec
from strategies import dense_masked_state, encoded_nbytes, pack_masked_state, packed_nbytes
from strategies.sums import SumStack, Sums


@lru_cache(maxsize=2)
def cached_dataset(name: str, root: str | None, download: bool, seed: int, path: str | None = None,
                   loader: str | None = None, hub: str | None = None, features: str | tuple[str, ...] | None = None,
                   label: str | None = None) -> Dataset:
    """One copy of the dataset per worker process, loaded the first time a client needs it."""
    features = list(features) if isinstance(features, tuple) else features
    return load_dataset(name, root=root, download=download, seed=seed, path=path, loader=loader, hub=hub,
                        features=features, label=label)


def dataset_of(scenario: Scenario) -> Dataset:
    """The scenario's dataset; the user's data files are named absolutely in the scenario a worker
    receives (``run.data_located``)."""
    data = scenario.data
    features = tuple(data.features) if isinstance(data.features, list) else data.features  # hashable, for the cache
    return cached_dataset(data.name, data.root, data.download, scenario.seed, data.path, data.loader, data.hub,
                          features, data.label)


def download_nbytes(dense: dict[str, np.ndarray], kept: dict[str, int] | None, download: str) -> int:
    """What a device receives, in bytes: ``dense`` itself, or with ``download: sparse`` and a mask
    (``kept``: the entries it keeps per prunable tensor), the model restricted to the mask and packed
    like the uploads, unless that is no smaller (a bitmap costs one bit per entry, so a mask that kept
    nearly everything packs larger). Either way the device holds the global model under its own mask."""
    whole = encoded_nbytes(dense)
    if download != "sparse" or kept is None:
        return whole
    return min(packed_nbytes(dense, kept), whole)


class Worker:
    """A worker process's warm state for one run: the dataset, one model and trainer per kind of device."""

    def __init__(self, spec: FleetSpec, data: Dataset | None = None):
        self.spec = spec
        self.data = data if data is not None else dataset_of(spec.scenario)
        self._trainers: dict[tuple[str, int], DeviceTrainer] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # the prunable tensors' shapes, in model order
        self._full: dict[str, np.ndarray] = {}  # the masks of a device that never prunes
        self._held: dict[int, dict[str, np.ndarray]] = {}  # the global models devices started from

    def trainer(self, device: int, horizon: int) -> DeviceTrainer:
        """The trainer of ``device``'s configuration and budget, built the first time such a device trains."""
        tier = self.spec.fleet.tier_of(device)
        key = (tier.config.model_dump_json(), tier.profile.memory_budget)
        trainer = self._trainers.get(key)
        if trainer is None:
            data = self.data
            model = build_model(self.spec.scenario.model, data.input_shape, data.num_classes)
            trainer = DeviceTrainer(model, data.input_shape, data.num_classes, tier.config, horizon=horizon,
                                    budget=tier.profile.memory_budget, device=tier.label)
            self._trainers[key] = trainer
            if not self.shapes:  # every kind of device trains the same model
                self.shapes = {n: tuple(model.get_parameter(n).shape) for n in trainer.topology.prunable}
                self._full = {n: np.ones(shape, dtype=bool) for n, shape in self.shapes.items()}
                for mask in self._full.values():
                    mask.flags.writeable = False
        return trainer

    def forget(self) -> None:
        """Drop what the trainers kept of the models simulated so far (``DeviceTrainer.forget``)."""
        self._held.clear()
        for trainer in self._trainers.values():
            trainer.forget()

    def warm_up(self) -> None:
        """Build every kind of device's model and trainer and run one backward pass on each, so
        that what a process pays once (the dataset, PyTorch's first optimizer and autograd pass)
        is paid before the first round."""
        data = self.data
        x, y = data.train_rows(slice(0, 2)), data.train_y[:2]
        for tier in self.spec.fleet.tiers:
            model = self.trainer(tier.first, 1).model
            model.eval()  # no dropout draw from PyTorch's generator, no batch-norm statistics touched
            nn.functional.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
            model.train()

    def simulate(self, assignment: Assignment, dense: dict[str, np.ndarray], config: ConfigRecord,
                 download: str) -> Outcome:
        """Simulate one device of a cohort for one round on the global weights ``dense``; its upload is
        its contribution to the round's sums where ``config`` asks for them (``SUMS_KEY``), else its own."""
        spec = self.spec
        scenario = spec.scenario
        device_id, state = assignment.device, assignment.state
        device = spec.fleet[device_id]
        round_ = int(config[ROUND_KEY])
        if draws.fails(device.profile.failure_rate, scenario.seed, round_, device_id):
            return Outcome(device_id, failed=True)
        data = self.data
        rows = torch.from_numpy(spec.partitions[device_id])
        x, y = data.train_rows(rows), data.train_y[rows]
        per_round = int(round(scenario.training.epochs * len(x)))
        trainer = self.trainer(device_id, scenario.rounds * per_round)
        model = trainer.model
        model.load_state_dict({k: torch.from_numpy(v) for k, v in dense.items()})  # start() applies the mask
        masks = None
        if state is not None and state.mask is not None:  # start() keeps copies of them
            masks = {n: torch.from_numpy(m) for n, m in unpack_masks(state.mask, self.shapes).items()}
        # Devices of a cohort that receive the same model with the same mask (every device's first
        # round, most often) prune it alike before their first step: see DeviceTrainer.start.
        self._held[id(dense)] = dense  # held, so that its id names it until forget()
        origin = (id(dense), None if masks is None else state.mask.tobytes())
        trainer.start(scenario.rounds * per_round, progress=(round_ - 1) * per_round,
                      steps=state.steps if state is not None else 0,
                      next_prune=state.next_prune if state is not None else 0.0, masks=masks, origin=origin)
        download_bytes = download_nbytes(dense, None if masks is None else self._kept(trainer), download)
        flops_before = cost.forward_flops(trainer.topology, trainer.masks)
        steps = trainer.train(x, y, per_round, generator=draws.generator(scenario.seed, round_, device_id))
        accuracy = float("nan")
        if round_ == scenario.rounds:
            trainer.finish()
            limit = scenario.evaluation.test_samples
            accuracy, _ = trainer.evaluate(data.test_x[:limit], data.test_y[:limit])  # what this tier ends with
        flops = cost.training_flops((flops_before + cost.forward_flops(trainer.topology, trainer.masks)) / 2, per_round)
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        pruned = {n: trainer.masks.masks[n].numpy() for n in self.shapes} if trainer.masks is not None else {}
        # Packed uploads pack every prunable tensor (a device that never prunes: under full masks);
        # dense ones zero what was pruned, which for such a device is nothing.
        packed = config.get(UPLOAD_ENCODING_KEY, "dense") == "packed"
        weight = len(x) if scenario.strategy.weighting == "examples" else 1
        upload = contribution = None
        if assignment.leaf >= 0 and config.get(SUMS_KEY, False):
            if packed:
                contribution = Sums.of_client(weights, pruned or self._full, weight)
                upload_bytes = packed_nbytes(weights, self._kept(trainer))
            else:
                contribution = Sums.of_client(dense_masked_state(weights, pruned), {}, weight)
                upload_bytes = encoded_nbytes(weights)
        else:
            upload = pack_masked_state(weights, pruned or self._full) if packed else dense_masked_state(weights, pruned)
            upload_bytes = encoded_nbytes(upload)
        # The batch sizes the device chose (within its plan's range), not the samples of a pass's last,
        # partial batch, which the end of the data cuts short.
        full = [s["planned_batch"] for s in steps]
        report = DeviceReport(
            peak_memory_bytes=int(max(s["memory_bytes"] for s in steps)),
            batch_size_min=int(min(full)),
            batch_size_max=int(max(full)),
            density=float(trainer.density),
            num_examples=len(x),
            train_loss=float(np.mean([s["loss"] for s in steps])),
            accuracy=accuracy,
            progress=int(trainer.progress),
            upload_bytes=upload_bytes,
            download_bytes=download_bytes,
            compute_s=flops / device.profile.flops,
            sim_time_s=cost.device_seconds(spec.link_profile(device_id), flops, download_bytes, upload_bytes))
        # Array copies what it is given: the model's weights are the next device's to overwrite.
        record = ArrayRecord({k: Array(np.asarray(v)) for k, v in upload.items()}) if upload is not None else None
        mask = pack_masks(pruned, list(self.shapes)) if pruned else None
        return Outcome(device_id, state=DeviceState(int(trainer.steps), float(trainer.next_prune), mask),
                       upload=record, metrics=MetricRecord({**report.to_metrics(), UNIFORM_WEIGHT_KEY: 1}),
                       contribution=contribution)

    def _kept(self, trainer: DeviceTrainer) -> dict[str, int]:
        """Entries the device's masks keep per prunable tensor (all of them for a device that never prunes)."""
        if trainer.masks is None:
            return {n: int(np.prod(shape)) for n, shape in self.shapes.items()}
        return {n: trainer.masks.kept_of(n) for n in self.shapes}


def train_cohort(worker: Worker, msg: Message) -> Message:
    """Simulate the cohort ``msg`` names, device after device, and answer once."""
    assignments, download = read_cohort(msg.content)
    worker.forget()  # a cohort's models are new: so are the proposals made on them
    models: dict[int, dict[str, np.ndarray]] = {}
    outcomes = []
    stacks: dict[int, SumStack] = {}  # per fog node, the sums of this cohort's leaves (strategies.sums)
    for assignment in assignments:
        if assignment.model not in models:
            models[assignment.model] = {k: a.numpy() for k, a in msg.content[MODEL + str(assignment.model)].items()}
        try:
            outcome = worker.simulate(assignment, models[assignment.model],
                                      msg.content[CONFIG + str(assignment.config)], download)
            if assignment.leaf >= 0 and (outcome.failed or outcome.contribution is not None):
                stacks.setdefault(assignment.node, SumStack()).push(assignment.leaf, outcome.contribution)
        except Diverged as error:  # ends the run unless the scenario says go on (training.on_divergence)
            profile = worker.spec.fleet[assignment.device].profile_name
            reason = f"({profile}, step {error.step}, loss {error.loss:.4g}): {worker.spec.scenario.divergence_advice()}"
            return Message(cohort_reply(outcomes, (assignment.device, reason, True)), reply_to=msg)
        except Exception as error:  # the device's bug ends the run; the server names the device
            reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
            return Message(cohort_reply(outcomes, (assignment.device, reason)), reply_to=msg)
        outcomes.append(outcome)
    blocks = [Block(node, start, size, sums) for node, stack in stacks.items()
              for start, size, sums in stack.blocks if sums is not None]
    return Message(cohort_reply(outcomes, blocks=blocks), reply_to=msg)


_worker: Worker | None = None  # this process's warm worker, for the run whose spec it holds


def worker_for(spec: FleetSpec, data: Dataset | None = None) -> Worker:
    """This process's worker for ``spec``'s run; ``data``: the run's dataset, where this process has it."""
    global _worker
    if _worker is None or _worker.spec is not spec:
        _worker = Worker(spec, data)
    return _worker


def make_client_app(spec: Callable[[], FleetSpec], data: Callable[[], Dataset | None] = lambda: None) -> ClientApp:
    """A ClientApp that simulates the cohorts of devices of ``spec()`` that its messages name.

    ``spec`` is called in the worker, once per message; ``shared.SharedSpec`` makes that a
    lookup after the first, so the fleet description is not pickled with every message.
    """
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one CPU per worker; more threads only fight each other
        try:
            if WARM_UP in msg.content:
                worker_for(spec(), data()).warm_up()
                return Message(RecordDict(), reply_to=msg)
            return train_cohort(worker_for(spec(), data()), msg)
        finally:
            torch.set_num_threads(threads)

    return app
