"""Benchmark: what fogsim's simulation adds over a bare Flower FedAvg run of the same fleet.

The brief asks that, on the same fleet with pruning off, fogsim's wall time be within 1.15x of a
bare Flower FedAvg run. In one process this runs, alternately (A, B, A, B, ...):

(A) **fogsim**: ``fogsim.sim.run.run`` on ``scenarios/overhead-dense.yaml`` (the three-tier
    fleet, ``pruning.method=dense``, ``strategy.name=fedavg``, budgets with room for dense
    training, availability 1, no failures), so every device trains in every round;
(B) **bare Flower**: a ``ClientApp`` / ``ServerApp`` written here directly against Flower's
    Message API: each client trains the same model (``fogsim.models.build_model``) on the same
    partition with a plain PyTorch loop (SGD, momentum 0.9, same lr, batch size and local
    epochs, same shuffling seeds), the server runs ``flwr.serverapp.strategy.FedAvg`` with an
    ``evaluate_fn`` that evaluates the global model on the test set every round, as fogsim
    does. It runs with ``run_simulation`` and fogsim's own ``backend_config`` (same Ray
    ``num_cpus``, same client resources), and clients set ``torch.set_num_threads(1)`` as
    fogsim's do.

Both use the same data: the driver loads it and splits it with fogsim's loaders
(``fogsim.data.load_dataset``, ``fogsim.sim.partition.partition_indices``, through
``fogsim.sim.run.prepare``) and each Ray worker loads its own copy once, through an
``lru_cache``, in both cases (fogsim's ``cached_dataset``, and ``worker_dataset`` here).

**Timed region** (``time.perf_counter`` in this process), the same for both:
* *to last round*: from the call of ``run`` / ``run_simulation`` to the end of the central
  evaluation of the last round (fogsim's ``on_round`` hook, the bare ``evaluate_fn``): Ray
  start-up, actor creation, each worker's dataset load, every round's training, transfer,
  aggregation and evaluation;
* *whole call*: to the return of the call, which adds Ray's shutdown and, for fogsim, the
  result files (summary.json, the three plots).
**Not timed**: importing packages, ``prepare`` (scenario validation, fleet planning, the
driver's dataset load and partitioning), which a bare run needs an equivalent of too.

The machine may be shared with other work; alternating A and B spreads that noise over both,
and the medians and their ratio are what to read.

    python benchmarks/flower_overhead.py --out results/overhead [--rounds 5] [--devices 10]
        [--repeats 2] [--dataset fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = REPO / "scenarios" / "overhead-dense.yaml"
OVERRIDES = ["pruning.method=dense", "strategy.name=fedavg"]


@dataclass
class Result:
    run: str            # "fogsim" or "bare"
    to_last_round_s: float
    wall_s: float
    accuracy: float     # the global model on the test set after the last round
    rounds: int


# --- the setup, shared by both runs ---------------------------------------------------------

def fleet_of(scenario_path: Path, devices: int) -> list[dict]:
    """The scenario's fleet entries rescaled to ``devices`` devices (largest remainder)."""
    import yaml

    fleet = yaml.safe_load(scenario_path.read_text())["fleet"]
    total = sum(e.get("count", 1) for e in fleet)
    exact = [devices * e.get("count", 1) / total for e in fleet]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(fleet)), key=lambda i: exact[i] - counts[i], reverse=True)[:devices - sum(counts)]:
        counts[i] += 1
    return [{**e, "count": c} for e, c in zip(fleet, counts) if c > 0]


def settings(scenario: str | Path = DEFAULT_SCENARIO, *, dataset: str | None = None, devices: int | None = None,
             rounds: int | None = None, epochs: float | None = None, extra: list[str] = ()) -> list[str]:
    """The ``--set`` assignments of the benchmark's fleet."""
    sets = list(OVERRIDES)
    if dataset is not None:
        sets.append(f"data.name={dataset}")
    if rounds is not None:
        sets.append(f"rounds={rounds}")
    if epochs is not None:
        sets.append(f"training.epochs={epochs}")
    if devices is not None:
        sets.append(f"fleet={json.dumps(fleet_of(Path(scenario), devices))}")
    return sets + list(extra)


def prepare_fleet(scenario: str | Path = DEFAULT_SCENARIO, **kwargs):
    """``fogsim.sim.run.prepare`` with the benchmark's overrides; checks pruning is really off."""
    from fogsim.sim.run import prepare

    prepared = prepare(scenario, settings(scenario, **kwargs))
    check_comparable(prepared)
    return prepared


def check_comparable(prepared) -> None:
    """Refuse a fleet on which fogsim and a bare FedAvg run would not train the same devices."""
    for tier in prepared.fleet.tiers:  # one per fleet entry, not one per device
        if tier.config.prunes or tier.profile.availability < 1 or tier.profile.failure_rate > 0:
            raise SystemExit(f"{tier.label}: the overhead benchmark needs pruning off, availability 1 and "
                             "no failures, so that both runs train the same devices")


# --- (A) fogsim -----------------------------------------------------------------------------

def run_fogsim(prepared, out: Path) -> Result:
    from fogsim.sim.run import run

    marks: list[float] = []
    start = time.perf_counter()
    summary = run(prepared, out, on_round=lambda row: marks.append(time.perf_counter()))
    wall = time.perf_counter() - start
    return Result("fogsim", marks[-1] - start, wall, float(summary["accuracy"]), len(marks))


# --- (B) bare Flower ------------------------------------------------------------------------

@lru_cache(maxsize=2)
def worker_dataset(name: str, root: str | None, download: bool, seed: int):
    """One copy of the dataset per Ray worker process (what fogsim's client does too)."""
    from fogsim.data import load_dataset

    return load_dataset(name, root=root, download=download, seed=seed)


def shuffle_seed(seed: int, round_: int, partition: int) -> int:
    return int(np.random.SeedSequence([seed, round_, partition]).generate_state(1)[0])


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            loss += float(torch.nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
            correct += int((out.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x), loss / len(x)


def local_train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int, batch_size: int,
                lr: float, weight_decay: float, generator: torch.Generator) -> float:
    """``samples`` samples of SGD with momentum 0.9 in shuffled passes over ``(x, y)``; mean loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    model.train()
    losses, done = [], 0
    order = torch.empty(0, dtype=torch.long)
    while done < samples:
        if len(order) == 0:
            order = torch.randperm(len(x), generator=generator)
        take = min(batch_size, samples - done, len(order))
        batch, order = order[:take], order[take:]
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        done += take
    return float(np.mean(losses))


def make_bare_client_app(prepared):
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fogsim.models import build_model

    s = prepared.scenario
    name, root, download, seed = s.data.name, s.data.root, s.data.download, s.seed
    model_name, t = s.model, s.training
    partitions = prepared.spec.partitions
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        round_ = int(msg.content["config"]["server-round"])
        data = worker_dataset(name, root, download, seed)
        rows = torch.from_numpy(partitions[pid])
        x, y = data.train_rows(rows), data.train_y[rows]
        model = build_model(model_name, data.input_shape, data.num_classes)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loss = local_train(model, x, y, int(round(t.epochs * len(x))), t.batch_size, t.lr, t.weight_decay,
                           torch.Generator().manual_seed(shuffle_seed(seed, round_, pid)))
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(x), "train-loss": loss})})
        return Message(content, reply_to=msg)

    return app


def make_bare_server_app(prepared, outcome: dict, clients: int | None = None):
    """Flower's FedAvg over one node per device, sampling ``clients`` of them per round (default: all).

    ``outcome`` receives per round ``rounds`` (accuracy, loss), ``marks`` (``perf_counter`` at the
    end of the round's central evaluation) and ``replies`` (clients aggregated), plus ``round0``
    (the strategy's round-0 evaluation call, just before round 1's sampling) and ``first_push``
    (when round 1's training messages had been handed to Flower's engine)."""
    from flwr.app import ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

    from fogsim.models import build_model

    s, data = prepared.scenario, prepared.data
    test_x, test_y = data.test_x, data.test_y
    if s.evaluation.test_samples is not None:
        test_x, test_y = test_x[:s.evaluation.test_samples], test_y[:s.evaluation.test_samples]
    nodes = len(prepared.fleet)
    clients = nodes if clients is None else clients
    outcome.update(rounds=[], marks=[], replies=[], round0=None, first_push=None)
    app = ServerApp()

    def _train_metrics(records, weighting_key: str) -> MetricRecord:
        outcome["replies"].append(len(records))  # FedAvg drops failed replies silently; count the good ones
        return aggregate_metricrecords(records, weighting_key)

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        push = grid.push_messages

        def _push_messages(messages):  # time stamp only: Flower's own push, unchanged
            ids = push(messages)
            if outcome["first_push"] is None:
                outcome["first_push"] = time.perf_counter()
            return ids

        grid.push_messages = _push_messages  # the Grid's send_and_receive pushes through this attribute

        def _evaluate(round_: int, arrays: ArrayRecord) -> MetricRecord | None:
            if round_ == 0:
                outcome["round0"] = time.perf_counter()
                return None
            model = build_model(s.model, data.input_shape, data.num_classes)
            model.load_state_dict(arrays.to_torch_state_dict())
            accuracy, loss = evaluate(model, test_x, test_y)
            outcome["rounds"].append({"round": round_, "accuracy": accuracy, "loss": loss})
            outcome["marks"].append(time.perf_counter())
            return MetricRecord({"accuracy": accuracy, "loss": loss})

        # Flower's own sampling: int(nodes * fraction_train) nodes, at least min_train_nodes.
        strategy = FedAvg(fraction_train=clients / nodes, fraction_evaluate=0.0, min_train_nodes=clients,
                          min_evaluate_nodes=0, min_available_nodes=nodes, train_metrics_aggr_fn=_train_metrics)
        initial = build_model(s.model, data.input_shape, data.num_classes, seed=s.seed)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial.state_dict()), num_rounds=s.rounds,
                       evaluate_fn=_evaluate)

    return app


def run_bare(prepared, clients: int | None = None, outcome: dict | None = None) -> Result:
    """The same fleet as plain Flower: its own ClientApp and ServerApp, fogsim's backend_config.

    One Flower node per device (``num_supernodes`` = fleet size, node ``i`` trains partition ``i``),
    as Flower's own simulation examples do; ``clients`` sampled per round by Flower's FedAvg (default:
    every device). ``outcome``, if given, receives the server's time stamps (``make_bare_server_app``)."""
    from fogsim.sim.run import backend_config, quiet_flower

    quiet_flower()  # the same telemetry and log settings fogsim runs with
    from flwr.simulation import run_simulation

    outcome = {} if outcome is None else outcome
    devices = len(prepared.fleet)
    clients = devices if clients is None else clients
    start = time.perf_counter()
    outcome["start"] = start
    run_simulation(server_app=make_bare_server_app(prepared, outcome, clients),
                   client_app=make_bare_client_app(prepared), num_supernodes=devices,
                   backend_config=backend_config(prepared.scenario))
    wall = time.perf_counter() - start
    if len(outcome["rounds"]) != prepared.scenario.rounds:
        raise RuntimeError(f"the bare run ended after {len(outcome['rounds'])} of {prepared.scenario.rounds} rounds")
    if any(n != clients for n in outcome["replies"]):
        raise RuntimeError(f"the bare run trained {outcome['replies']} clients per round, not "
                           f"{clients}: a client failed, the timing is not comparable")
    return Result("bare", outcome["marks"][-1] - start, wall, outcome["rounds"][-1]["accuracy"],
                  len(outcome["rounds"]))


# --- the table ------------------------------------------------------------------------------

LABELS = {"fogsim": "fogsim (A)", "bare": "bare Flower FedAvg (B)"}


def table(results: list[Result]) -> str:
    """One row per run and a ratio row: per repetition, the ratio of each A to the B run after it."""
    def cell(values: list[float], digits: int = 1) -> str:
        return " / ".join(f"{v:.{digits}f}" for v in values)

    runs = {key: [r for r in results if r.run == key] for key in ("fogsim", "bare")}
    lines = ["| run | wall time per repetition (s) | median wall (s) | to last round per repetition (s) | "
             "median to last round (s) | final accuracy |",
             "|---|---|---|---|---|---|"]
    med = {}
    for key, group in runs.items():
        med[key] = (statistics.median(r.wall_s for r in group), statistics.median(r.to_last_round_s for r in group))
        lines.append(f"| {LABELS[key]} | {cell([r.wall_s for r in group])} | {med[key][0]:.1f} | "
                     f"{cell([r.to_last_round_s for r in group])} | {med[key][1]:.1f} | "
                     f"{cell([r.accuracy for r in group], 4)} |")
    pairs = list(zip(runs["fogsim"], runs["bare"]))
    lines.append(f"| **ratio fogsim / bare** | {cell([a.wall_s / b.wall_s for a, b in pairs], 3)} | "
                 f"**{med['fogsim'][0] / med['bare'][0]:.3f}x** | "
                 f"{cell([a.to_last_round_s / b.to_last_round_s for a, b in pairs], 3)} | "
                 f"**{med['fogsim'][1] / med['bare'][1]:.3f}x** | |")
    return "\n".join(lines) + ("\n\nRatio row: per repetition, fogsim's run over the bare run that followed it; "
                                "the medians' ratio in bold.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for overhead.md and fogsim's run files")
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=1.0, help="local epochs per round")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions of each run (at least 2)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="more scenario overrides, applied to both runs")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2")

    prepared = prepare_fleet(args.scenario, dataset=args.dataset, devices=args.devices, rounds=args.rounds,
                             epochs=args.epochs, extra=args.sets)
    s = prepared.scenario
    held = [args.out / "runs" / f"fogsim-{rep}" for rep in range(1, args.repeats + 1)]
    if any(d.exists() and any(d.iterdir()) for d in held):  # fogsim does not write into an existing run
        parser.error(f"--out {args.out}: already holds runs of an earlier invocation; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for rep in range(1, args.repeats + 1):
        for key in ("fogsim", "bare"):
            result = run_fogsim(prepared, args.out / "runs" / f"fogsim-{rep}") if key == "fogsim" \
                else run_bare(prepared)
            results.append(result)
            print(f"rep {rep} {key:6s}: to last round {result.to_last_round_s:6.1f} s, whole call "
                  f"{result.wall_s:6.1f} s, accuracy {result.accuracy:.4f}", flush=True)

    command = "python benchmarks/flower_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (f"# fogsim vs bare Flower FedAvg, pruning off\n\n"
              f"`{command}`\n\n"
              f"{s.data.name}, {s.model}, {len(prepared.fleet)} devices ({s.data.partition.kind} split), "
              f"{s.rounds} rounds, {s.training.epochs:g} local epoch(s), batch {s.training.batch_size}, "
              f"lr {s.training.lr:g}, momentum 0.9; Ray num_cpus {s.simulation.num_cpus}, "
              f"{s.simulation.client_cpus:g} CPU per client; runs alternated A, B, A, B, ... "
              f"({args.repeats} each).\n\n")
    text = header + table(results) + "\n"
    print("\n" + text)
    (args.out / "overhead.md").write_text(text)
    (args.out / "overhead.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    # Run the copy of this module imported by name, not ``__main__``: Ray's workers then import it
    # (Flower passes the driver's sys.path on), so ``worker_dataset``'s cache lives in the worker.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(1, str(REPO))
    import flower_overhead

    raise SystemExit(flower_overhead.main())
