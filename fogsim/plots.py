"""Pictures of a run, for people who would rather look than read. Matplotlib, written to PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

MIB = 1024 * 1024


def plot_training(trace: pd.DataFrame, epochs: pd.DataFrame, summary: dict, path: Path) -> None:
    """Density, batch size, memory against the budget, and test accuracy, over training progress."""
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True, constrained_layout=True)
    x = trace["epoch"]
    axes[0].plot(x, trace["density"], color="tab:blue")
    axes[0].set_ylabel("density d")
    axes[0].set_ylim(0, 1.05)
    axes[0].axhline(1 / summary["target_compression"], color="grey", ls=":", label="target")
    axes[0].legend(loc="upper right")

    axes[1].step(x, trace["batch_size"], where="post", color="tab:green")
    axes[1].set_ylabel("batch size b")

    axes[2].stackplot(x, trace["state_bytes"] / MIB, trace["activation_bytes"] / MIB,
                      labels=["model state S(d)", "activations b·a(d)"], colors=["tab:orange", "tab:purple"],
                      alpha=0.8, step="post")
    axes[2].axhline(summary["budget_bytes"] / MIB, color="red", ls="--", label="budget B")
    axes[2].set_ylabel("training memory (MiB)")
    axes[2].legend(loc="upper right")

    axes[3].plot(epochs["progress"] / summary["train_samples"], epochs["test_accuracy"], marker="o", color="black")
    axes[3].set_ylabel("test accuracy")
    axes[3].set_xlabel("training progress (epochs = samples / training set size)")
    fig.suptitle(f"{summary['method']} — {summary['model']} on {summary['dataset']}: "
                 f"accuracy {summary['test_accuracy']:.3f}, compression {summary['compression']:.1f}x")
    fig.savefig(path, dpi=110)
    plt.close(fig)
