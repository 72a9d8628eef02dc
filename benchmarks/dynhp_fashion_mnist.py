"""Benchmark: dense, gmp, soft and dynhp on real Fashion-MNIST, one device, LeNet-300-100.

Runs every method at target compression 2, 4, 10 and 20 with the default budget (what dense
training needs at the base batch), and at a quarter of that budget (compression 10), over three
seeds, then writes a Markdown table of mean ± std test accuracy, achieved compression, peak
training memory and mean model-state memory. A method that cannot fit a budget is listed as
infeasible with the bytes it needs, as ``fogsim train`` would refuse it.

    python benchmarks/dynhp_fashion_mnist.py --out results/dynhp-fmnist [--epochs 10] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from fogsim.core.config import make_train_config
from fogsim.errors import FogsimError
from fogsim.one_device import TrainingRun
from fogsim.units import format_bytes

METHODS = ("dense", "gmp", "soft", "dynhp")


def settings(compressions: list[float]) -> list[tuple[str, float, str]]:
    """(method, compression, budget) in the order the table lists them."""
    rows = [("dense", 1.0, "100%")]
    for c in compressions:
        rows += [(m, c, "100%") for m in METHODS[1:]]
    rows += [(m, 10.0, "25%") for m in METHODS]
    return rows


def run_one(method: str, compression: float, budget: str, seed: int, epochs: float) -> dict:
    config = make_train_config(method=method, compression=compression, epochs=epochs, seed=seed)
    try:
        request = TrainingRun(dataset="fashion-mnist", model="mlp", config=config, budget=budget)
    except FogsimError as error:
        return {"method": method, "compression_target": compression, "budget": budget, "seed": seed,
                "infeasible": str(error)}
    summary = request.run()
    return {"method": method, "compression_target": compression, "budget": budget, "seed": seed,
            "budget_bytes": summary["budget_bytes"], "accuracy": summary["test_accuracy"],
            "compression": summary["compression"], "peak_memory_bytes": summary["peak_memory_bytes"],
            "mean_state_bytes": summary["mean_state_bytes"], "batch_size_max": summary["batch_size_max"],
            "steps": summary["steps"], "wall_time_s": summary["wall_time_s"]}


def table(results: list[dict]) -> str:
    dense = [r["accuracy"] for r in results if r["method"] == "dense" and r["budget"] == "100%" and "accuracy" in r]
    dense_mean = statistics.mean(dense) if dense else float("nan")
    lines = ["| method | budget | target ρ | accuracy (mean ± std) | Δ vs dense (pts) | compression | "
             "peak memory | mean model state | max batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in results:
        key = (r["method"], r["compression_target"], r["budget"])
        if key not in keys:
            keys.append(key)
    for method, target, budget in keys:
        group = [r for r in results if (r["method"], r["compression_target"], r["budget"]) == (method, target, budget)]
        budget_text = "dense need" if budget == "100%" else f"{budget} of dense need"
        target_text = "—" if method == "dense" else f"{target:g}x"
        if "infeasible" in group[0]:
            need = group[0]["infeasible"].split("below the ")[-1].split(" needed")[0]
            lines.append(f"| {method} | {budget_text} | {target_text} | infeasible (needs {need}) | | | | | |")
            continue
        acc = [r["accuracy"] for r in group]
        mean, std = statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(
            f"| {method} | {budget_text} ({format_bytes(group[0]['budget_bytes'])}) | {target_text} | "
            f"{mean:.4f} ± {std:.4f} | {100 * (mean - dense_mean):+.2f} | "
            f"{statistics.mean(r['compression'] for r in group):.2f}x | "
            f"{format_bytes(max(r['peak_memory_bytes'] for r in group))} | "
            f"{format_bytes(statistics.mean(r['mean_state_bytes'] for r in group))} | "
            f"{max(r['batch_size_max'] for r in group)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/dynhp-fmnist"))
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 4, 10, 20])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    seen = {(r["method"], r["compression_target"], r["budget"], r["seed"]) for r in done}
    results = list(done)
    jobs = [(m, c, b, s) for m, c, b in settings(args.compressions) for s in args.seeds]
    for i, (method, compression, budget, seed) in enumerate(jobs, 1):
        if (method, compression, budget, seed) in seen:
            continue
        start = time.perf_counter()
        result = run_one(method, compression, budget, seed, args.epochs)
        results.append(result)
        with log.open("a") as f:
            f.write(json.dumps(result) + "\n")
        status = result.get("accuracy", "infeasible")
        print(f"[{i}/{len(jobs)}] {method} ρ={compression:g} budget={budget} seed={seed}: {status} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    results.sort(key=lambda r: jobs.index((r["method"], r["compression_target"], r["budget"], r["seed"])))
    markdown = table(results)
    (args.out / "table.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
