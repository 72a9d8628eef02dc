"""Benchmark: the fog layer, flat aggregation against hierarchical with the cloud every 1, 2 and 5 rounds.

``scenarios/fashion-fog.yaml``: Fashion-MNIST (Debian's dataset-fashion-mnist), non-IID (Dirichlet
0.5 label shares), 16 DynHP devices in three skewed regions (six ESP32-S3 boards behind a satellite
gateway; four Raspberry Pi Zero 2 W and two Raspberry Pi 4 behind an LTE gateway; two of each small
kind behind a 5G edge server), ``masked-fedavg`` with its default rule, 20 rounds. Rows:

* ``flat``: the same fleet without fog nodes (``--set fog=null`` and ``fleet[i].fog=null``): every
  device talks to the cloud,
  so every device's upload and download crosses the wide area, every round;
* ``cloud_every N``: every round each fog node aggregates its devices; every N rounds (and in the
  last) the cloud aggregates the fog nodes; only the fog nodes' models cross the wide area.

* ``cloud_every 5, sync while pruning``: the same, with the cloud aggregating every round of the
  pruning window too (``fog.sync_while_pruning``), so every region prunes the same shared weights.

Per row, over the seeds: final accuracy of the cloud's model (mean ± std, and its difference from
the flat run of the same seed, which varies far less than the seeds do), wide-area bytes (to and
from the cloud), how many times fewer than flat, the devices' own traffic, the final global
density (entries some device of the last round kept: how far the regions' masks drifted apart),
simulated time. The issue's target: ``cloud_every 5`` within 1 point of flat at 3x or more fewer
wide-area bytes.

Each run is one ``fogsim run`` of the scenario with ``--set`` overrides; a run whose directory
already holds a ``summary.json`` is read, not run again, so an interrupted benchmark resumes.
Writes ``table.md`` and ``fog.png`` (accuracy against wide-area bytes, first seed, and final
accuracy against wide-area bytes per row) under ``--out``.

    python benchmarks/fog.py --out results/fog --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from fogsim.sim.run import prepare, run
from fogsim.units import format_bytes

SCENARIO = Path(__file__).parent.parent / "scenarios" / "fashion-fog.yaml"

FLEET_ENTRIES = 5  # of the scenario; the flat row takes every entry off its fog node
ROWS = {
    "flat": ["fog=null", *[f"fleet[{i}].fog=null" for i in range(FLEET_ENTRIES)]],
    "cloud_every 1": ["fog.cloud_every=1", "fog.sync_while_pruning=false"],
    "cloud_every 2": ["fog.cloud_every=2", "fog.sync_while_pruning=false"],
    "cloud_every 5": ["fog.cloud_every=5", "fog.sync_while_pruning=false"],
    # Regions that do not sync while their devices prune pick different entries to keep (the cloud's
    # union of masks grows); syncing every round of the pruning window keeps the masks aligned.
    "cloud_every 5, sync while pruning": ["fog.cloud_every=5", "fog.sync_while_pruning=true"],
}
FLAT = "flat"
TARGET_ROWS = ["cloud_every 5", "cloud_every 5, sync while pruning"]
TARGET_POINTS, TARGET_RATIO = 0.01, 3.0


def directory(out: Path, row: str, seed: int) -> Path:
    return out / f"{row.replace(', ', '-').replace(' ', '')}-seed{seed}"


def run_one(out: Path, row: str, seed: int, extra: list[str]) -> dict:
    where = directory(out, row, seed)
    summary_path = where / "summary.json"
    if not summary_path.exists():
        sets = [*ROWS[row], f"seed={seed}", "name=fog", "evaluation.device_masks=false", *extra]
        run(prepare(SCENARIO, sets), where)
    return json.loads(summary_path.read_text())


def wan(summary: dict) -> float:
    return summary["wan_upload_bytes"] + summary["wan_download_bytes"]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: dict[str, list[dict]]) -> str:
    flat_wan = statistics.mean(wan(s) for s in results[FLAT])
    lines = ["| aggregation | final accuracy (mean ± std) | vs flat, same seed (mean ± std) | wide-area bytes | "
             "vs flat | devices' traffic | global density | simulated time |", "|---|---|---|---|---|---|---|---|"]
    for row, runs in results.items():
        acc, std = mean_std([s["accuracy"] for s in runs])
        # The seeds differ more than the rows do: the paired difference says more than the two means.
        gap, gap_std = mean_std([s["accuracy"] - f["accuracy"] for s, f in zip(runs, results[FLAT])])
        wide = statistics.mean(wan(s) for s in runs)
        local = statistics.mean(s["upload_bytes"] + s["download_bytes"] for s in runs)
        density = statistics.mean(s["global_density"] for s in runs)
        lines.append(f"| {row} | {acc:.4f} ± {std:.4f} | {gap:+.4f} ± {gap_std:.4f} | {format_bytes(wide)} | "
                     f"{flat_wan / wide:.2f}x fewer | "
                     f"{format_bytes(local)} | {density:.3f} | {statistics.mean(s['sim_time_s'] for s in runs):.0f} s |")
    return "\n".join(lines) + "\n"


def verdict(results: dict[str, list[dict]]) -> str:
    """The issue's target, read off the results, for each row it applies to."""
    flat, _ = mean_std([s["accuracy"] for s in results[FLAT]])
    lines = []
    for row in TARGET_ROWS:
        acc, _ = mean_std([s["accuracy"] for s in results[row]])
        ratio = statistics.mean(wan(s) for s in results[FLAT]) / statistics.mean(wan(s) for s in results[row])
        close = flat - acc <= TARGET_POINTS
        fewer = ratio >= TARGET_RATIO
        lines.append(f"{row}: {acc:.4f} vs flat {flat:.4f} ({acc - flat:+.4f}, "
                     f"{'within' if close else 'NOT within'} {TARGET_POINTS * 100:.0f} point) at {ratio:.1f}x fewer "
                     f"wide-area bytes ({'met' if fewer else 'NOT met'}: {TARGET_RATIO:.0f}x or more)")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], out: Path, seed: int) -> Path:
    from matplotlib.figure import Figure

    from fogsim.plots import byte_unit
    from fogsim.sim.compare import load_run

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    runs = [load_run(directory(out, row, seed)) for row in results]
    totals = [(r.rounds["wan_upload_bytes"] + r.rounds["wan_download_bytes"]).cumsum() for r in runs]
    unit, scale = byte_unit([t.iloc[-1] for t in totals])
    for row, r, total in zip(results, runs, totals):
        cloud = r.rounds["cloud_round"] == 1
        left.plot(total[cloud] / scale, r.rounds["accuracy"][cloud], marker="o", ms=3, label=row)
    left.set_xscale("log")
    left.set_xlabel(f"wide-area bytes so far ({unit}, log)")
    left.set_ylabel("test accuracy of the cloud's model")
    left.set_title(f"per cloud round, seed {seed}", fontsize=10)
    left.legend(fontsize="small")
    for i, (row, runs_) in enumerate(results.items()):
        acc, std = mean_std([s["accuracy"] for s in runs_])
        right.errorbar(statistics.mean(wan(s) for s in runs_) / scale, acc, yerr=std, fmt="o", color=f"C{i}",
                       capsize=3, label=row)
    right.set_xscale("log")
    right.set_xlabel(f"wide-area bytes in all ({unit}, log)")
    right.set_ylabel("final accuracy (mean ± std over seeds)")
    right.set_title("final accuracy against wide-area traffic", fontsize=10)
    right.legend(fontsize="small")
    fig.suptitle("Fog layer on Fashion-MNIST non-IID, 16 DynHP devices in 3 regions: flat vs hierarchical")
    path = out / "fog.png"
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/fog"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW",
                        help="run only these rows (the table needs all; finished runs are read back)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra key=value for every run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {row: [] for row in ROWS}
    jobs = [(row, seed) for seed in args.seeds for row in args.rows]
    started = time.perf_counter()
    for done, (row, seed) in enumerate(jobs, start=1):
        summary = run_one(args.out, row, seed, args.sets)
        results[row].append(summary)
        print(f"[{done}/{len(jobs)} {time.perf_counter() - started:.0f} s] {row}, seed {seed}: accuracy "
              f"{summary['accuracy']:.4f}, wide area {format_bytes(wan(summary))}", flush=True)
    if args.rows != list(ROWS):
        return 0  # a partial pass: the table waits for every row
    markdown = f"{table(results)}\n{verdict(results)}\n"
    (args.out / "table.md").write_text(markdown)
    plot(results, args.out, args.seeds[0])
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
