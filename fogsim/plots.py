"""Every picture fogsim draws, from the files it wrote: one training run, one federated run, a comparison.

Matplotlib's object-oriented API (``matplotlib.figure.Figure``), so drawing here never touches
pyplot's global state or switches the backend of a notebook that imports fogsim. The conventions
of every plot: a title naming the run, integer round ticks, byte axes in B/KiB/MiB/GiB chosen
for the data (never an exponent), and a legend wherever two lines share an axis.

Text the user wrote (a scenario, profile, fog-node or run directory name) is drawn literally:
``plain`` escapes it so that matplotlib's mathtext never reads it (``$x$`` stays ``$x$``), and
every plot is drawn with ``text.usetex`` off, whatever the caller's rcParams say.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from fogsim.errors import brief, one_line

DPI = 110
UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("B", 1))


def plain(text: object) -> str:
    """``text`` as matplotlib draws it literally: on one line (control characters escaped), every ``$``
    escaped so that mathtext never parses it, and a leading ``_`` (which hides a legend entry) kept."""
    text = one_line(str(text)).replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _literal(draw):
    """Run ``draw`` with TeX off, so that only mathtext could read text, and ``plain`` stops it."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context({"text.usetex": False}):
            return draw(*args, **kwargs)
    return drawn


def byte_unit(values) -> tuple[str, int]:
    """The largest binary unit in which the largest of ``values`` is at least 1 (B for none)."""
    values = pd.Series(values, dtype=float).dropna().abs()
    top = values.max() if len(values) else 0.0
    return next(((name, scale) for name, scale in UNITS if top >= scale), UNITS[-1])


def _bytes_axis(ax, unit: str, axis: str = "y") -> None:
    """Plain numbers in ``unit`` on ``axis``: no offset and no scientific notation (on a log scale,
    the minor ticks at 2 and 5 times a power of ten are labelled too)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    if target.get_scale() == "log":
        target.set_minor_formatter(FuncFormatter(
            lambda value, _: f"{value:g}" if value > 0 and round(value / 10 ** np.floor(np.log10(value))) in (2, 5)
            else ""))


MARKERS = ("o", "s", "^", "D", "v", "P")  # one per profile, so that identical lines stay told apart
DASHES = ("-", "--", "-.", ":")


def _round_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


# --- one device: fogsim train -----------------------------------------------------------------
@_literal
def plot_training(trace: pd.DataFrame, epochs: pd.DataFrame, summary: dict, path: Path) -> None:
    """Density, batch size, memory against the budget, and test accuracy, over training progress."""
    fig = Figure(figsize=(8, 10), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    x = trace["epoch"]
    axes[0].plot(x, trace["density"], color="tab:blue", label="density")
    axes[0].axhline(1 / summary["target_compression"], color="grey", ls=":", label="target")
    axes[0].set_ylabel("density d")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(loc="upper right")

    axes[1].step(x, trace["batch_size"], where="post", color="tab:green")
    axes[1].set_ylabel("batch size b")

    unit, scale = byte_unit([summary["budget_bytes"], *trace["memory_bytes"]])
    axes[2].stackplot(x, trace["state_bytes"] / scale, trace["activation_bytes"] / scale,
                      labels=["model state S(d)", "activations b·a(d)"], colors=["tab:orange", "tab:purple"],
                      alpha=0.8, step="post")
    axes[2].axhline(summary["budget_bytes"] / scale, color="red", ls="--", label="budget B")
    axes[2].set_ylabel(f"training memory ({unit})")
    _bytes_axis(axes[2], unit)
    axes[2].legend(loc="upper right")

    axes[3].plot(epochs["progress"] / summary["train_samples"], epochs["test_accuracy"], marker="o", color="black")
    axes[3].set_ylabel("test accuracy")
    axes[3].set_xlabel("training progress (epochs = samples / training set size)")
    fig.suptitle(f"{plain(summary['method'])} — {plain(summary['model'])} on {plain(summary['dataset'])}: "
                 f"accuracy {summary['test_accuracy']:.3f}, compression {summary['compression']:.1f}x")
    _save(fig, path)


# --- one federated run: fogsim run ------------------------------------------------------------
@_literal
def plot_run(out: Path, title: str | None = None) -> list[Path]:
    """Write accuracy.png, devices.png and traffic.png into the run directory ``out``, from its CSVs,
    and fog_nodes.png when it has fog nodes; ``title`` names the run (default: the directory's name)."""
    name = title or out.name
    title = plain(name)
    rounds = pd.read_csv(out / "rounds.csv")
    clients = pd.read_csv(out / "clients.csv")
    ok = clients[clients["failed"] == 0]

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(rounds["round"], rounds["accuracy"], marker="o", color="black")
    ax.set_ylabel("test accuracy of the global model")
    _round_axis(ax)
    fig.suptitle(f"{title}: accuracy per round")
    paths = [_save(fig, out / "accuracy.png")]

    fig = Figure(figsize=(9, 7), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    unit, scale = byte_unit(pd.concat([ok["peak_memory_bytes"], ok["budget_bytes"]]))
    every_round = pd.Index(rounds["round"], name="round")
    for i, (key, group) in enumerate(ok.groupby("profile", sort=False)):
        # A round in which none of the profile's devices finished is a gap, not a straight line; profiles
        # on the same schedule draw the same line, so each has its own marker and dash as well as colour.
        per_round = group.groupby("round")
        style = {"color": f"C{i}", "marker": MARKERS[i % len(MARKERS)], "ls": DASHES[i % len(DASHES)], "ms": 5}
        profile = plain(key)
        axes[0].plot(per_round["density"].mean().reindex(every_round), label=profile, **style)
        axes[1].plot(per_round["peak_memory_bytes"].max().reindex(every_round) / scale, label=f"{profile} peak",
                     **style)
        axes[1].axhline(group["budget_bytes"].iloc[0] / scale, color=style["color"], ls=(0, (6, 3)), lw=1,
                        label=f"{profile} budget")
    axes[0].set_ylabel("density d (mean of the profile's devices)")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside, never over a line
    axes[1].set_ylabel(f"training memory ({unit})")
    axes[1].set_yscale("log")
    _bytes_axis(axes[1], unit)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    _round_axis(axes[1])
    fig.suptitle(f"{title}: density and memory per profile")
    paths.append(_save(fig, out / "devices.png"))

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    unit, scale = byte_unit(pd.concat([rounds["upload_bytes"], rounds["download_bytes"]]))
    width = 0.4
    ax.bar(rounds["round"] - width / 2, rounds["upload_bytes"] / scale, width, label="upload")
    ax.bar(rounds["round"] + width / 2, rounds["download_bytes"] / scale, width, label="download")
    ax.set_ylabel(f"{unit}, all devices of the round")
    _bytes_axis(ax, unit)
    _round_axis(ax)
    ax.legend()
    fig.suptitle(f"{title}: traffic per round")
    paths.append(_save(fig, out / "traffic.png"))
    if (out / "fog_nodes.csv").is_file():
        paths.append(plot_fog_nodes(out, rounds, pd.read_csv(out / "fog_nodes.csv"), name))
    return paths


@_literal
def plot_fog_nodes(out: Path, rounds: pd.DataFrame, fog: pd.DataFrame, title: str) -> Path:
    """fog_nodes.png: each fog node's own model and the cloud's per round, and the wide-area traffic."""
    fig = Figure(figsize=(7, 7), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for i, (node, group) in enumerate(fog.groupby("fog_node", sort=False)):
        axes[0].plot(group["round"], group["accuracy"], marker=".", color=f"C{i}", label=f"fog node {plain(node)}")
    cloud = rounds[rounds["cloud_round"] == 1]
    axes[0].plot(cloud["round"], cloud["accuracy"], marker="o", color="black", lw=2, label="cloud (cloud rounds)")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize="small")
    unit, scale = byte_unit(pd.concat([rounds["wan_upload_bytes"], rounds["wan_download_bytes"]]))
    width = 0.4
    axes[1].bar(rounds["round"] - width / 2, rounds["wan_upload_bytes"] / scale, width, label="to the cloud")
    axes[1].bar(rounds["round"] + width / 2, rounds["wan_download_bytes"] / scale, width, label="from the cloud")
    axes[1].set_ylabel(f"wide-area traffic ({unit}), all fog nodes")
    _bytes_axis(axes[1], unit)
    _round_axis(axes[1])
    axes[1].legend(fontsize="small")
    fig.suptitle(f"{plain(title)}: fog nodes and cloud")
    return _save(fig, out / "fog_nodes.png")


# --- several runs: fogsim compare and sweep ----------------------------------------------------
@_literal
def plot_accuracy_vs_wan(runs, path: Path) -> Path:
    """Accuracy of the cloud's model against the wide-area bytes (both ways) so far, one line per run,
    a point per cloud round: flat runs (every round crosses the wide area) against fog hierarchies."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    wan = [(run.rounds["wan_upload_bytes"] + run.rounds["wan_download_bytes"]).cumsum() for run in runs]
    unit, scale = byte_unit([w.iloc[-1] if len(w) else 0 for w in wan])
    for run, total in zip(runs, wan):
        cloud = run.rounds["cloud_round"] == 1
        ax.plot(total[cloud] / scale, run.rounds["accuracy"][cloud], marker="o", ms=3, label=plain(run.name))
    ax.set_xlabel(f"wide-area bytes so far, to and from the cloud ({unit})")
    if any(len(w) and w.iloc[0] > 0 for w in wan):  # a log axis needs positive values
        ax.set_xscale("log")
    _bytes_axis(ax, unit, "x")  # 200, not 2x10^2
    ax.set_ylabel("test accuracy of the cloud's model")
    ax.legend(fontsize="small")
    fig.suptitle(f"{len(runs)} runs: accuracy against wide-area traffic")
    return _save(fig, path)


@_literal
def plot_comparison(runs, frame: pd.DataFrame, out: Path) -> None:
    """accuracy.png, accuracy_vs_upload.png, memory_batch.png and, where a run has fog nodes,
    accuracy_vs_wan.png of ``runs`` (each
    with ``name`` and ``rounds``) and their comparison ``frame`` (``compare.comparison_frame``) into ``out``."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for run in runs:
        ax.plot(run.rounds["round"], run.rounds["accuracy"], marker="o", ms=3, label=plain(run.name))
    ax.set_ylabel("test accuracy of the global model")
    _round_axis(ax)
    ax.legend(fontsize="small")
    fig.suptitle(f"{len(runs)} runs: accuracy per round")
    _save(fig, out / "accuracy.png")

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    unit, scale = byte_unit([run.rounds["upload_bytes"].sum() for run in runs])
    for run in runs:
        ax.plot(run.rounds["upload_bytes"].cumsum() / scale, run.rounds["accuracy"], marker="o", ms=3,
                label=plain(run.name))
    ax.set_xlabel(f"uploaded so far, all devices ({unit})")
    _bytes_axis(ax, unit, "x")
    ax.set_ylabel("test accuracy of the global model")
    ax.legend(fontsize="small")
    fig.suptitle(f"{len(runs)} runs: accuracy against bytes uploaded")
    _save(fig, out / "accuracy_vs_upload.png")
    if frame["cloud_every"].notna().any():  # flat runs only: it would repeat accuracy_vs_upload.png
        plot_accuracy_vs_wan(runs, out / "accuracy_vs_wan.png")

    profiles = [p for p in dict.fromkeys(frame["profile"]) if p is not None and not pd.isna(p)]
    names = [run.name for run in runs]
    x = np.arange(max(len(profiles), 1))
    width = 0.8 / max(len(names), 1)
    fig = Figure(figsize=(max(7, 1.6 * len(profiles) + 3), 7), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    unit, scale = byte_unit(frame["peak_memory_bytes"])
    peaks = frame["peak_memory_bytes"].dropna().astype(float) / scale
    top = 4 * peaks.max() if len(peaks) else None  # a budget far above every peak would flatten the bars
    labelled_above = False
    for i, name in enumerate(names):
        rows = frame[frame["run"] == name].set_index("profile").reindex(profiles)
        offset = x[:len(profiles)] - 0.4 + width * (i + 0.5)
        peak = rows["peak_memory_bytes"].astype(float) / scale
        budget = rows["budget_bytes"].astype(float) / scale
        axes[0].bar(offset, peak, width, color=f"C{i}", label=plain(name))
        inside = budget <= top if top else budget == budget
        axes[0].scatter(offset[inside.to_numpy()], budget[inside], marker="_", s=200, color="black",
                        label="budget" if i == 0 else None, zorder=3)
        if top and (~inside & budget.notna()).any():
            above = (~inside & budget.notna()).to_numpy()
            axes[0].scatter(offset[above], [top / 1.3] * int(above.sum()), marker="^", color="black",
                            label=None if labelled_above else "budget above the axis", zorder=3)
            labelled_above = True
        axes[1].bar(offset, rows["final_batch_size"].astype(float), width, color=f"C{i}", label=plain(name))
    axes[0].set_ylabel(f"peak training memory ({unit})")
    axes[0].set_yscale("log")
    _bytes_axis(axes[0], unit)
    if top:
        axes[0].set_ylim(peaks.min() / 2, top)
    axes[0].legend(fontsize="small")
    axes[1].set_ylabel("final batch size")
    axes[1].set_xticks(x[:len(profiles)], [plain(p) for p in profiles])
    axes[1].set_xlabel("device profile (no bar: the run has no such devices, or none trained)")
    axes[1].legend(fontsize="small")
    fig.suptitle(f"{len(runs)} runs: peak memory and batch size per profile")
    _save(fig, out / "memory_batch.png")


@_literal
def plot_sweep(groups: pd.DataFrame, keys: list[str], sizes: list[str], path: Path) -> Path:
    """sweep.png: final accuracy, and each profile's accuracy, against the swept value, mean over seeds with
    the standard deviation as error bars (``compare.by_value``'s groups). One swept key of numbers or sizes is
    a numeric axis (sizes: a log axis in bytes); otherwise each group of runs is one labelled position."""
    from fogsim.sim.groups import show_value

    per_group = groups.drop_duplicates(keys or ["scenario"]).reset_index(drop=True)
    numeric = len(keys) == 1 and pd.api.types.is_numeric_dtype(per_group[keys[0]]) \
        and per_group[keys[0]].notna().all()
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    if numeric:
        key = keys[0]
        order = per_group[key].astype(float).sort_values().index
        position = {i: float(per_group.at[i, key]) for i in order}
        values = pd.Series(position)
        if key in sizes or (values.min() > 0 and values.max() / values.min() >= 10):
            ax.set_xscale("log")
        ax.set_xticks(list(values), [show_value(per_group.at[i, key], key in sizes) for i in values.index])
        ax.xaxis.set_minor_locator(NullLocator())  # the ticks are the swept values, in their units
        ax.set_xlabel(plain(key))
    else:
        order = per_group.index
        position = {i: float(n) for n, i in enumerate(order)}
        if len(keys) <= 2:
            labels = ["\n".join(brief(f"{k}={show_value(per_group.at[i, k], k in sizes)}", 40) for k in keys)
                      or str(per_group.at[i, "scenario"]) for i in order]
            ax.set_xlabel("runs that differ only in seed")
        else:  # too many keys to write under each position: the rows of groups.csv, in order
            labels = [str(n + 1) for n in range(len(order))]
            ax.set_xlabel(f"group of runs that differ only in seed (the rows of groups.csv, in order; they differ in "
                          f"{len(keys)} keys)")
        ax.set_xticks(list(position.values()), [plain(label) for label in labels])
    xs = [position[i] for i in order]
    final = per_group.loc[order]
    ax.errorbar(xs, final["final_accuracy_mean"].astype(float), yerr=final["final_accuracy_std"].astype(float),
                color="black", lw=2, marker="o", capsize=4, label="global model (test set)")
    profiles = [p for p in dict.fromkeys(groups["profile"]) if p is not None and not pd.isna(p)]
    for n, profile in enumerate(profiles):
        rows = groups[groups["profile"] == profile]
        rows = per_group[keys or ["scenario"]].loc[order].merge(rows, how="left", on=keys or ["scenario"])
        ax.errorbar(xs, rows["profile_accuracy_mean"].astype(float), yerr=rows["profile_accuracy_std"].astype(float),
                    color=f"C{n}", marker=MARKERS[n % len(MARKERS)], ls=DASHES[n % len(DASHES)], capsize=3,
                    alpha=0.85, label=plain(f"{profile} (under its devices' masks)"))
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    seeds = per_group["runs"]
    said = f"{seeds.min()} seed{'s' if seeds.min() > 1 else ''}" if seeds.min() == seeds.max() \
        else f"{seeds.min()}-{seeds.max()} seeds"
    fig.suptitle(plain(f"accuracy against {', '.join(keys) or 'seed'}: mean ± sd over {said}"))
    return _save(fig, path)
