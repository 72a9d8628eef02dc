"""Benchmark: mask-aware aggregation rules and server optimizers against FedAvg, on DynHP fleets.

Fashion-MNIST (Debian's dataset-fashion-mnist), non-IID (Dirichlet 0.5 label shares), the three
tiers of ``scenarios/fashion-three-tier.yaml`` (ESP32-S3 2 MiB, Raspberry Pi Zero 2 W, Raspberry
Pi 4), sparse downloads (the default). Two fleets:

* ``equal``  — every tier prunes to 10x;
* ``hetero`` — the tiers prune to 20x / 10x / 4x;

at two sizes:

* ``10``  — 4 + 4 + 2 devices, all sampled, 10 rounds (each device trains 10 epochs in all);
* ``100`` — 40 + 40 + 20 devices, 10 sampled per round (``fraction: 0.1``), 20 rounds.

Rows: ``masked-fedavg`` with each rule (``keepers``, ``delta``, ``consensus``), the server
optimizers ``masked-fedavgm`` and ``masked-fedadam`` on the ``delta`` pseudo-gradient, Flower's
``fedavg`` and ``fedadam`` on the same clients, and ``dense-fedavg``: no budgets, no pruning,
Flower's FedAvg (the same run serves both fleets, which differ only in their pruning targets).

Server-optimizer settings were chosen once, on seed 99, which is not reported (``OPTIMIZERS``).

Each run is one ``fogsim run`` of the scenario with ``--set`` overrides; a run whose directory
already holds a ``summary.json`` is read, not run again, so an interrupted benchmark resumes.
Writes ``table.md`` (one table per size and fleet) and ``aggregation.png`` under ``--out``.

    python benchmarks/aggregation.py --out results/aggregation --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from fogsim.sim.run import prepare, run
from fogsim.units import format_bytes

SCENARIO = Path(__file__).parent.parent / "scenarios" / "fashion-three-tier.yaml"

FLEETS = {
    "equal": [],
    "hetero": ["fleet[0].compression=20", "fleet[1].compression=10", "fleet[2].compression=4"],
}
SIZES = {
    "10": ["rounds=10"],
    "100": ["rounds=20", "fraction=0.1", "fleet[0].count=40", "fleet[1].count=40", "fleet[2].count=20"],
}
# Chosen once, on seed 99 (not reported), 10 devices, equal targets, rule delta, final accuracy:
# FedAvgM server_lr 1.0 with momentum 0.5 (0.8413) over 0.9 (0.8261); FedAdam eta 0.03 (0.8346) over
# 0.003 (0.7398), 0.01 (0.7889) and 0.1 (0.8295); beta_1 0.9, beta_2 0.99, tau 1e-3 (Flower's defaults).
OPTIMIZERS = {
    "masked-fedavgm": ["strategy.server_lr=1.0", "strategy.server_momentum=0.5"],
    "masked-fedadam": ["strategy.server_lr=0.03"],
}
ROWS = {
    "masked-fedavg, keepers": ["strategy.name=masked-fedavg", "strategy.rule=keepers"],
    "masked-fedavg, delta": ["strategy.name=masked-fedavg", "strategy.rule=delta"],
    "masked-fedavg, consensus": ["strategy.name=masked-fedavg", "strategy.rule=consensus"],
    "masked-fedavgm, delta": ["strategy.name=masked-fedavgm", "strategy.rule=delta", *OPTIMIZERS["masked-fedavgm"]],
    "masked-fedadam, delta": ["strategy.name=masked-fedadam", "strategy.rule=delta", *OPTIMIZERS["masked-fedadam"]],
    "fedavg (Flower)": ["strategy.name=fedavg"],
    # Flower's own FedAdam on the same clients (dense uploads, pruned zeros averaged in), at the same eta:
    # tells the server optimizer's share of a masked-fedadam gain from the mask-awareness's.
    "fedadam (Flower)": ["strategy.name=fedadam", *OPTIMIZERS["masked-fedadam"]],
    "dense-fedavg": ["strategy.name=fedavg", "pruning.method=dense"] + [
        f"fleet[{i}].overrides.memory_budget=64GiB" for i in range(3)],
}
MASK_AWARE = [row for row in ROWS if row.startswith("masked-")]
BASELINE, DENSE = "fedavg (Flower)", "dense-fedavg"


def slug(row: str) -> str:
    return row.replace(", ", "-").replace(" (Flower)", "").replace(" ", "-")


def directory(out: Path, size: str, fleet: str, row: str, seed: int) -> Path:
    fleet = "any" if row == DENSE else fleet  # dense FedAvg has no targets: one run serves both fleets
    return out / f"{size}-{fleet}-{slug(row)}-seed{seed}"


def run_one(out: Path, size: str, fleet: str, row: str, seed: int, extra: list[str]) -> dict:
    where = directory(out, size, fleet, row, seed)
    summary_path = where / "summary.json"
    if not summary_path.exists():
        sets = [*SIZES[size], *([] if row == DENSE else FLEETS[fleet]), *ROWS[row], f"seed={seed}",
                "name=aggregation", "evaluation.device_masks=false", *extra]
        run(prepare(SCENARIO, sets), where)
    summary = json.loads(summary_path.read_text())
    # Non-IID rounds swing by a point or more; the mean of the last three is the steadier figure.
    summary["accuracy_last3"] = float(pd.read_csv(where / "rounds.csv")["accuracy"].tail(3).mean())
    return summary


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: dict[str, list[dict]]) -> str:
    dense = results[DENSE]
    dense_traffic = statistics.mean(s["upload_bytes"] + s["download_bytes"] for s in dense)
    profiles = list(dense[0]["profiles"])
    lines = ["| rule / strategy | final accuracy (mean ± std) | last 3 rounds | "
             + " | ".join(f"{p} accuracy" for p in profiles)
             + " | upload | download | traffic vs dense | simulated time |",
             "|---|---|---|" + "---|" * len(profiles) + "---|---|---|---|"]
    for row, runs in results.items():
        acc, std = mean_std([s["accuracy"] for s in runs])
        last3 = statistics.mean(s["accuracy_last3"] for s in runs)
        tiers = " | ".join(f"{statistics.mean(s['profiles'][p]['accuracy'] for s in runs):.4f}" for p in profiles)
        upload = statistics.mean(s["upload_bytes"] for s in runs)
        download = statistics.mean(s["download_bytes"] for s in runs)
        lines.append(f"| {row} | {acc:.4f} ± {std:.4f} | {last3:.4f} | {tiers} | {format_bytes(upload)} | "
                     f"{format_bytes(download)} | {dense_traffic / (upload + download):.2f}x less | "
                     f"{statistics.mean(s['sim_time_s'] for s in runs):.0f} s |")
    return "\n".join(lines) + "\n"


def verdict(results: dict[str, list[dict]]) -> str:
    """The issue's targets, read off the results."""
    base, base_std = mean_std([s["accuracy"] for s in results[BASELINE]])
    dense, _ = mean_std([s["accuracy"] for s in results[DENSE]])
    dense_traffic = statistics.mean(s["upload_bytes"] + s["download_bytes"] for s in results[DENSE])
    best = max(MASK_AWARE, key=lambda row: statistics.mean(s["accuracy"] for s in results[row]))
    acc, std = mean_std([s["accuracy"] for s in results[best]])
    traffic = statistics.mean(s["upload_bytes"] + s["download_bytes"] for s in results[best])
    margin = acc - base
    return (f"best mask-aware: {best} {acc:.4f}; vs Flower FedAvg {base:.4f}: {margin:+.4f} "
            f"({'above' if margin > max(std, base_std) else 'NOT above'} the seeds' std {max(std, base_std):.4f}); "
            f"vs dense {dense:.4f}: {acc - dense:+.4f}; traffic {dense_traffic / traffic:.2f}x below dense")


def plot(all_results: dict[tuple[str, str], dict[str, list[dict]]], path: Path) -> None:
    from matplotlib.figure import Figure

    panels = list(all_results)
    fig = Figure(figsize=(4.2 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)
    for ax, (size, fleet) in zip(axes[0], panels):
        results = all_results[(size, fleet)]
        rows = list(results)
        stats = [mean_std([s["accuracy"] for s in results[r]]) for r in rows]
        colors = ["tab:blue" if r in MASK_AWARE else "tab:green" if r == DENSE else "tab:gray" for r in rows]
        ax.barh(range(len(rows)), [m for m, _ in stats], xerr=[s for _, s in stats], color=colors)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.invert_yaxis()
        low = min(m - s for m, s in stats)
        ax.set_xlim(max(0.0, low - 0.03), min(1.0, max(m + s for m, s in stats) + 0.01))
        ax.set_title(f"{size} devices, {fleet} targets", fontsize=10)
        ax.set_xlabel("final global accuracy (mean ± std over seeds)")
    fig.suptitle("Aggregation on DynHP fleets, Fashion-MNIST non-IID: blue mask-aware, grey Flower's, green dense")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/aggregation"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--fleets", nargs="+", choices=list(FLEETS), default=list(FLEETS))
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW",
                        help="run only these rows (the table needs all; finished runs are read back)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra key=value for every run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(size, fleet, row, seed) for seed in args.seeds for size in args.sizes for fleet in args.fleets
            for row in args.rows]
    all_results: dict[tuple[str, str], dict[str, list[dict]]] = {}
    started = time.perf_counter()
    for done, (size, fleet, row, seed) in enumerate(jobs, start=1):
        summary = run_one(args.out, size, fleet, row, seed, args.sets)
        all_results.setdefault((size, fleet), {r: [] for r in ROWS})[row].append(summary)
        print(f"[{done}/{len(jobs)} {time.perf_counter() - started:.0f} s] {size} devices, {fleet}, {row}, "
              f"seed {seed}: accuracy {summary['accuracy']:.4f}", flush=True)
    if args.rows != list(ROWS):
        return 0  # a partial pass: the table waits for every row
    sections = []
    for (size, fleet), results in all_results.items():
        sections.append(f"### {size} devices, {fleet} targets\n\n{table(results)}\n{verdict(results)}\n")
    markdown = "\n".join(sections)
    (args.out / "table.md").write_text(markdown)
    plot(all_results, args.out / "aggregation.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
