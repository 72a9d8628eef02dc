"""Draw docs/concepts.png, the picture of DynHP and mask-aware averaging in docs/concepts.md.

Left: a real ``dynhp`` run on the embedded digits data (one device, 60% of the memory dense
training needs): density falls on the cubic schedule, the batch grows into the freed memory, and
training memory ``S(d) + b·a(d)`` stays under the budget. Right: the global model before a round,
two devices' pruned uploads, and their average by Flower's FedAvg (zeros averaged in), by the
``keepers`` rule and by ``delta``, the default (a pruned entry counts as no update).

    python docs/make_concepts_figure.py [--out docs/concepts.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fogsim.core import make_train_config  # noqa: E402
from fogsim.one_device import TrainingRun  # noqa: E402
from strategies import masked_average  # noqa: E402

KIB = 1024


def dynhp_trace() -> tuple[pd.DataFrame, dict]:
    config = make_train_config(method="dynhp", compression=10, epochs=4, batch_size=32, batch_max=512, seed=0)
    rows: list[dict] = []
    summary = TrainingRun(dataset="digits", model="mlp-small", config=config, budget="60%").run(rows.append)
    return pd.DataFrame(rows), summary


def draw_device(axes, trace: pd.DataFrame, summary: dict) -> None:
    x = trace["progress"] / summary["train_samples"]
    memory, density = axes
    memory.stackplot(x, trace["state_bytes"] / KIB, trace["activation_bytes"] / KIB, step="post", alpha=0.85,
                     colors=["tab:orange", "tab:purple"], labels=["model state S(d)", "activations b·a(d)"])
    memory.axhline(summary["budget_bytes"] / KIB, color="red", ls="--", label="budget B")
    memory.set_ylabel("training memory (KiB)")
    memory.set_title("DynHP on one device: prune, and spend the freed memory on the batch")
    memory.legend(loc="lower right", fontsize=8)
    density.plot(x, trace["density"], color="tab:blue", label="density d")
    density.set_ylabel("density d", color="tab:blue")
    density.set_xlabel("training progress (epochs of samples)")
    batch = density.twinx()
    batch.step(x, trace["batch_size"], where="post", color="tab:green", label="batch b")
    batch.set_ylabel("batch size b", color="tab:green")


def draw_averaging(axes) -> None:
    """The global tensor before the round, two devices' pruned uploads, and three ways to average them."""
    previous = np.array([[0.5, -0.4, 0.7], [0.3, 0.3, -0.2]])
    weights = [np.array([[0.8, -0.6, 0.0], [0.0, 0.4, 0.0]]), np.array([[0.6, 0.0, 0.9], [0.0, 0.2, -0.5]])]
    masks = [w != 0 for w in weights]
    examples = [1, 1]
    fedavg = sum(n * w for n, w in zip(examples, weights)) / sum(examples)
    keepers = masked_average(weights, masks, examples, previous, rule="keepers")
    delta = masked_average(weights, masks, examples, previous, rule="delta")
    panels = [("global model before", previous, None), ("device A upload", weights[0], masks[0]),
              ("device B upload", weights[1], masks[1]), ("FedAvg: zeros averaged in", fedavg, None),
              ("keepers: mean of who kept", keepers, None), ("delta (default): pruned = no change", delta, None)]
    for ax, (title, values, mask) in zip(axes, panels):
        ax.imshow(values, cmap="coolwarm", vmin=-1, vmax=1)
        for (i, j), v in np.ndenumerate(values):
            pruned = mask is not None and not mask[i, j]
            ax.text(j, i, "pruned" if pruned else f"{v:+.2f}", ha="center", va="center", fontsize=8,
                    color="grey" if pruned else "black")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "concepts.png")
    args = parser.parse_args(argv)
    trace, summary = dynhp_trace()
    fig = plt.figure(figsize=(14, 5.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 4, width_ratios=[2.2, 1, 1, 1])
    draw_device([fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])], trace, summary)
    draw_averaging([fig.add_subplot(grid[r, c]) for r in (0, 1) for c in (1, 2, 3)])
    fig.suptitle("fogsim: budgeted devices train with DynHP; the server averages only what each device kept")
    fig.savefig(args.out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
