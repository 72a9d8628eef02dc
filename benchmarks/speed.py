"""Benchmark: the wall time of a federated round in fogsim, against plain PyTorch and pfl-research.

**The workload**, the same for every contender: Fashion-MNIST (Debian's files, loaded and
standardised by ``fogsim.data.load_dataset``), the 784-300-100-10 MLP (``build_model("mlp")``, seed
0), every device drawing its own 100 training samples (fogsim's ``per_device`` draw, so every
contender trains a device on the same rows), one local epoch, batch 32, SGD with momentum 0.9 and
lr 0.05 (a fresh optimizer per client), FedAvg weighted by samples, and central evaluation of the
global model on the first 1,000 test images after every round. Setting A: 1,000 devices, 100
clients a round; B (``--large``): 10,000 devices, 1,000 clients a round. 6 rounds by default.

**The contenders** (one table row each):

* *floor*: plain PyTorch in one process, no framework. Per round, for each sampled client: load
  the global weights into one model, train one epoch (shuffled) with a fresh optimizer, add
  ``n_k * weights`` to a running sum; then average and evaluate. The least a round can cost here.
  (Its set-up builds one optimizer before round 1, as pfl's does: PyTorch imports its compiler
  stack, about a second, when the first optimizer is built.)
* *pfl 1 process* / *pfl 2 processes*: Apple's pfl-research (``pip install -e '.[bench]'``),
  ``FederatedAveraging`` with a ``PyTorchModel`` on a ``FederatedDataset`` of one user per device
  (``minimize_reuse`` sampling), ``SimulatedBackend`` with ``WeightByDatapoints``, a central SGD of
  lr 1 (plain FedAvg), ``CentralEvaluationCallback`` every round. pfl's per-user evaluation before
  and after local training (its ``do_evaluation`` iterations) is turned off, as the other
  contenders do not do it, and its metrics are not printed. On the CPU (``PFL_PYTORCH_DEVICE=cpu``).
  pfl walks a user's samples in order (its ``Dataset`` does not shuffle) and evaluates the initial
  model before its first iteration (set-up, not round 1). Two processes: the same worker under
  ``python -m torch.distributed.run --standalone --nproc_per_node=2``, pfl's own multi-process
  simulation (each rank trains its share of the cohort and evaluates its share of the test
  images; the sums are all-reduced over gloo).
* *fogsim, pruning off / on*: ``fogsim.api.run_scenario`` on a scenario this script writes into
  ``--out`` (as ``benchmarks/fleet_scale.py`` builds it: one tier of ``rpi-zero-2w``, always
  available, never failing, ``fraction`` = clients / devices, no per-device-mask evaluation). Off:
  ``dense`` and Flower's ``fedavg``; on: ``dynhp`` at 10x and ``masked-fedavg`` (the batch grows
  up to 64 in the budget). One row per ``--engines`` value (``simulation.engine``: ``ray`` runs
  Flower's simulation engine with ``--num-cpus`` CPUs, one client per CPU; ``local`` runs in-process).
* ``--quickstart [N]``: the whole command ``fogsim run scenarios/quickstart.yaml --out TMP --quiet``,
  N times (default 3), median. ``--suite``: ``python -m pytest -q -x`` and
  ``python -m pytest -q -m "not slow"``, once each (the row says "failed" if pytest did).

**How it is measured.** Every contender runs in its own process (this script, re-invoked with a
hidden ``--worker``; pfl 2 processes under torchrun; the commands as they are), so imports and peak
memory are its own and none warms another. The runs alternate round-robin across ``--reps``
passes (floor, pfl 1, pfl 2, fogsim ..., then again), so machine noise falls on all alike.

* *round*: wall time from the end of one round's central evaluation to the end of the next's
  (round 1: from the start of training). floor: its own clock; pfl: a ``TrainingProcessCallback``
  after the central evaluation callback (rank 0's); fogsim: ``rounds.csv``'s ``wall_time_s``.
  *Median round* is the median over the rounds of a run; *round 1* is the first (it holds warm-up:
  fogsim's Ray workers import PyTorch and load the data then).
* *whole run*: from launching the contender's process to its exit: interpreter start, imports,
  data loading, every round, result files, shut-down (Ray's included).
* *peak memory*: the largest sum of the resident set sizes of the contender's process and all its
  descendants (Ray's raylet, GCS and workers; torchrun's ranks), sampled from ``/proc`` every
  ``--sample-interval`` s (an upper bound where processes share pages; a spike between two
  samples can be missed). MiB = 2^20 bytes.
* *threads*: every contender's processes get ``OMP_NUM_THREADS`` = ``--threads`` (1): one thread per
  process, as Ray and torchrun give their workers and fogsim's workers train with. PyTorch's
  default (one thread per core) makes this small MLP several times slower as soon as another
  process wants a core.
* *vs floor*, *vs pfl*: a row's median round and whole run over the floor's, and over the pfl row
  with the same number of client-training processes (fogsim on Ray with 2 CPUs: pfl 2 processes).

With ``--reps`` > 1 the table shows each contender's median over the passes (memory: the largest).
The machine may be shared: read the ratios within one run.

    python benchmarks/speed.py --out results/speed [--large] [--rounds 6] [--reps 1]
        [--engines ray,local] [--only floor,pfl,fogsim-off] [--threads 1] [--quickstart [N]] [--suite]

Writes ``results.md`` (the table, as printed), ``summary.csv`` (the table's rows), ``runs.csv`` (one
row per run) and ``results.json`` (all of it, with the command, the workload and the package
versions) to ``--out``, next to the two scenario files; each run's command, spec, output, log and
fogsim run directory are under ``--out/runs/<contender>-<pass>/``. Progress on stderr. A missing dataset or package is one line
on stderr and exit status 2; a contender that fails is marked in the table (see its ``log.txt``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from proctree import Sampler, read, rss

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
QUICKSTART = "scenarios/quickstart.yaml"
RUN_DIR = "{run_dir}"  # in a command's argv: the run's own directory under --out/runs

SETTINGS = {"A": (1_000, 100), "B": (10_000, 1_000)}  # devices, clients per round
EPOCHS, BATCH, LR, MOMENTUM = 1, 32, 0.05, 0.9
BATCH_MAX = 64  # fogsim pruning on: the batch DynHP may grow to in its budget (as fleet_scale.py)
PFL_MISSING = "pfl is not installed: pip install -e '.[bench]'"
PFL_ACCURACY = "Central val | accuracy"  # CentralEvaluationCallback's default metric name
MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix (a missing package or dataset, a bad option): one line, exit 2."""


@dataclass(frozen=True)
class Workload:
    """What every contender trains; written into each worker's spec."""

    dataset: str = "fashion-mnist"
    devices: int = 1_000
    clients: int = 100
    rounds: int = 6
    per_device: int = 100
    test_samples: int = 1_000
    seed: int = 0


@dataclass(frozen=True)
class Contender:
    """One row: ``key`` is what ``--only`` names; ``kind`` the worker (or ``command``) that runs it."""

    key: str
    label: str
    kind: str  # floor, pfl, fogsim, command
    processes: int | None = None  # processes that train clients (None: not a workload row)
    pruning: bool = False  # fogsim
    engine: str | None = None  # fogsim
    argv: tuple[str, ...] = ()  # command


# --- the contenders and the plan ------------------------------------------------------------------

def contenders(engines: list[str], num_cpus: int, quickstart: bool, suite: bool) -> list[Contender]:
    """Every row this invocation could run, in the order of a pass."""
    rows = [Contender("floor", "floor (plain PyTorch)", "floor", 1),
            Contender("pfl-1", "pfl 1 process", "pfl", 1),
            Contender("pfl-2", "pfl 2 processes", "pfl", 2)]
    for pruning in (False, True):
        for engine in engines:
            state = "on" if pruning else "off"
            rows.append(Contender(f"fogsim-{state}-{engine}", f"fogsim, pruning {state} ({engine})", "fogsim",
                                  num_cpus if engine == "ray" else 1, pruning, engine))
    if quickstart:
        rows.append(Contender("quickstart", f"fogsim run {QUICKSTART} (whole command)", "command",
                              argv=(*fogsim_command(), "run", QUICKSTART, "--out", RUN_DIR, "--quiet")))
    if suite:
        rows.append(Contender("suite", "test suite: pytest -q -x", "command",
                              argv=(sys.executable, "-m", "pytest", "-q", "-x")))
        rows.append(Contender("suite-fast", 'test suite: pytest -q -m "not slow"', "command",
                              argv=(sys.executable, "-m", "pytest", "-q", "-m", "not slow")))
    return rows


def fogsim_command() -> tuple[str, ...]:
    """The ``fogsim`` command of this interpreter's environment (``python -m fogsim`` without one)."""
    script = Path(sys.executable).parent / "fogsim"
    return (str(script),) if script.exists() else (sys.executable, "-m", "fogsim")


def select(rows: list[Contender], only: list[str] | None) -> list[Contender]:
    """The rows ``--only`` names: a key, or the start of keys (``pfl``, ``fogsim-off``, ``suite``)."""
    if not only:
        return rows
    for name in only:
        if not any(_named(row.key, name) for row in rows):
            raise UserError(f"--only {name}: no such contender here; choose from "
                            f"{', '.join(row.key for row in rows)} (quickstart and suite need --quickstart / --suite)")
    return [row for row in rows if any(_named(row.key, name) for name in only)]


def _named(key: str, name: str) -> bool:
    return key == name or key.startswith(name + "-")


def plan(rows: list[Contender], counts: dict[str, int]) -> list[tuple[int, Contender]]:
    """Round-robin: pass 1 runs every row once, pass 2 again, ...; a row stops after its count."""
    passes = max((counts[row.key] for row in rows), default=0)
    return [(rep, row) for rep in range(1, passes + 1) for row in rows if counts[row.key] >= rep]


def counts_for(rows: list[Contender], reps: int, quickstart: int) -> dict[str, int]:
    """How many times each row runs: the workload rows ``reps``, the quick start ``quickstart``, the suite once."""
    return {row.key: quickstart if row.key == "quickstart" else 1 if row.kind == "command" else reps for row in rows}


def engine_sets(engine: str, known: bool) -> list[str]:
    """The ``--set`` strings that pick ``engine``; ``known``: the scenario schema has ``simulation.engine``."""
    if known:
        return [f"simulation.engine={engine}"]
    if engine == "ray":
        return []  # Ray is what a fogsim without the key runs
    raise UserError(f"--engines {engine}: this fogsim has no simulation.engine setting (it always runs on Ray); "
                    "use --engines ray")


def scenario_dict(workload: Workload, pruning: bool, num_cpus: int) -> dict:
    """fogsim's scenario of the workload (as benchmarks/fleet_scale.py builds it)."""
    return {
        "name": f"speed-pruning-{'on' if pruning else 'off'}",
        "seed": workload.seed,
        "data": {"name": workload.dataset, "partition": {"kind": "iid", "per_device": workload.per_device}},
        "model": "mlp",
        "rounds": workload.rounds,
        "fraction": workload.clients / workload.devices,
        "training": {"epochs": EPOCHS, "optimizer": "momentum", "lr": LR, "batch_size": BATCH,
                     "batch_max": BATCH_MAX},
        "pruning": {"method": "dynhp", "compression": 10} if pruning else {"method": "dense", "compression": 1},
        "strategy": {"name": "masked-fedavg" if pruning else "fedavg"},
        "fleet": [{"profile": "rpi-zero-2w", "count": workload.devices,
                   "overrides": {"availability": 1.0, "failure_rate": 0.0}}],
        "evaluation": {"test_samples": workload.test_samples, "device_masks": False},
        "simulation": {"num_cpus": num_cpus, "client_cpus": 1.0},
    }


def write_scenarios(out: Path, workload: Workload, num_cpus: int) -> dict[bool, Path]:
    """The two scenario files (pruning off, on) in ``out``."""
    import yaml

    paths = {}
    for pruning in (False, True):
        paths[pruning] = out / f"scenario-pruning-{'on' if pruning else 'off'}.yaml"
        paths[pruning].write_text(yaml.safe_dump(scenario_dict(workload, pruning, num_cpus), sort_keys=False))
    return paths


def check_fogsim(rows: list[Contender], scenarios: dict[bool, Path], workload: Workload) -> dict[str, list[str]]:
    """Each fogsim row's ``--set`` strings, after fogsim's own checks of its scenario (no data loaded)."""
    from fogsim.errors import FogsimError
    from fogsim.sim import draws
    from fogsim.sim.scenario import Simulation, load_scenario

    sets = {}
    for row in rows:
        if row.kind != "fogsim":
            continue
        sets[row.key] = engine_sets(row.engine, "engine" in Simulation.model_fields)
        try:
            scenario = load_scenario(scenarios[row.pruning], sets[row.key])
        except FogsimError as error:
            raise UserError(f"{row.label}: {error}") from None
        sampled = draws.most_sampled(workload.devices, scenario.fraction)
        if sampled != workload.clients:
            raise UserError(f"fogsim samples {sampled} of {workload.devices} devices a round, not {workload.clients}")
    return sets


def check_pfl(rows: list[Contender]) -> None:
    if any(row.kind == "pfl" for row in rows) and importlib.util.find_spec("pfl") is None:
        raise UserError(PFL_MISSING)


# --- the workers: one contender's run, in its own process -----------------------------------------

def load_workload(workload: Workload):
    """The dataset (every contender's tensors) and fogsim's per-device rows of it."""
    from fogsim.data import load_dataset
    from fogsim.sim.partition import partition_indices
    from fogsim.sim.scenario import Partition

    data = load_dataset(workload.dataset, seed=workload.seed)
    rows = partition_indices(data.train_y.numpy(), Partition(kind="iid", per_device=workload.per_device),
                             workload.devices, workload.seed)
    return data, rows


def client_data(data, rows, device: int):
    import torch

    index = torch.from_numpy(rows[int(device)])
    return data.train_rows(index), data.train_y[index]


def train_one_epoch(model, x, y) -> None:
    """One shuffled epoch of batch ``BATCH`` with a fresh SGD-momentum optimizer."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    model.train()
    order = torch.randperm(len(y))
    for start in range(0, len(y), BATCH):
        batch = order[start:start + BATCH]
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()


def accuracy_of(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def floor_worker(workload: Workload, spec: dict | None = None) -> dict:
    """Plain PyTorch: FedAvg's rounds written out, one model reused for every client."""
    import numpy as np
    import torch

    from fogsim.models import build_model

    data, rows = load_workload(workload)
    torch.manual_seed(workload.seed)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=workload.seed)
    test_x, test_y = data.test_x[:workload.test_samples], data.test_y[:workload.test_samples]
    torch.optim.SGD(model.parameters(), lr=LR)  # PyTorch's first optimizer imports torch._dynamo (~1 s): in set-up
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    sampler = np.random.default_rng(workload.seed)
    result: dict = {"ready": time.time(), "round_wall_s": []}
    for _ in range(workload.rounds):
        start = time.perf_counter()
        total = {name: torch.zeros_like(value) for name, value in state.items()}
        examples = 0
        for device in sampler.choice(workload.devices, workload.clients, replace=False):
            model.load_state_dict(state)
            x, y = client_data(data, rows, device)
            train_one_epoch(model, x, y)
            for name, value in model.state_dict().items():
                total[name].add_(value, alpha=len(y))
            examples += len(y)
        state = {name: value / examples for name, value in total.items()}
        model.load_state_dict(state)
        result["accuracy"] = accuracy_of(model, test_x, test_y)
        result["round_wall_s"].append(time.perf_counter() - start)
        result["last_round_end"] = time.time()
    return result


def pfl_worker(workload: Workload, spec: dict | None = None) -> dict | None:
    """pfl-research's FederatedAveraging on the workload; under torchrun, one rank of it (rank 0 reports)."""
    if importlib.util.find_spec("pfl") is None:
        raise UserError(PFL_MISSING)
    os.environ.setdefault("PFL_PYTORCH_DEVICE", "cpu")  # the other contenders train on the CPU
    import functools

    import numpy as np
    import torch

    # The same seeds on every rank: pfl's samplers must draw the same cohorts everywhere.
    np.random.seed(workload.seed)
    torch.manual_seed(workload.seed)
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.central_evaluation import CentralEvaluationCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.model.pytorch import PyTorchModel

    from fogsim.models import build_model

    data, rows = load_workload(workload)

    def user_dataset(device: int) -> Dataset:
        return Dataset(client_data(data, rows, device), user_id=device)

    users = FederatedDataset(user_dataset, get_user_sampler("minimize_reuse", list(range(workload.devices))))
    test = Dataset((data.test_x[:workload.test_samples], data.test_y[:workload.test_samples]))
    module = pfl_module(build_model("mlp", data.input_shape, data.num_classes, seed=workload.seed))
    model = PyTorchModel(model=module,
                         local_optimizer_create=functools.partial(torch.optim.SGD, momentum=MOMENTUM),
                         central_optimizer=torch.optim.SGD(module.parameters(), lr=1.0))
    clock = pfl_clock()
    eval_params = NNEvalHyperParams(local_batch_size=None)
    pfl_fedavg_without_user_evaluation(FederatedAveraging)().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=workload.rounds, evaluation_frequency=1,
                                           train_cohort_size=workload.clients, val_cohort_size=None),
        backend=SimulatedBackend(training_data=users, val_data=None, postprocessors=[WeightByDatapoints()]),
        model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=LR, local_num_epochs=EPOCHS,
                                              local_batch_size=BATCH),
        model_eval_params=eval_params,
        callbacks=[CentralEvaluationCallback(test, model_eval_params=eval_params, frequency=1), clock],
        send_metrics_to_platform=False)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return {"ready": clock.ready, "round_wall_s": clock.rounds, "accuracy": clock.accuracy,
            "last_round_end": clock.last_round_end}


def pfl_module(net):
    """fogsim's network with the ``loss`` and ``metrics`` methods pfl's PyTorchModel calls."""
    import torch
    from pfl.metrics import Weighted

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

        def loss(self, x, y):
            self.train()
            return torch.nn.functional.cross_entropy(self(x), y)

        @torch.no_grad()
        def metrics(self, x, y):
            self.eval()
            out = self(x)
            return {"loss": Weighted(float(torch.nn.functional.cross_entropy(out, y, reduction="sum")), len(y)),
                    "accuracy": Weighted(float((out.argmax(dim=1) == y).sum()), len(y))}

    return Classifier()


def pfl_clock():
    """A pfl callback that records each central iteration's wall time (after the central evaluation)."""
    from pfl.callback.base import TrainingProcessCallback
    from pfl.metrics import Metrics

    class Clock(TrainingProcessCallback):
        def __init__(self):
            self.rounds: list[float] = []
            self.accuracy = self.ready = self.last_round_end = self._last = None

        def on_train_begin(self, *, model) -> Metrics:
            self.ready, self._last = time.time(), time.perf_counter()
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            now = time.perf_counter()
            self.rounds.append(now - self._last)
            self._last, self.last_round_end = now, time.time()
            self.accuracy = aggregate_metrics.to_simple_dict().get(PFL_ACCURACY)
            return False, Metrics()

    return Clock()


def pfl_fedavg_without_user_evaluation(fedavg):
    """pfl's FederatedAveraging without its per-user evaluation before and after local training."""

    class FedAvg(fedavg):
        def get_next_central_contexts(self, *args, **kwargs):
            contexts, model, metrics = super().get_next_central_contexts(*args, **kwargs)
            if contexts is not None:
                contexts = tuple(dataclasses.replace(context, do_evaluation=False) for context in contexts)
            return contexts, model, metrics

    return FedAvg


def fogsim_worker(workload: Workload, spec: dict) -> dict:
    """fogsim through its Python API on the scenario the parent wrote."""
    from fogsim.api import run_scenario

    ends: list[float] = []
    summary = run_scenario(spec["scenario"], spec["sets"], out=spec["run_dir"],
                           on_round=lambda row: ends.append(time.time()))
    with open(Path(summary["run_dir"]) / "rounds.csv", newline="") as f:
        rounds = list(csv.DictReader(f))
    trained = [int(row["clients_ok"]) for row in rounds]
    if trained != [workload.clients] * workload.rounds:
        raise RuntimeError(f"fogsim trained {trained} clients a round, not {workload.clients} in each of "
                           f"{workload.rounds} rounds")
    return {"round_wall_s": [float(row["wall_time_s"]) for row in rounds], "accuracy": float(summary["accuracy"]),
            "last_round_end": ends[-1] if ends else None}


WORKERS = {"floor": floor_worker, "pfl": pfl_worker, "fogsim": fogsim_worker}


def worker_main(kind: str, spec_path: Path) -> int:
    """A worker process: run one contender, print one JSON line (``{"worker": ..., ...}``) on stdout."""
    started = time.time()
    spec = json.loads(spec_path.read_text())
    from fogsim.errors import FogsimError

    try:
        result = WORKERS[kind](Workload(**spec["workload"]), spec)
    except (UserError, FogsimError) as error:  # a bad input: exit 2; fogsim's failed simulation: its own code
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USER_ERROR)
    if result is not None:
        import resource

        result.update(worker=kind, started=started,
                      self_peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        print(json.dumps(result), flush=True)
    return 0


def worker_result(stdout: str) -> dict | None:
    """The worker's JSON line: the last line of its stdout that is a JSON object with ``worker``."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(found, dict) and "worker" in found:
                return found
    return None


# --- the parent: launch a run, watch its memory ---------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc/<pid>/stat."""
    text = read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19])


class TreeMemory(Sampler):
    """The peak of the summed RSS of a process and its descendants, sampled from /proc.

    A descendant once seen is counted while it lives, even if it is re-parented (a daemon).
    """

    def __init__(self, root: int, interval: float):
        super().__init__(root, interval)
        self.peak = 0
        self.seen: dict[int, int] = {}  # pid -> start time (a reused pid is another process)

    def alive(self) -> set[int]:
        children: dict[int, list[int]] = {}
        starts: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat:
                    children.setdefault(stat[0], []).append(int(entry.name))
                    starts[int(entry.name)] = stat[1]
        tree, todo = set(), [self.root]
        while todo:
            pid = todo.pop()
            if pid in starts and pid not in tree:
                tree.add(pid)
                todo += children.get(pid, [])
        for pid in tree:
            self.seen.setdefault(pid, starts[pid])
        return tree | {pid for pid, start in self.seen.items() if starts.get(pid) == start}

    def sample(self) -> None:
        self.peak = max(self.peak, sum(rss(pid) for pid in self.alive()))

    def leftovers(self) -> set[int]:
        """Descendants still alive after the root has exited."""
        return self.alive() - {self.root}


def reap(memory: TreeMemory, grace: float = 3.0) -> list[str]:
    """Descendants left once the root exited (Ray's, shutting down): ``grace`` s to end, then killed;
    their names."""
    deadline = time.time() + grace
    while (left := memory.leftovers()) and time.time() < deadline:
        time.sleep(0.1)
    names = sorted((read(f"/proc/{pid}/comm") or "?").strip() for pid in left)
    stop_processes(left)
    return names


def stop_processes(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def command_for(row: Contender, directory: Path, workload: Workload, scenarios: dict[bool, Path],
                sets: dict[str, list[str]], threads: int) -> tuple[list[str], dict]:
    """The command line and environment of one run (a worker's spec is written into ``directory``)."""
    env = dict(os.environ)
    if row.kind == "command":
        return [str(directory / "run") if part == RUN_DIR else part for part in row.argv], env
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    spec = {"workload": asdict(workload), "run_dir": str(directory / "run")}
    if row.kind == "fogsim":
        spec.update(scenario=str(scenarios[row.pruning]), sets=sets[row.key])
    (directory / "spec.json").write_text(json.dumps(spec, indent=1))
    command = [str(THIS), "--worker", row.kind, "--spec", str(directory / "spec.json")]
    if row.kind != "pfl":
        return [sys.executable, *command], env
    env["PFL_PYTORCH_DEVICE"] = "cpu"
    if row.processes == 1:
        return [sys.executable, *command], env
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={row.processes}", *command], env


def launch(row: Contender, rep: int, directory: Path, workload: Workload, scenarios: dict[bool, Path],
           sets: dict[str, list[str]], args: argparse.Namespace) -> dict:
    """Run one contender once in its own process, watching its memory; its row of ``runs.csv``."""
    directory.mkdir(parents=True, exist_ok=True)
    command, env = command_for(row, directory, workload, scenarios, sets, args.threads)
    (directory / "command.txt").write_text(" ".join(command) + "\n")
    status, rc = "ok", None
    with open(directory / "stdout.txt", "w") as out, open(directory / "log.txt", "w") as err:
        launched = time.time()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
        memory = TreeMemory(process.pid, args.sample_interval)
        memory.start()
        try:
            rc = process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            status = "timeout"
        except KeyboardInterrupt:
            stop_processes(memory.alive())
            process.wait()
            raise
        finally:
            ended = time.time()
            memory.stop.set()
            memory.join()
        if status != "ok":
            stop_processes(memory.alive())
        left = reap(memory)
        process.wait()
    if rc == EXIT_USER_ERROR and row.kind != "command":
        lines = (directory / "log.txt").read_text(errors="replace").strip().splitlines()
        raise UserError(f"{row.label}: {lines[-1].removeprefix('error: ') if lines else 'failed'}")
    if status == "ok" and rc != 0:
        status = f"failed (exit {rc})"
    result = worker_result((directory / "stdout.txt").read_text(errors="replace")) or {}
    if row.kind != "command" and status == "ok" and not result:
        status = "failed (no result)"
    return run_row(row, rep, status, launched, ended, memory.peak, result, directory, left)


def run_row(row: Contender, rep: int, status: str, launched: float, ended: float, peak: int, result: dict,
            directory: Path, leftovers: list[str] = ()) -> dict:
    rounds = result.get("round_wall_s") or []
    peak = max(peak, result.get("self_peak_rss") or 0)
    last = result.get("last_round_end")
    return {
        "key": row.key, "contender": row.label, "processes": row.processes, "repetition": rep, "status": status,
        "median_round_s": statistics.median(rounds) if rounds else None,
        "round1_s": rounds[0] if rounds else None,
        "whole_run_s": ended - launched,
        "to_last_round_s": last - launched if last else None,
        "start_to_round1_s": result["ready"] - launched if result.get("ready") else None,
        "peak_memory_mib": peak / MIB if peak else None,
        "accuracy": result.get("accuracy"),
        "round_wall_s": " / ".join(f"{r:.3f}" for r in rounds),
        "killed_leftovers": " ".join(leftovers),  # descendants still running 3 s after the exit
        "directory": str(directory),
    }


# --- the table ------------------------------------------------------------------------------------

def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: list[dict], rows: list[Contender]) -> list[dict]:
    """One row per contender (medians over its passes, memory the largest), with the ratios."""
    summary = []
    for row in rows:
        group = [r for r in runs if r["key"] == row.key]
        if not group:
            continue
        ok = [r for r in group if r["status"] == "ok"]
        failed = sorted({r["status"] for r in group} - {"ok"})
        summary.append({
            "key": row.key, "contender": row.label, "kind": row.kind, "processes": row.processes,
            "runs": len(group), "failed": ", ".join(failed),
            "median_round_s": _median(r["median_round_s"] for r in ok),
            "round1_s": _median(r["round1_s"] for r in ok),
            "whole_run_s": _median(r["whole_run_s"] for r in ok),
            "peak_memory_mib": max((r["peak_memory_mib"] for r in ok if r["peak_memory_mib"]), default=None),
            "accuracy": _median(r["accuracy"] for r in ok),
        })
    add_ratios(summary)
    return summary


def add_ratios(summary: list[dict]) -> None:
    """``*_vs_floor`` and ``*_vs_pfl`` (the pfl row with the same processes) of every workload row."""
    floor = next((s for s in summary if s["key"] == "floor"), None)
    for s in summary:
        pfl = next((p for p in summary if p["kind"] == "pfl" and p["processes"] == s["processes"]), None)
        for base, name in ((floor, "floor"), (pfl, "pfl")):
            usable = base is not None and base is not s and s["kind"] != "command"
            for field in ("median_round_s", "whole_run_s"):
                s[f"{field.removesuffix('_s')}_vs_{name}"] = ratio(s[field], base[field]) if usable else None


COLUMNS = ["contender", "processes", "median round (s)", "round 1 (s)", "whole run (s)", "peak memory (MiB)",
           "median round vs floor", "whole run vs floor", "median round vs pfl (same processes)",
           "whole run vs pfl (same processes)"]


def _s(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def table(summary: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for s in summary:
        note = f" ({s['failed']})" if s["failed"] else ""
        cells = [s["contender"] + note, "–" if s["processes"] is None else str(s["processes"]),
                 _s(s["median_round_s"], 3), _s(s["round1_s"], 3), _s(s["whole_run_s"], 1),
                 _s(s["peak_memory_mib"], 0), _x(s["median_round_vs_floor"]), _x(s["whole_run_vs_floor"]),
                 _x(s["median_round_vs_pfl"]), _x(s["whole_run_vs_pfl"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(argv: list[str], workload: Workload, setting: str, args: argparse.Namespace, minutes: float) -> str:
    return (f"# Speed: fogsim against plain PyTorch and pfl-research\n\n"
            f"`python benchmarks/speed.py {' '.join(argv)}` ({minutes:.1f} min, {os.cpu_count()} CPUs, "
            f"{args.reps} pass(es), round-robin)\n\n"
            f"Setting {setting}: {workload.dataset}, mlp, {workload.devices:,} devices of {workload.per_device} "
            f"samples, {workload.clients:,} clients a round, {workload.rounds} rounds, {EPOCHS} epoch, batch {BATCH}, "
            f"SGD momentum {MOMENTUM} lr {LR}, central evaluation on {workload.test_samples:,} test images every "
            f"round. Round: end of one round's evaluation to the end of the next's; whole run: process launch to "
            f"exit; peak memory: summed RSS of the process tree. Medians over the passes.\n\n")


def versions() -> dict:
    found = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    for package in ("fogsim", "torch", "flwr", "ray", "pfl"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


# --- main -----------------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for the results and each run's files (required)")
    parser.add_argument("--rounds", type=int, default=6, help="federated rounds of every run (default 6)")
    parser.add_argument("--reps", type=int, default=1, help="alternating passes over the contenders (default 1)")
    parser.add_argument("--large", action="store_true", help="setting B: 10,000 devices, 1,000 clients a round")
    parser.add_argument("--engines", default="ray,local", help="fogsim's simulation.engine values, one row per "
                        "engine and pruning setting (default ray,local)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of fogsim's Ray engine (default 2)")
    parser.add_argument("--only", help="run only these contenders, comma-separated: floor, pfl, pfl-1, pfl-2, "
                        "fogsim, fogsim-off, fogsim-on-ray, ..., quickstart, suite")
    parser.add_argument("--quickstart", type=int, nargs="?", const=3, default=0, metavar="N",
                        help=f"also time `fogsim run {QUICKSTART} --out TMP --quiet`, N times (default 3)")
    parser.add_argument("--suite", action="store_true", help="also time the test suite, all and not slow, once")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads of every contender's process "
                        "(OMP_NUM_THREADS; default 1, as Ray and torchrun give their workers; 0: each library's own)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run is stopped (default 1800)")
    parser.add_argument("--sample-interval", type=float, default=0.2, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="fashion-mnist", help=argparse.SUPPRESS)  # digits: smoke tests
    parser.add_argument("--devices", type=int, help=argparse.SUPPRESS)  # override the setting: smoke tests
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--test-samples", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        if args.spec is None:
            parser.error("--worker needs --spec")
        return args
    if args.out is None:
        parser.error("--out DIR is required")
    for name in ("rounds", "reps", "num_cpus", "test_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 (the libraries' defaults) or more")
    if args.quickstart < 0:
        parser.error("--quickstart N must be at least 1")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engines or len(set(args.engines)) != len(args.engines):
        parser.error("--engines: give distinct engines, comma-separated (e.g. ray,local)")
    args.only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    devices, clients = SETTINGS["B" if args.large else "A"]
    args.devices, args.clients = args.devices or devices, args.clients or clients
    if not 1 <= args.clients <= args.devices:
        parser.error("clients per round must be between 1 and the number of devices")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker is not None:
        return worker_main(args.worker, args.spec)
    try:
        return bench(args, argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; the runs finished so far are under --out/runs", file=sys.stderr)
        return 130


def bench(args: argparse.Namespace, argv: list[str]) -> int:
    workload = Workload(args.dataset, args.devices, args.clients, args.rounds, test_samples=args.test_samples)
    rows = select(contenders(args.engines, args.num_cpus, args.quickstart > 0, args.suite), args.only)
    runs_dir = args.out / "runs"
    if runs_dir.exists() and any(runs_dir.iterdir()):
        raise UserError(f"--out {args.out}: already holds runs of an earlier invocation; choose another --out")
    check_pfl(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    scenarios = write_scenarios(args.out, workload, args.num_cpus)
    sets = check_fogsim(rows, scenarios, workload)
    began = time.time()
    runs = []
    todo = plan(rows, counts_for(rows, args.reps, args.quickstart))
    for i, (rep, row) in enumerate(todo, 1):
        run = launch(row, rep, runs_dir / f"{row.key}-{rep}", workload, scenarios, sets, args)
        runs.append(run)
        print(f"[{i}/{len(todo)}] {row.label}, pass {rep}: {run['status']}, median round "
              f"{_s(run['median_round_s'], 3)} s, round 1 {_s(run['round1_s'], 3)} s, whole run "
              f"{run['whole_run_s']:.1f} s, peak {_s(run['peak_memory_mib'], 0)} MiB", file=sys.stderr, flush=True)
        if run["status"] != "ok":
            print(f"    see {run['directory']}/log.txt", file=sys.stderr, flush=True)
    summary = summarize(runs, rows)
    setting = "B" if args.large else "A"
    text = header(argv, workload, setting, args, (time.time() - began) / 60) + table(summary) + "\n"
    print("\n" + text)
    (args.out / "results.md").write_text(text)
    write_csv(args.out / "runs.csv", runs)
    write_csv(args.out / "summary.csv", summary)
    (args.out / "results.json").write_text(json.dumps(
        {"command": ["python", "benchmarks/speed.py", *argv], "setting": setting, "workload": asdict(workload),
         "environment": versions(), "summary": summary, "runs": runs}, indent=1))
    return 0 if all(run["status"] == "ok" for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
