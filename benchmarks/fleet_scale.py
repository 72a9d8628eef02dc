"""Benchmark: fogsim on fleets of 100 to 100,000 devices at a fixed number of clients per round.

Issue 8, item 6: fleets of 100, 1,000, 10,000 and 100,000 devices, 100 clients per round, 3
rounds, pruning on and off; the time to the start of round 1, the median round wall time, and
the peak memory of the driver and of Ray's processes; and, in the same run, alternating with
fogsim's pruning-off runs, bare Flower (one Flower node per device, as Flower's own simulation
examples do) on the 1,000- and 10,000-device fleets. The brief's targets, printed as
``target ...: met / not met (numbers)`` lines under the table:

* a fleet of 100,000 devices starts (to round 1) in at most 60 s, driver + Ray under 6 GB;
* a round costs what its sampled clients cost: the median round wall time at 100,000 devices is
  at most 1.2x that at 100 (same clients per round);
* with pruning off, fogsim is faster than bare Flower on the same 1,000- and 10,000-device fleets.

**The workload** is built so that a client's work does not depend on the fleet size:
Fashion-MNIST (the real set, Debian's package), the 784-300-100-10 MLP (``model: mlp``), one
tier of ``rpi-zero-2w`` devices with ``availability: 1`` and ``failure_rate: 0`` (so every round
has exactly ``--clients`` clients), ``fraction`` = clients / devices, and
``data.partition.per_device`` (default 100, IID): every device draws its own samples, so a
client trains on the same number of samples at every fleet size (a split of 60,000 rows would
give 600 samples per device at 100 devices and none at 100,000). One local epoch, batch 32, SGD
with momentum; central evaluation on the first ``--test-samples`` (1,000) test images every
round, without the per-device-mask evaluation (``evaluation.device_masks: false``).

* *pruning off*: ``pruning.method: dense``, Flower's ``fedavg``;
* *pruning on*: ``dynhp`` at 10x (cubic schedule over the first 60% of the rounds, pruning at
  each round start), ``masked-fedavg``, batch grown up to 64 in the 128 MiB budget;
* *bare Flower*: ``flower_overhead.run_bare`` on the pruning-off fleet: a ``ClientApp`` and
  ``ServerApp`` written directly against Flower's Message API, ``run_simulation`` with
  ``num_supernodes`` = devices (node ``i`` trains device ``i``'s samples, the same rows as fogsim's
  device ``i``), Flower's ``FedAvg`` sampling ``int(devices x fraction_train)`` = ``--clients`` nodes per
  round, the same model, local training, evaluation and Ray resources (fogsim's ``backend_config``).

fogsim runs with its defaults: ``simulation.nodes`` is the most devices a round samples (100),
Ray gets ``simulation.num_cpus`` (2) CPUs and each client one.

**Every run is its own process** (``python fleet_scale.py --child``), so that the driver's peak
memory is that run's and nothing is warm from an earlier run. The order is, per fleet size and
repetition: fogsim pruning off (A), bare Flower (B, at ``--bare-sizes`` only), fogsim pruning on;
so fogsim and bare alternate A B A B ... with ``--repeats`` > 1, and machine noise falls on both.

**What is measured** (wall clock, ``time.time`` in both processes):

* *start-up to round 1*: from the launch of the run's process (this script's ``Popen``) to the
  moment round 1's training messages have been handed to Flower's engine: for fogsim the first
  ``on_client(1, 0, sampled)`` call of ``fogsim.sim.run.run`` (made right after the push), for bare
  Flower the return of the Grid's first ``push_messages``. It includes the interpreter start and
  the imports (torch, flwr, ray), ``prepare`` (scenario checks, dataset load, fleet planning,
  partitions; the bare run uses the same ``prepare``), Ray's start and Flower's node
  registration. The columns *imports*, *prepare* and *run to round 1* split it up (the last
  from the call of ``run`` / ``run_simulation``). fogsim starts Ray before the engine, so Ray's
  start is in its start-up; Flower's ``run_simulation`` starts Ray in its engine thread while the
  ServerApp already pushes round 1, so the bare run's Ray start falls in its round 1. Start-up and
  round 1 are therefore not comparable between the two; *to last round* is.
* *round wall time*: fogsim's ``rounds.csv`` ``wall_time_s`` (from the end of the previous round's
  evaluation to the end of this round's); for bare Flower the same span, between the ends of
  its ``evaluate_fn`` calls. Round 1 is shown alone (it includes the Ray workers' warm-up: their
  imports and dataset load) and the *median* is over all rounds, as the issue asks.
* *to last round*: launch to the end of the last round's central evaluation; fogsim vs bare
  Flower is compared on it (what a user waits for before the results are in).
* *memory*: the driver's peak RSS is ``ru_maxrss`` of the run's process (exact). Ray's processes
  (the workers ``ray::...``, plus ``raylet``, ``gcs_server`` and Ray's other helpers, all
  descendants of the run's process) are sampled from ``/proc`` every ``--sample-interval`` (0.5)
  s; *Ray workers* is the peak of the sum of the workers' RSS, *all Ray* the peak of the sum over
  every descendant, and *driver + Ray* = driver peak + all-Ray peak (the target's figure; an
  upper bound: peaks at different moments, and shared pages, Ray's object store in /dev/shm
  included, are counted in every process that maps them). *PSS* is the peak of the proportional
  set size summed over the driver and all of Ray (shared pages divided among their users), the
  fairer total. GB are 10^9 bytes.

The machine may be shared; the ratios within one run (round time at 100,000 vs 100, fogsim vs
the bare run next to it) are what to read. A run that passes ``--timeout`` (bare Flower:
``--bare-timeout``) is stopped and recorded as "> T s", with what it reached by then.

    python benchmarks/fleet_scale.py --out results/fleet-scale [--sizes 100 1000 10000 100000]
        [--bare-sizes 1000 10000] [--clients 100] [--rounds 3] [--repeats 1] [--per-device 100]

Writes ``results.md`` (the table and the target lines, as printed) and ``results.csv`` (one row
per run) to ``--out``; each run's files (fogsim's run directory, the scenario, the process's log
and measurements) are under ``--out/runs/<devices>-<run>-<repetition>/``; an ``--out`` that already
holds runs is refused (fogsim does not write into a run directory that exists). Progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from proctree import Sampler, read
from proctree import rss as proc_rss

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RUNS = {  # key -> (label, pruning)
    "fogsim-off": ("fogsim", "off"),
    "bare": ("bare Flower FedAvg", "off"),
    "fogsim-on": ("fogsim", "on (dynhp 10x)"),
}
PAGE = os.sysconf("SC_PAGE_SIZE")
GB = 1e9


# --- the scenario -------------------------------------------------------------------------------

def scenario_dict(devices: int, run: str, *, clients: int, rounds: int, per_device: int, test_samples: int,
                  num_cpus: int, seed: int = 0) -> dict:
    """The scenario of one run: ``devices`` devices, ``clients`` of them trained per round."""
    prunes = run == "fogsim-on"
    return {
        "name": f"fleet-{devices}-{run}",
        "seed": seed,
        "data": {"name": "fashion-mnist", "partition": {"kind": "iid", "per_device": per_device}},
        "model": "mlp",
        "rounds": rounds,
        "fraction": clients / devices,
        "training": {"epochs": 1, "optimizer": "momentum", "lr": 0.05, "batch_size": 32, "batch_max": 64},
        "pruning": {"method": "dynhp", "compression": 10} if prunes else {"method": "dense", "compression": 1},
        "strategy": {"name": "masked-fedavg" if prunes else "fedavg"},
        "fleet": [{"profile": "rpi-zero-2w", "count": devices,
                   "overrides": {"availability": 1.0, "failure_rate": 0.0}}],
        "evaluation": {"test_samples": test_samples, "device_masks": False},
        "simulation": {"num_cpus": num_cpus, "client_cpus": 1.0},
    }


# --- one run, in its own process ----------------------------------------------------------------

class Clock:
    """``perf_counter`` marks as wall-clock times comparable with the parent's ``time.time``."""

    def __init__(self):
        self.wall0, self.perf0 = time.time(), time.perf_counter()

    def wall(self, perf: float | None) -> float | None:
        return None if perf is None else self.wall0 + (perf - self.perf0)


def child(spec_path: Path) -> int:
    """One run: ``spec`` names the run, its scenario and where to write ``result.json``."""
    clock = Clock()
    spec = json.loads(spec_path.read_text())
    directory = Path(spec["dir"])
    result: dict = {"child_start": clock.wall0}
    progress_path = directory / "progress.json"

    def from_outcome(outcome: dict) -> None:
        """The bare ServerApp's time stamps (``perf_counter``, written as it goes) as the result's fields."""
        ends = [outcome.get("round0"), *outcome.get("marks", [])]
        result.update(run_call=clock.wall(outcome.get("start")), round1=clock.wall(outcome.get("first_push")),
                      round_wall_s=[b - a for a, b in zip(ends, ends[1:])] if ends[0] is not None else [])
        if outcome.get("marks"):
            result["last_round"] = clock.wall(outcome["marks"][-1])
            result["rounds_done"] = len(outcome["marks"])

    def dump(path: Path) -> None:
        try:
            if "outcome" in result:
                from_outcome(dict(result["outcome"]))
            text = json.dumps({k: v for k, v in result.items() if k != "outcome"}, indent=1)
        except (RuntimeError, KeyError):  # changed while read (server thread, main thread); the next dump has it
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def keep_dumping(stop: threading.Event) -> None:  # what a run reached, should it be stopped
        while not stop.wait(1.0):
            dump(progress_path)

    stop = threading.Event()
    threading.Thread(target=keep_dumping, args=(stop,), daemon=True).start()

    import yaml

    import flower_overhead
    from fogsim.sim import draws
    from fogsim.sim.run import prepare, run
    result["imported"] = time.time()
    result["fogsim"] = str(Path(draws.__file__).parent.parent)  # which copy of fogsim this run measures

    scenario_path = directory / "input.yaml"
    scenario_path.write_text(yaml.safe_dump(spec["scenario"], sort_keys=False))
    prepared = prepare(scenario_path)
    result["prepared"] = time.time()
    devices, clients = len(prepared.fleet), spec["clients"]
    if draws.most_sampled(devices, prepared.scenario.fraction) != clients:
        raise SystemExit(f"fraction {prepared.scenario.fraction!r} samples "
                         f"{draws.most_sampled(devices, prepared.scenario.fraction)} of {devices}, not {clients}")

    if spec["run"] == "bare":
        flower_overhead.check_comparable(prepared)
        outcome: dict = {}
        result["outcome"] = outcome  # filled in by the bare ServerApp; dumped as it goes
        bare = flower_overhead.run_bare(prepared, clients=clients, outcome=outcome)
        from_outcome(result.pop("outcome"))
        result["accuracy"] = bare.accuracy
    else:
        marks: list[float] = []

        def on_client(round_: int, done: int, total: int) -> None:
            if round_ == 1 and "round1" not in result:
                result["round1"] = time.time()
                result["round1_clients"] = total

        def on_round(row: dict) -> None:
            marks.append(time.time())
            result["last_round"] = marks[-1]
            result["rounds_done"] = len(marks)

        result["run_call"] = time.time()
        summary = run(prepared, directory / "run", on_round=on_round, on_client=on_client)
        import pandas as pd

        rounds = pd.read_csv(directory / "run" / "rounds.csv")
        if not (rounds["clients_ok"] == clients).all():
            raise SystemExit(f"rounds trained {rounds['clients_ok'].tolist()} clients, not {clients} each")
        result.update(round_wall_s=rounds["wall_time_s"].tolist(), accuracy=float(summary["accuracy"]))
    result["driver_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["done"] = time.time()
    stop.set()
    dump(directory / "result.json")
    return 0


# --- the parent: launch, watch memory, collect --------------------------------------------------

def _pss(pid: int) -> int:
    text = read(f"/proc/{pid}/smaps_rollup") or ""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class Monitor(Sampler):
    """Samples the RSS of a process's descendants (Ray's processes) from /proc every ``interval`` s."""

    def __init__(self, root: int, interval: float):
        super().__init__(root, interval)
        self.peak_workers = self.peak_ray = self.peak_pss = 0
        self.peak_by_name: dict[str, int] = {}
        self.descendants: set[int] = set()

    def tree(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = read(f"/proc/{entry.name}/stat")
            if stat:
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = set(), [self.root]
        while todo:
            for pid in children.get(todo.pop(), []):
                if pid not in found:
                    found.add(pid)
                    todo.append(pid)
        return found

    def sample(self) -> None:
        pids = self.tree()
        self.descendants |= pids
        workers = ray = 0
        pss = _pss(self.root)
        for pid in pids:
            rss = proc_rss(pid)
            if not rss:
                continue
            name = process_name(read(f"/proc/{pid}/cmdline") or "")
            if name.startswith("ray::"):
                workers += rss
            ray += rss
            self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), rss)
            pss += _pss(pid)
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_ray = max(self.peak_ray, ray)
        self.peak_pss = max(self.peak_pss, pss)


def process_name(cmdline: str) -> str:
    """``ray::<actor class or IDLE>`` for a Ray worker (its process title, or its start command line
    before it sets one), else the program's name (``raylet``, ``gcs_server``, ``python3 <script>``)."""
    args = [a for a in cmdline.replace("\0", " ").split() if a]
    if not args:
        return "?"
    if args[0].startswith("ray::"):
        return "ray::" + (args[0][5:].split(".")[0] or "?")
    if any(a.endswith("default_worker.py") for a in args):
        return "ray::(starting)"
    name = os.path.basename(args[0])
    script = next((os.path.basename(a) for a in args[1:] if a.endswith(".py")), None)
    return f"{name} {script}" if name.startswith("python") and script else name


def launch(key: str, devices: int, rep: int, args, directory: Path) -> dict:
    """Run one configuration in its own process; return its measurements (``status`` ok / timeout / error)."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"run": key, "dir": str(directory), "clients": args.clients,
            "scenario": scenario_dict(devices, key, clients=args.clients, rounds=args.rounds,
                                      per_device=args.per_device, test_samples=args.test_samples,
                                      num_cpus=args.num_cpus)}
    spec_path = directory / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    timeout = args.bare_timeout if key == "bare" else args.timeout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(directory / "log.txt", "w") as log:
        launched = time.time()
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        monitor = Monitor(process.pid, args.sample_interval)
        monitor.start()
        status = "ok"
        try:
            rc = process.wait(timeout=timeout)
            if rc != 0:
                status = "error"
        except subprocess.TimeoutExpired:
            status = "timeout"
            monitor.sample()
            stop_tree(process, monitor)
        ended = time.time()
        monitor.stop.set()
        monitor.join()
    found = directory / ("result.json" if status == "ok" else "progress.json")
    measured = json.loads(found.read_text()) if found.exists() else {}
    measured.pop("outcome", None)
    return summarize_run(key, devices, rep, status, timeout, launched, ended, measured, monitor)


def stop_tree(process: subprocess.Popen, monitor: Monitor) -> None:
    """Stop a run that passed its time limit: its process group, then any descendant left (Ray's)."""
    pids = monitor.tree() | monitor.descendants
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def summarize_run(key: str, devices: int, rep: int, status: str, timeout: float, launched: float, ended: float,
                  m: dict, monitor: Monitor) -> dict:
    def since(name: str) -> float | None:
        return m[name] - launched if m.get(name) is not None else None

    rounds = m.get("round_wall_s") or []
    driver = m.get("driver_peak_rss")
    label, pruning = RUNS[key]
    return {
        "devices": devices, "run": label, "pruning": pruning, "key": key, "repetition": rep, "status": status,
        "timeout_s": timeout if status == "timeout" else None,
        "startup_s": since("round1"), "imports_s": since("imported"),
        "prepare_s": m["prepared"] - m["imported"] if "prepared" in m and "imported" in m else None,
        "run_to_round1_s": m["round1"] - m["run_call"] if "round1" in m and "run_call" in m else None,
        "round1_s": rounds[0] if rounds else None,
        "median_round_s": statistics.median(rounds) if rounds else None,
        "round_wall_s": " / ".join(f"{r:.2f}" for r in rounds),
        "to_last_round_s": since("last_round") if status == "ok" else None,
        "total_s": ended - launched,
        "driver_peak_rss": driver,
        "ray_workers_peak_rss": monitor.peak_workers, "ray_all_peak_rss": monitor.peak_ray,
        "driver_plus_ray_rss": driver + monitor.peak_ray if driver is not None else None,
        "peak_pss_total": monitor.peak_pss,
        "accuracy": m.get("accuracy"),
        "ray_processes": json.dumps(dict(sorted(monitor.peak_by_name.items()))),
    }


# --- the table and the targets ------------------------------------------------------------------

def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _s(value: float | None, timed_out: float | None = None, digits: int = 1) -> str:
    if value is None:
        return f"> {timed_out:.0f}" if timed_out else "–"
    return f"{value:.{digits}f}"


def _gb(value: float | None) -> str:
    return "–" if value is None else f"{value / GB:.2f}"


def grouped(rows: list[dict]) -> dict[tuple[int, str], list[dict]]:
    groups: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["devices"], row["key"]), []).append(row)
    return groups


def table(rows: list[dict]) -> str:
    lines = ["| devices | run | pruning | start-up to round 1 (s) | imports / prepare / run to round 1 (s) | "
             "round 1 (s) | median round (s) | rounds (s) | to last round (s) | driver peak RSS (GB) | "
             "Ray workers peak RSS (GB) | all Ray peak RSS (GB) | driver + Ray (GB) | PSS total (GB) | accuracy |",
             "|" + "---|" * 15]
    for (devices, key), group in sorted(grouped(rows).items(), key=lambda kv: (kv[0][0], list(RUNS).index(kv[0][1]))):
        timed_out = max((r["timeout_s"] or 0 for r in group), default=0) or None
        med = {k: _median([r[k] for r in group]) for k in group[0] if k not in ("run", "pruning", "key", "status",
                                                                            "round_wall_s", "ray_processes")}
        splits = " / ".join(_s(med[k]) for k in ("imports_s", "prepare_s", "run_to_round1_s"))
        note = "" if all(r["status"] == "ok" for r in group) else \
            " (" + ", ".join(sorted({r["status"] for r in group if r["status"] != "ok"})) + ")"
        lines.append(
            f"| {devices:,} | {group[0]['run']}{note} | {group[0]['pruning']} | "
            f"{_s(med['startup_s'], timed_out)} | {splits} | {_s(med['round1_s'], timed_out, 2)} | "
            f"{_s(med['median_round_s'], timed_out, 2)} | {'; '.join(r['round_wall_s'] or '–' for r in group)} | "
            f"{_s(med['to_last_round_s'], timed_out)} | {_gb(med['driver_peak_rss'])} | "
            f"{_gb(med['ray_workers_peak_rss'])} | {_gb(med['ray_all_peak_rss'])} | "
            f"{_gb(med['driver_plus_ray_rss'])} | {_gb(med['peak_pss_total'])} | "
            f"{_s(med['accuracy'], None, 4)} |")
    return "\n".join(lines)


def pairs_table(rows: list[dict]) -> str:
    """fogsim pruning off against the bare run that followed it, repetition by repetition."""
    groups = grouped(rows)
    lines = ["| devices | repetition | fogsim to last round (s) | bare to last round (s) | ratio fogsim / bare | "
             "fogsim median round (s) | bare median round (s) | ratio |", "|" + "---|" * 8]
    for (devices, key), bare in sorted(groups.items()):
        if key != "bare":
            continue
        for a, b in zip(groups.get((devices, "fogsim-off"), []), bare):
            limit = b["timeout_s"]
            lines.append(f"| {devices:,} | {a['repetition']} | {_s(a['to_last_round_s'])} | "
                         f"{_s(b['to_last_round_s'], limit)} | {ratio(a['to_last_round_s'], b['to_last_round_s'], limit)} | "
                         f"{_s(a['median_round_s'], None, 2)} | {_s(b['median_round_s'], limit, 2)} | "
                         f"{ratio(a['median_round_s'], b['median_round_s'], limit if b['median_round_s'] is None else None)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def ratio(a: float | None, b: float | None, b_timed_out: float | None = None) -> str:
    if a is None:
        return "–"
    if b is None:
        return f"< {a / b_timed_out:.3f}x" if b_timed_out else "–"
    return f"{a / b:.3f}x"


def targets(rows: list[dict], clients: int) -> list[str]:
    groups = grouped(rows)

    def med(devices: int, key: str, field: str) -> float | None:
        group = groups.get((devices, key), [])
        return _median([r[field] for r in group]) if group and all(r["status"] == "ok" for r in group) else None

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "not met")

    lines = []
    big, small = 100_000, 100
    startup = {k: med(big, k, "startup_s") for k in ("fogsim-off", "fogsim-on")}
    measured = [v for v in startup.values() if v is not None]
    lines.append(f"target start-up of 100,000 devices <= 60 s (process launch to round 1's messages, imports "
                 f"included): {verdict(all(v <= 60 for v in measured) if measured else None)} ("
                 + ", ".join(f"pruning {RUNS[k][1]}: {_s(v)} s" for k, v in startup.items()) + ")")
    memory = {k: (med(big, k, "driver_peak_rss"), med(big, k, "ray_all_peak_rss")) for k in ("fogsim-off", "fogsim-on")}
    measured = [d + r for d, r in memory.values() if d is not None]
    lines.append(f"target memory of 100,000 devices, driver + Ray workers < 6 GB: "
                 f"{verdict(all(v < 6 * GB for v in measured) if measured else None)} ("
                 + ", ".join(f"pruning {RUNS[k][1]}: driver {_gb(d)} + all Ray {_gb(r)} = "
                             f"{_gb(d + r if d is not None else None)} GB" for k, (d, r) in memory.items()) + ")")
    parts, oks = [], []
    for k in ("fogsim-off", "fogsim-on"):
        a, b = med(big, k, "median_round_s"), med(small, k, "median_round_s")
        if a is not None and b is not None:
            oks.append(a <= 1.2 * b)
            parts.append(f"pruning {RUNS[k][1]}: {a:.2f} s vs {b:.2f} s = {a / b:.2f}x")
        else:
            parts.append(f"pruning {RUNS[k][1]}: not measured")
    lines.append(f"target median round at 100,000 devices <= 1.2x at 100 ({clients} clients per round): "
                 f"{verdict(all(oks) if oks else None)} ({', '.join(parts)})")
    for devices in sorted({d for d, k in groups if k == "bare"}):
        fog_runs, bare_runs = groups.get((devices, "fogsim-off"), []), groups[(devices, "bare")]
        a = _median([r["to_last_round_s"] for r in fog_runs])
        b = _median([r["to_last_round_s"] for r in bare_runs]) if all(r["status"] == "ok" for r in bare_runs) else None
        limit = max((r["timeout_s"] or 0 for r in bare_runs), default=0) or None
        if a is None or (b is None and limit is None):
            ok, numbers = None, "not measured"
        elif b is None:
            ok, numbers = a < limit, f"fogsim {a:.1f} s, bare Flower > {limit:.0f} s (stopped)"
        else:
            ok, numbers = a < b, f"fogsim {a:.1f} s, bare Flower {b:.1f} s, ratio {a / b:.3f}x"
        lines.append(f"target fogsim (pruning off) faster than bare Flower at {devices:,} devices, launch to the end "
                     f"of the last round: {verdict(ok)} ({numbers})")
    return lines


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/fleet-scale"),
                        help="directory for results.md, results.csv and the runs' files")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000], help="fleet sizes")
    parser.add_argument("--bare-sizes", type=int, nargs="*", default=[1000, 10_000],
                        help="fleet sizes (of --sizes) that also run bare Flower, alternating with fogsim pruning off")
    parser.add_argument("--clients", type=int, default=100, help="clients per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="repetitions of every run")
    parser.add_argument("--per-device", type=int, default=100, help="training samples every device draws")
    parser.add_argument("--test-samples", type=int, default=1000, help="test images of the central evaluation")
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray's CPUs (simulation.num_cpus)")
    parser.add_argument("--no-pruning-on", dest="pruning_on", action="store_false",
                        help="skip the pruning-on (dynhp) runs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a fogsim run is stopped")
    parser.add_argument("--bare-timeout", type=float, default=600, help="seconds before a bare Flower run is stopped")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.child)
    if min(args.sizes) < args.clients:
        parser.error(f"every fleet size must be at least --clients ({args.clients})")
    if not set(args.bare_sizes) <= set(args.sizes):
        parser.error("--bare-sizes must be among --sizes")

    plan = [(devices, rep, key) for devices in args.sizes for rep in range(1, args.repeats + 1)
            for key in RUNS if (key != "bare" or devices in args.bare_sizes) and (key != "fogsim-on" or args.pruning_on)]
    held = [args.out / "runs" / f"{devices}-{key}-{rep}" for devices, rep, key in plan]
    if any(d.exists() and any(d.iterdir()) for d in held):
        parser.error(f"--out {args.out}: already holds runs of an earlier invocation; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    began = time.time()
    for i, (devices, rep, key) in enumerate(plan, 1):
        row = launch(key, devices, rep, args, args.out / "runs" / f"{devices}-{key}-{rep}")
        rows.append(row)
        print(f"[{i}/{len(plan)}] {devices:,} devices, {row['run']}, pruning {row['pruning']}, rep {rep}: "
              f"{row['status']}, start-up {_s(row['startup_s'])} s, rounds {row['round_wall_s'] or '–'} s, "
              f"driver {_gb(row['driver_peak_rss'])} GB, Ray {_gb(row['ray_all_peak_rss'])} GB, "
              f"process {row['total_s']:.0f} s", file=sys.stderr, flush=True)
        if row["status"] == "error":
            print(f"    see {args.out / 'runs' / f'{devices}-{key}-{rep}' / 'log.txt'}", file=sys.stderr, flush=True)

    import pandas as pd

    pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)
    command = "python benchmarks/fleet_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (f"# fogsim at fleet scale\n\n`{command}` ({(time.time() - began) / 60:.1f} min, "
              f"{os.cpu_count()} CPUs)\n\n"
              f"Fashion-MNIST, mlp, {args.per_device} samples drawn per device (iid), {args.clients} clients per "
              f"round (fraction = clients / devices, availability 1, no failures), {args.rounds} rounds, 1 local "
              f"epoch, batch 32; central evaluation on {args.test_samples} test images; Ray num_cpus "
              f"{args.num_cpus}, 1 CPU per client; {args.repeats} repetition(s), medians shown. Start-up: process "
              f"launch to round 1's messages. GB = 10^9 bytes.\n\n")
    pairs = pairs_table(rows)
    text = (header + table(rows) + "\n\n" + (f"fogsim pruning off (A) and bare Flower (B), run alternately:\n\n"
                                               f"{pairs}\n\n" if pairs else "")
            + "\n".join(targets(rows, args.clients)) + "\n")
    print("\n" + text)
    (args.out / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    # Run the copy of this module imported by name, not ``__main__`` (as flower_overhead.py does):
    # Ray's workers import the benchmark modules by name to run the bare ClientApp.
    sys.path.insert(0, str(BENCHMARKS))
    sys.path.insert(1, str(REPO))
    import fleet_scale

    raise SystemExit(fleet_scale.main())
