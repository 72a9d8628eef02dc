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

With fog nodes (a scenario's ``fog`` section) the strategy is ``strategies.Hierarchical`` around
the scenario's own: every round each fog node aggregates its devices, every ``cloud_every``
rounds the cloud aggregates the fog nodes. The round's ``accuracy`` is then the cloud's model
(unchanged between cloud rounds), ``device_accuracy`` each client's fog-node model under its
mask, and ``fog_nodes.csv`` has every node's own aggregate, traffic and time (``FogRounds``).
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
from fogsim.core.config import has_diverged
from fogsim.data import Dataset
from fogsim.models import build_model
from fogsim.sim import checkpoint, cost
from fogsim.sim.device_state import DeviceStates, pack_masks, unpack_masks
from fogsim.sim.fog import FogLayer
from fogsim.sim.fog_grid import FogGrid, RunDiverged
from fogsim.sim.messages import EXAMPLES_KEY, METRICS, UNIFORM_WEIGHT_KEY
from fogsim.sim.outputs import RunFiles
from fogsim.sim.reports import ClientRow, DeviceReport, FogRecord, RoundRecord, TierRecord
from fogsim.sim.shared import FleetSpec
import strategies

TIER_MASKS = 64  # distinct masks evaluated per profile at the end of a run, at most


def masked(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * masks[k] if k in masks else v for k, v in state.items()}


def union(masks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {name: mask.clone() for name, mask in masks[0].items()} if masks else {}
    for other in masks[1:]:
        for name, mask in out.items():
            mask |= other[name]
    return out


SERVER = "server"  # clients.csv's fog_node of a device that talks to the server directly (no fog layer)


def client_rows(spec: FleetSpec, grid: FogGrid) -> list[dict]:
    rows = []
    nodes = spec.fog.of([device for device, _ in grid.replies]) if spec.fog is not None else None
    for i, (device_id, reply) in enumerate(grid.replies):
        tier = spec.fleet.tier_of(device_id)
        report = None if reply.has_error() else DeviceReport.from_metrics(reply.content[METRICS])
        node = spec.fog.nodes[int(nodes[i])].name if nodes is not None else SERVER
        rows.append(ClientRow(grid.round, device_id, tier.profile_name, tier.plan.budget_bytes, node, report).as_row())
    return rows


def round_row(round_: int, evaluation: "Evaluation", clients: list[dict], grid: FogGrid, wall_time_s: float,
              fog_rows: list[dict] | None = None, cloud_round: bool = True) -> dict:
    """The round's row; without fog rows the devices' traffic is the wide-area traffic and the slowest
    device the round's time, with them the fog nodes' sums and the slowest fog node."""
    ok = [c for c in clients if not c["failed"]]
    examples = sum(c["num_examples"] for c in ok)
    upload = sum(c["upload_bytes"] for c in ok)
    download = sum(c["download_bytes"] for c in ok)
    if fog_rows is None:
        wan_upload, wan_download = upload, download
        sim_time = max((c["sim_time_s"] for c in ok), default=0.0)
    else:
        wan_upload = sum(f["wan_upload_bytes"] for f in fog_rows)
        wan_download = sum(f["wan_download_bytes"] for f in fog_rows)
        sim_time = max((f["sim_time_s"] for f in fog_rows), default=0.0)
    return asdict(RoundRecord(
        round=round_, accuracy=evaluation.accuracy, loss=evaluation.loss,
        device_accuracy=evaluation.device_accuracy,
        density=sum(c["density"] * c["num_examples"] for c in ok) / examples if examples else float("nan"),
        global_density=evaluation.global_density,
        upload_bytes=upload, download_bytes=download, wan_upload_bytes=wan_upload, wan_download_bytes=wan_download,
        sim_time_s=sim_time, wall_time_s=wall_time_s,
        clients_available=len(grid.available), clients_sampled=len(grid.sampled),
        clients_ok=len(ok), clients_failed=len(clients) - len(ok), cloud_round=int(cloud_round)))


@dataclass
class EndedRound:
    """A round as the server's end-of-round steps (``RoundEnd.steps``) see it; each adds its part."""

    round: int
    arrays: ArrayRecord              # the new global model
    clients: list                    # RoundEnd.client_masks(): the clients that finished, with their masks
    evaluation: "Evaluation | None" = None  # evaluate_round
    row: dict | None = None          # write_rows: rounds.csv's row


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    device_accuracy: float
    global_density: float


class RoundEnd:
    """The server's end of every round, as named steps (``steps``): evaluate the new global model,
    write the tiers (last round), write the round's rows, checkpoint it, sample the next.

    Flower's strategy loop calls it as its central evaluation hook (``evaluate_fn``) before
    the first round and after every round; what it returns, the round's row, is what the
    strategy's ``Result`` keeps per round. The round number has one owner, the fog
    (``FogGrid.round``, advanced only by ``start_next`` and ``begin``): a resumed run's first round
    is the one after its checkpoint, while Flower counts from 1; the grid writes it into every
    train config and the strategies are told the offset (``round_offset``).
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
        self.strategy: strategies.Resumable | strategies.Hierarchical | None = None  # whose state each checkpoint keeps
        self.fog_rounds = FogRounds(self, spec.fog) if spec.fog is not None else None

    def __call__(self, flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if flower_round == 0:
            self.begin(arrays)
            return None
        ended = EndedRound(self.grid.round, arrays, self.client_masks())
        for step in self.steps:
            step(ended)
        return MetricRecord(ended.row)

    @property
    def steps(self) -> tuple[Callable[["EndedRound"], None], ...]:
        """The jobs of the end of a round, in order; each reads what the ones before it left in the round."""
        return (self.evaluate_round, self.write_tiers, self.write_rows, self.checkpoint_round, self.start_next)

    def begin(self, arrays: ArrayRecord) -> None:
        """Before the first round (of the run, or of what a resumed run has left)."""
        if self.job.first_round == 1:
            self.checkpoint(0, arrays)  # a run that dies in round 1 resumes from its start
        self.grid.start_round(self.job.first_round)
        self.clock = time.perf_counter()

    def evaluate_round(self, ended: "EndedRound") -> None:
        ended.evaluation = self.evaluate(ended.arrays, ended.clients)
        self.check_diverged(ended.round, ended.evaluation.loss)

    def check_diverged(self, round_: int, loss: float) -> None:
        """Stop the run, before the round is written, where the global model's test loss is not
        finite or above the bound a device's training is held to (``training.on_divergence``)."""
        scenario = self.spec.scenario
        if scenario.training.on_divergence == "stop" and has_diverged(loss, self.job.data.num_classes):
            raise RunDiverged(f"the global model diverged in round {round_} (test loss {loss:.4g}): "
                              f"{scenario.divergence_advice()}")

    def write_tiers(self, ended: "EndedRound") -> None:
        """After the last round, before its row: a finished run has its tiers."""
        if ended.round == self.spec.scenario.rounds:
            self.files.write_tiers(self.evaluate_tiers(ended.arrays))

    def write_rows(self, ended: "EndedRound") -> None:
        ended.row = self.record(ended.round, ended.evaluation, ended.arrays, ended.clients)

    def checkpoint_round(self, ended: "EndedRound") -> None:
        self.checkpoint(ended.round, ended.arrays)

    def start_next(self, ended: "EndedRound") -> None:
        """Sample the next round's devices; its wall time counts from here."""
        self.grid.start_round(ended.round + 1)
        self.clock = time.perf_counter()

    def checkpoint(self, round_: int, arrays: ArrayRecord) -> None:
        if self.job.checkpoint_meta is not None:
            checkpoint.save(self.files.out, round_, {k: a.numpy() for k, a in arrays.items()}, self.grid.states,
                            self.job.checkpoint_meta, self.strategy.state_arrays() if self.strategy else None)

    def client_masks(self) -> list[tuple[int, bytes, dict[str, torch.Tensor], int]]:
        """``(examples, packed mask, masks, device)`` of every client that finished the round, from its state.

        Clients often share a mask (always, without pruning): each distinct one is unpacked once,
        and clients that share it share the same ``masks`` object."""
        out = []
        unpacked: dict[bytes | None, tuple[bytes, dict[str, torch.Tensor]]] = {}
        for device, reply in self.grid.replies:
            if reply.has_error():
                continue
            bits = self.grid.states.get(device).mask
            raw = None if bits is None else np.ascontiguousarray(bits, dtype=np.uint8).tobytes()
            if raw not in unpacked:
                if bits is None:
                    masks = {n: torch.ones(shape, dtype=torch.bool) for n, shape in self.shapes.items()}
                    unpacked[raw] = (self.key(masks), masks)
                else:  # the state holds the mask packed as key() packs it
                    unpacked[raw] = (raw, {n: torch.from_numpy(m) for n, m in unpack_masks(bits, self.shapes).items()})
            key, masks = unpacked[raw]
            out.append((int(reply.content[METRICS][EXAMPLES_KEY]), key, masks, device))
        return out

    def key(self, masks: dict[str, torch.Tensor]) -> bytes:
        return pack_masks({n: m.numpy() for n, m in masks.items()}, self.prunable).tobytes()

    def evaluate(self, arrays: ArrayRecord, clients: list) -> Evaluation:
        """The global model on the test set, on the entries some client of the round kept and under
        each client's own mask (``clients``: ``client_masks()``)."""
        state = arrays.to_torch_state_dict()
        everyone = union(list({key: masks for _, key, masks, _ in clients}.values()))  # each distinct mask once
        self.model.load_state_dict(masked(state, everyone))
        accuracy, loss = evaluate(self.model, self.test_x, self.test_y)
        state = {k: v.clone() for k, v in self.model.state_dict().items()}  # load_state_dict below writes in place
        device_accuracy = float("nan")
        if self.spec.scenario.evaluation.device_masks and clients:
            # Devices often share a mask (always, without pruning): one test pass per distinct mask
            # (and, with fog nodes between cloud rounds, per distinct fog-node model).
            held = self.fog_models(arrays, [device for *_, device in clients])
            seen = {(id(arrays), self.key(everyone)): accuracy}
            states = {id(arrays): state}
            scores = []
            for (examples, key, masks, _), model in zip(clients, held):
                if (id(model), key) not in seen:
                    if id(model) not in states:
                        states[id(model)] = model.to_torch_state_dict()
                    self.model.load_state_dict(masked(states[id(model)], masks))
                    seen[id(model), key] = evaluate(self.model, self.test_x, self.test_y)[0]
                scores.append((examples, seen[id(model), key]))
            device_accuracy = sum(n * a for n, a in scores) / sum(n for n, _ in scores)
        kept = sum(int(torch.count_nonzero(state[n])) for n in self.prunable)
        density = kept / sum(state[n].numel() for n in self.prunable)
        return Evaluation(accuracy, loss, device_accuracy, density)

    def fog_models(self, arrays: ArrayRecord, devices: list[int]) -> list[ArrayRecord]:
        """The model each device's node holds after the round: ``arrays`` without fog nodes or after
        a cloud round, its fog node's aggregate in between."""
        if not isinstance(self.strategy, strategies.Hierarchical) or not devices:
            return [arrays] * len(devices)
        return [self.strategy.model_of(int(node)) for node in self.spec.fog.of(devices)]

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

    def record(self, round_: int, evaluation: Evaluation, arrays: ArrayRecord, masks: list) -> dict:
        """Write the round's client rows and its row (and its fog nodes' rows); report the row."""
        wall_time_s = time.perf_counter() - self.clock
        clients = client_rows(self.spec, self.grid)
        if self.fog_rounds is None:
            row = round_row(round_, evaluation, clients, self.grid, wall_time_s)
            self.files.write_round(row, clients)
        else:
            fog_rows = self.fog_rounds.rows(round_, clients, masks, self.strategy, arrays)
            row = round_row(round_, evaluation, clients, self.grid, wall_time_s, fog_rows,
                            self.strategy.last_was_cloud)
            self.files.write_round(row, clients, fog_rows)
        if self.job.on_record is not None:
            self.job.on_record(row, clients)
        if self.on_round is not None:
            self.on_round(row)
        return row


class FogRounds:
    """``fog_nodes.csv``'s rows of a round: each fog node's clients, aggregate, traffic and time.

    A node's time is its slowest client that finished (whose transfers ran over the node's local
    link), plus its aggregation (2 FLOPs per entry it received: the kept entries of each upload and
    every entry of the tensors sent dense, over the node's FLOP/s), plus, in a cloud round, its
    wide-area upload (its model packed on its devices' masks since the last cloud round) and
    download (the cloud's model on the union of the last known masks of all its devices; dense if
    one of them has none yet, or with ``strategy.download: dense``). The cloud's own aggregation
    is not timed.
    """

    def __init__(self, end: RoundEnd, fog: FogLayer):
        self.end, self.fog = end, fog
        model = end.model
        self.params = sum(p.numel() for p in model.state_dict().values())
        self.prunable = sum(model.get_parameter(n).numel() for n in end.prunable)

    def rows(self, round_: int, clients: list[dict], client_masks: list, strategy: "strategies.Hierarchical",
             arrays: ArrayRecord) -> list[dict]:
        """``clients``: the round's client rows; ``client_masks``: ``RoundEnd.client_masks()``."""
        end = self.end
        count = len(self.fog)
        sampled = np.bincount(self.fog.of(end.grid.sampled), minlength=count) if end.grid.sampled else \
            np.zeros(count, dtype=np.int64)
        ok: dict[str, list[dict]] = {node.name: [] for node in self.fog.nodes}
        for c in clients:
            if not c["failed"]:
                ok[c["fog_node"]].append(c)
        masks = {device: m for _, _, m, device in client_masks}
        downloads = self.wan_downloads(arrays) if strategy.last_was_cloud else [0] * count
        rows = []
        for j, node in enumerate(self.fog.nodes):
            mine = ok[node.name]
            report = strategy.last_round[j] if strategy.last_round else None
            accuracy = loss = float("nan")
            if self.fog.evaluate and report is not None and report.model is not None:
                kept = union([masks[c["client_id"]] for c in mine if c["client_id"] in masks])
                end.model.load_state_dict(masked(report.model.to_torch_state_dict(), kept))
                accuracy, loss = evaluate(end.model, end.test_x, end.test_y)
            received = sum(c["density"] * self.prunable + self.params - self.prunable for c in mine)
            aggregation_s = 2.0 * received / node.profile.flops
            up = strategies.encoded_nbytes({k: a.numpy() for k, a in report.wan_upload.items()}) \
                if report is not None and report.wan_upload is not None else 0
            down = downloads[j]
            wan_s = cost.transfer_seconds(up, node.profile.uplink) + cost.transfer_seconds(down, node.profile.downlink)
            device_s = max((c["sim_time_s"] for c in mine), default=0.0)
            rows.append(asdict(FogRecord(
                round=round_, fog_node=node.name, profile=node.profile_name, devices=self.fog.devices[j],
                clients_sampled=int(sampled[j]), clients_ok=len(mine), examples=sum(c["num_examples"] for c in mine),
                accuracy=accuracy, loss=loss, upload_bytes=sum(c["upload_bytes"] for c in mine),
                download_bytes=sum(c["download_bytes"] for c in mine), wan_upload_bytes=up, wan_download_bytes=down,
                device_time_s=device_s, aggregation_s=aggregation_s, wan_time_s=wan_s,
                sim_time_s=device_s + aggregation_s + wan_s)))
        return rows

    def wan_downloads(self, arrays: ArrayRecord) -> list[int]:
        """Bytes each fog node receives from the cloud: the model on the union of its devices' masks."""
        dense_state = {k: a.numpy() for k, a in arrays.items()}
        dense = strategies.encoded_nbytes(dense_state)
        if self.end.spec.scenario.strategy.download == "dense":
            return [dense] * len(self.fog)
        states = self.end.grid.states
        held = states.mask_keys()
        keys = list(held.values())
        nodes = self.fog.of(np.fromiter(held, dtype=np.int64, count=len(held)))
        order = np.argsort(nodes, kind="stable")
        bounds = np.searchsorted(nodes[order], np.arange(len(self.fog) + 1))
        unpacked: dict[bytes, dict[str, np.ndarray]] = {}
        out = []
        for j in range(len(self.fog)):
            mine = order[bounds[j]:bounds[j + 1]]
            if len(mine) < self.fog.devices[j]:  # a device without a mask receives the dense model
                out.append(dense)
                continue
            kept = None
            for key in {keys[i] for i in mine}:
                if key not in unpacked:
                    unpacked[key] = unpack_masks(states.masks.get(key), self.end.shapes)
                kept = unpacked[key] if kept is None else {n: kept[n] | m for n, m in unpacked[key].items()}
            out.append(min(dense, strategies.encoded_nbytes(strategies.pack_masked_state(dense_state, kept))))
        return out


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
    on_record: Callable[[dict, list[dict]], None] | None = None  # (round's row, its clients' rows): trackers
    stop: threading.Event | None = None  # set from another thread to end the rounds at the next wait


def serve(grid: Grid, job: ServerJob) -> None:
    """Run the job's rounds with Flower's strategy over ``grid``'s ``job.nodes`` worker nodes."""
    scenario = job.spec.scenario

    def _on_reply(done: int, total: int) -> None:
        job.on_client(fog_grid.round, done, total)

    availability = job.spec.fleet.per_device([t.profile.availability for t in job.spec.fleet.tiers])
    fog_grid = FogGrid(grid, availability, scenario.fraction, scenario.seed, job.states, job.nodes,
                       on_reply=_on_reply if job.on_client is not None else None, stop=job.stop,
                       download=scenario.strategy.download,
                       node_of=job.spec.fog.of if job.spec.fog is not None else None)
    fog_grid.connect()
    initial = job.initial or ArrayRecord(
        build_model(scenario.model, job.data.input_shape, job.data.num_classes, seed=scenario.seed).state_dict())
    strategy = make_strategy(scenario.strategy)
    if job.spec.fog is not None:
        fog = job.spec.fog
        strategy = strategies.Hierarchical(strategy,
                                           make_strategy(scenario.strategy, fog_level=True), fog.of,
                                           len(fog), fog.cloud_every, scenario.rounds, device_of=fog_grid.device_of,
                                           sync_through=fog.sync_through)
    strategy.round_offset = job.first_round - 1
    if job.strategy_state:
        strategy.load_state_arrays(job.strategy_state)
    round_end = RoundEnd(job, fog_grid)
    round_end.strategy = strategy
    strategy.start(grid=fog_grid, initial_arrays=initial, num_rounds=scenario.rounds - job.first_round + 1,
                   evaluate_fn=round_end)


def make_strategy(settings, fog_level: bool = False) -> strategies.Resumable:
    """The scenario's strategy (``strategy`` section) over the fog: every node the fog shows is trained.

    ``fog_level``: the aggregation a fog node runs, the same without a server optimizer
    (``masked-fedavg`` with the scenario's rule, or Flower's ``fedavg``)."""
    weight_key = EXAMPLES_KEY if settings.weighting == "examples" else UNIFORM_WEIGHT_KEY
    name = settings.name
    if fog_level:
        name = "masked-fedavg" if name.startswith("masked-") else "fedavg"
    return strategies.build(
        name, rule=settings.rule, quorum=settings.quorum, server_lr=settings.server_lr,
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
