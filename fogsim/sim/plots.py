"""Pictures of a federated run, drawn from its CSV files: accuracy, devices per profile, traffic."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

KIB = 1024


def plot_run(out: Path) -> list[Path]:
    """Write accuracy.png, devices.png and traffic.png into the run directory ``out``."""
    rounds = pd.read_csv(out / "rounds.csv")
    clients = pd.read_csv(out / "clients.csv")
    ok = clients[clients["failed"] == 0]
    paths = [out / "accuracy.png", out / "devices.png", out / "traffic.png"]

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot(rounds["round"], rounds["accuracy"], marker="o", color="black")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy of the global model")
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(7, 7), sharex=True, constrained_layout=True)
    for i, (profile, group) in enumerate(ok.groupby("profile", sort=False)):
        per_round = group.groupby("round")
        color = f"C{i}"
        axes[0].plot(per_round["density"].mean(), marker="o", color=color, label=profile)
        axes[1].plot(per_round["peak_memory_bytes"].max() / KIB, marker="o", color=color, label=f"{profile} peak")
        axes[1].axhline(group["budget_bytes"].iloc[0] / KIB, color=color, ls="--", lw=1)
    axes[0].set_ylabel("density d")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(loc="upper right")
    axes[1].set_ylabel("training memory (KiB); dashed: budget")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("round")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    width = 0.4
    ax.bar(rounds["round"] - width / 2, rounds["upload_bytes"] / KIB, width, label="upload")
    ax.bar(rounds["round"] + width / 2, rounds["download_bytes"] / KIB, width, label="download")
    ax.set_xlabel("round")
    ax.set_ylabel("KiB, all devices")
    ax.legend()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths
