"""The Flower ``ServerApp``: Flower's strategy loop over the fog, one result row per round.

The strategy (``masked-fedavg`` or Flower's ``fedavg``) runs its own round loop over a
``FogGrid``; the central evaluation hook, called by that loop at the end of every round, is
where fogsim evaluates the global model on the test set, writes the round's rows and starts
the next round of the fog (availability and sampling).

The model evaluated is the round's aggregate restricted to the entries that some client of the
round kept (``round_union``). The strategy's own state keeps the previous global value where no
client kept an entry, as the brief's averaging rule says — a device that was not sampled may
still hold that entry — but those values are stale, often the untrained initial ones, and no
device of the round would run them. For Flower's FedAvg the restriction changes nothing: it
has already averaged those entries to zero.

``device_accuracy`` is the accuracy of the model each device of the round runs once it applies
its own mask to the new global weights, averaged by examples: with partly different masks the
union model above is not what any device holds.

After the last round the server also evaluates, per profile, the final global model under each
device's last known mask — sampled in the last round or not — and writes ``tiers.csv``
(``RoundEnd.evaluate_tiers``): the summary's accuracy per profile, always there.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fogsim.core import Topology, evaluate
from fogsim.data import Dataset
from fogsim.models import build_model
from fogsim.sim import checkpoint
from fogsim.sim.client_app import UNIFORM_WEIGHT_KEY, FleetSpec
from fogsim.sim.device_state import DeviceStates, pack_masks, unpack_masks
from fogsim.sim.fog_grid import FogGrid
from fogsim.sim.outputs import RunFiles
from fogsim.sim.reports import EXAMPLES_KEY, ClientRow, DeviceReport, RoundRecord, TierRecord
import strategies

TIER_MASKS = 64  # distinct masks evaluated per profile at the end of a run, at most


def masked(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * masks[k] if k in masks else v for k, v in state.items()}


def union(masks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([m[name] for m in masks]).any(0) for name in masks[0]} if masks else {}


def client_rows(spec: FleetSpec, grid: FogGrid) -> list[dict]:
    rows = []
    for device_id, reply in grid.replies:
        tier = spec.fleet.tier_of(device_id)
        report = None if reply.has_error() else DeviceReport.from_metrics(reply.content["metrics"])
        rows.append(ClientRow(grid.round, device_id, tier.profile_name, tier.plan.budget_bytes, report).as_row())
    return rows


def round_row(round_: int, evaluation: "Evaluation", clients: list[dict], grid: FogGrid, wall_time_s: float) -> dict:
    ok = [c for c in clients if not c["failed"]]
    examples = sum(c["num_examples"] for c in ok)
    return asdict(RoundRecord(
        round=round_, accuracy=evaluation.accuracy, loss=evaluation.loss,
        device_accuracy=evaluation.device_accuracy,
        density=sum(c["density"] * c["num_examples"] for c in ok) / examples if examples else float("nan"),
        global_density=evaluation.global_density,
        upload_bytes=sum(c["upload_bytes"] for c in ok),
        download_bytes=sum(c["download_bytes"] for c in ok),
        sim_time_s=max((c["sim_time_s"] for c in ok), default=0.0),
        wall_time_s=wall_time_s,
        clients_available=len(grid.available), clients_sampled=len(grid.sampled),
        clients_ok=len(ok), clients_failed=len(clients) - len(ok)))


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    device_accuracy: float
    global_density: float


class RoundEnd:
    """The server's end of every round: evaluate the new global model, record the round, checkpoint
    it, sample the next.

    Flower's strategy loop calls it as its central evaluation hook (``evaluate_fn``) before
    the first round and after every round; what it returns, the round's row, is what the
    strategy's ``Result`` keeps per round. The round numbers are the fog's (``FogGrid.round``):
    a resumed run's first round is the one after its checkpoint, while Flower counts from 1.
    """

    def __init__(self, job: "ServerJob", grid: FogGrid):
        spec, data = job.spec, job.data
        scenario = spec.scenario
        self.job, self.spec, self.files, self.grid, self.on_round = job, spec, job.files, grid, job.on_round
        self.test_x, self.test_y = data.test_x, data.test_y
        if scenario.evaluation.test_samples is not None:
            self.test_x = self.test_x[:scenario.evaluation.test_samples]
            self.test_y = self.test_y[:scenario.evaluation.test_samples]
        self.model = build_model(scenario.model, data.input_shape, data.num_classes)
        self.prunable = Topology(self.model, data.input_shape).prunable
        self.shapes = {n: tuple(self.model.get_parameter(n).shape) for n in self.prunable}
        self.clock = time.perf_counter()
        self.strategy: strategies.Resumable | None = None  # whose optimizer state each checkpoint keeps

    def __call__(self, flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        row = None
        if flower_round == 0:
            if self.job.first_round == 1:
                self.checkpoint(0, arrays)  # a run that dies in round 1 resumes from its start
            self.grid.start_round(self.job.first_round)
        else:
            evaluation = self.evaluate(arrays)
            if self.grid.round == self.spec.scenario.rounds:  # before the row: a finished run has its tiers
                self.files.write_tiers(self.evaluate_tiers(arrays))
            row = self.record(self.grid.round, evaluation)
            self.checkpoint(self.grid.round, arrays)
            self.grid.start_round(self.grid.round + 1)
        self.clock = time.perf_counter()
        return MetricRecord(row) if row is not None else None

    def checkpoint(self, round_: int, arrays: ArrayRecord) -> None:
        if self.job.checkpoint_meta is not None:
            checkpoint.save(self.files.out, round_, {k: a.numpy() for k, a in arrays.items()}, self.grid.states,
                            self.job.checkpoint_meta, self.strategy.state_arrays() if self.strategy else None)

    def client_masks(self) -> list[tuple[int, bytes, dict[str, torch.Tensor]]]:
        """``(examples, packed mask, masks)`` of every client that finished the round, from its state."""
        out = []
        for device, reply in self.grid.replies:
            if reply.has_error():
                continue
            bits = self.grid.states.get(device).mask
            masks = {n: torch.from_numpy(m) for n, m in unpack_masks(bits, self.shapes).items()} if bits is not None \
                else {n: torch.ones(shape, dtype=torch.bool) for n, shape in self.shapes.items()}
            out.append((int(reply.content["metrics"][EXAMPLES_KEY]), self.key(masks), masks))
        return out

    def key(self, masks: dict[str, torch.Tensor]) -> bytes:
        return pack_masks({n: m.numpy() for n, m in masks.items()}, self.prunable).tobytes()

    def evaluate(self, arrays: ArrayRecord) -> Evaluation:
        """The global model on the test set, on the entries some client of the round kept and under
        each client's own mask."""
        state = arrays.to_torch_state_dict()
        clients = self.client_masks()
        everyone = union([masks for _, _, masks in clients])
        self.model.load_state_dict(masked(state, everyone))
        accuracy, loss = evaluate(self.model, self.test_x, self.test_y)
        state = {k: v.clone() for k, v in self.model.state_dict().items()}  # load_state_dict below writes in place
        device_accuracy = float("nan")
        if self.spec.scenario.evaluation.device_masks and clients:
            # Devices often share a mask (always, without pruning): one test pass per distinct mask.
            seen = {self.key(everyone): accuracy}
            scores = []
            for examples, key, masks in clients:
                if key not in seen:
                    self.model.load_state_dict(masked(state, masks))
                    seen[key] = evaluate(self.model, self.test_x, self.test_y)[0]
                scores.append((examples, seen[key]))
            device_accuracy = sum(n * a for n, a in scores) / sum(n for n, _ in scores)
        kept = sum(int(torch.count_nonzero(state[n])) for n in self.prunable)
        density = kept / sum(state[n].numel() for n in self.prunable)
        return Evaluation(accuracy, loss, device_accuracy, density)

    def evaluate_tiers(self, arrays: ArrayRecord) -> list[dict]:
        """``tiers.csv``'s rows: per profile, the global model ``arrays`` under each of its devices'
        last known masks (``grid.states``), averaged over those devices, each counted once.

        One test pass per distinct mask, shared by every profile. A profile whose devices hold
        more than ``TIER_MASKS`` distinct masks has ``TIER_MASKS`` of them evaluated, drawn (seeded)
        by walking its devices in a random order, so a mask is drawn as often as devices hold it,
        and is averaged over the devices holding those. A profile none of whose devices holds a
        mask gets the unmasked global model, which is what such a device receives."""
        state = arrays.to_torch_state_dict()
        total = sum(state[n].numel() for n in self.prunable)
        scores: dict[bytes | None, tuple[float, float, float]] = {}

        def score(key: bytes | None) -> tuple[float, float, float]:
            if key not in scores:
                weights = state if key is None else masked(state, {n: torch.from_numpy(m) for n, m in unpack_masks(
                    self.grid.states.masks.get(key), self.shapes).items()})
                self.model.load_state_dict(weights)
                accuracy, loss = evaluate(self.model, self.test_x, self.test_y)
                kept = sum(int(torch.count_nonzero(weights[n])) for n in self.prunable)
                scores[key] = (accuracy, loss, kept / total)
            return scores[key]

        fleet = self.spec.fleet
        held = self.grid.states.mask_keys()
        devices = np.fromiter(held, dtype=np.int64, count=len(held))
        keys = list(held.values())
        ids: dict[bytes, int] = {}
        mask_id = np.fromiter((ids.setdefault(k, len(ids)) for k in keys), dtype=np.int64, count=len(keys))
        key_of = list(ids)
        profile_of = np.array([t.profile_name for t in fleet.tiers], dtype=object)
        tier_index = np.searchsorted([t.first for t in fleet.tiers], devices, side="right") - 1
        names = list(dict.fromkeys(t.profile_name for t in fleet.tiers))
        rows = []
        for index, name in enumerate(names):
            count = sum(t.count for t in fleet.tiers if t.profile_name == name)
            mine = mask_id[profile_of[tier_index] == name]
            if not len(mine):
                rows.append(asdict(TierRecord(name, count, 0, 0, 0, *score(None))))
                continue
            distinct, holders = np.unique(mine, return_counts=True)
            if len(distinct) > TIER_MASKS:
                order = np.random.default_rng((self.spec.scenario.seed, self.grid.round, index)).permutation(len(mine))
                found, first = np.unique(mine[order], return_index=True)
                chosen = np.sort(found[np.argsort(first)[:TIER_MASKS]])
                keep = np.isin(distinct, chosen)
                distinct, holders = distinct[keep], holders[keep]
            figures = np.array([score(key_of[i]) for i in distinct])  # (accuracy, loss, density) per mask
            accuracy, loss, density = (holders @ figures / holders.sum()).tolist()
            rows.append(asdict(TierRecord(name, count, len(mine), len(distinct), int(holders.sum()),
                                          accuracy, loss, density)))
        return rows

    def record(self, round_: int, evaluation: Evaluation) -> dict:
        """Write the round's client rows and its row; report the row."""
        wall_time_s = time.perf_counter() - self.clock
        clients = client_rows(self.spec, self.grid)
        row = round_row(round_, evaluation, clients, self.grid, wall_time_s)
        self.files.write_round(row, clients)
        if self.on_round is not None:
            self.on_round(row)
        return row


@dataclass
class ServerJob:
    """What the server needs to run a scenario's rounds (or the rest of them, when resumed)."""

    spec: FleetSpec
    data: Dataset
    files: RunFiles
    nodes: int                      # worker nodes of the simulation
    states: DeviceStates            # every device's state; filled from the checkpoint when resumed
    first_round: int = 1
    initial: ArrayRecord | None = None  # global arrays the first round starts from (default: the seeded model)
    checkpoint_meta: dict | None = None  # write a checkpoint after every round, with this identity
    strategy_state: dict | None = None  # the server optimizer's state the first round starts from (resume)
    on_round: Callable[[dict], None] | None = None
    on_client: Callable[[int, int, int], None] | None = None  # (round, replies, sampled)
    stop: threading.Event | None = None  # set from another thread to end the rounds at the next wait


def serve(grid: Grid, job: ServerJob) -> None:
    """Run the job's rounds with Flower's strategy over ``grid``'s ``job.nodes`` worker nodes."""
    scenario = job.spec.scenario

    def _on_reply(done: int, total: int) -> None:
        job.on_client(fog_grid.round, done, total)

    availability = job.spec.fleet.per_device([t.profile.availability for t in job.spec.fleet.tiers])
    shape_model = build_model(scenario.model, job.data.input_shape, job.data.num_classes)
    shapes = {n: tuple(shape_model.get_parameter(n).shape) for n in Topology(shape_model, job.data.input_shape).prunable}
    fog_grid = FogGrid(grid, availability, scenario.fraction, scenario.seed, job.states, job.nodes,
                       on_reply=_on_reply if job.on_client is not None else None, stop=job.stop,
                       download=scenario.strategy.download, shapes=shapes)
    fog_grid.connect()
    initial = job.initial or ArrayRecord(
        build_model(scenario.model, job.data.input_shape, job.data.num_classes, seed=scenario.seed).state_dict())
    strategy = make_strategy(scenario.strategy)
    strategy.round_offset = job.first_round - 1
    if job.strategy_state:
        strategy.load_state_arrays(job.strategy_state)
    round_end = RoundEnd(job, fog_grid)
    round_end.strategy = strategy
    strategy.start(grid=fog_grid, initial_arrays=initial, num_rounds=scenario.rounds - job.first_round + 1,
                   evaluate_fn=round_end)


def make_strategy(settings) -> strategies.Resumable:
    """The scenario's strategy (``strategy`` section) over the fog: every node the fog shows is trained."""
    weight_key = EXAMPLES_KEY if settings.weighting == "examples" else UNIFORM_WEIGHT_KEY
    return strategies.build(
        settings.name, rule=settings.rule, quorum=settings.quorum, server_lr=settings.server_lr,
        server_momentum=settings.server_momentum, beta_1=settings.beta_1, beta_2=settings.beta_2, tau=settings.tau,
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=0, min_evaluate_nodes=0, min_available_nodes=0,
        weighted_by_key=weight_key)


def make_server_app(job: ServerJob) -> ServerApp:
    """A ServerApp that runs ``job`` (see ``serve``)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(grid, job)

    return app
