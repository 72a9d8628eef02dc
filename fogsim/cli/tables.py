"""The tables the commands print: a fleet's plan, a run's summary per profile, a training run's summary."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from fogsim.cli.console import print_table, stdout_console
from fogsim.units import format_bytes


def bits(rate: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {unit}"
    return f"{rate:.3g} bit/s"


def flops(rate: float) -> str:
    for unit, scale in (("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if rate >= scale:
            return f"{rate / scale:.3g} {unit}"
    return f"{rate:.3g} FLOP/s"


def strategy_label(strategy) -> str:
    """``masked-fedavg (delta)``: the strategy, and the rule where it has one."""
    return f"{strategy.name} ({strategy.rule})" if strategy.name.startswith("masked-") else strategy.name


def plan_table(prepared) -> Table:
    """One row per fleet entry: what its devices may use and what their training needs."""
    scenario = prepared.scenario
    table = Table(title=f"{scenario.name}: {len(prepared.fleet)} devices, {scenario.pruning.method} on "
                        f"{scenario.model} / {scenario.data.name} ({scenario.data.partition.kind}), "
                        f"{strategy_label(scenario.strategy)}, {scenario.rounds} rounds")
    for column in ("fleet entry", "devices", "budget", "dense needs", "target needs", "start density",
                   "target compression", "batch", "samples / device"):
        table.add_column(column, justify="left" if column == "fleet entry" else "right")
    sizes = prepared.spec.partitions.sizes()
    for tier in prepared.fleet.tiers:
        plan = tier.plan
        low, high = int(sizes[tier.ids].min()), int(sizes[tier.ids].max())
        start = f"{plan.start_density:.3f} (one-shot)" if plan.one_shot else "1"
        table.add_row(f"fleet[{tier.entry}] {tier.profile_name}", str(tier.count), format_bytes(plan.budget_bytes),
                      format_bytes(plan.dense_bytes), format_bytes(plan.target_bytes), start,
                      f"{1 / plan.target_density:.3g}x", f"{plan.batch_min}..{plan.batch_max}",
                      f"{low}..{high}" if low != high else str(low))
    return table


def fog_table(prepared) -> Table | None:
    """One row per fog node: its profile, its devices, its wide-area and local links (None without fog nodes)."""
    fog = prepared.spec.fog
    if fog is None:
        return None
    through = f", every round through round {fog.sync_through} (pruning)" if fog.sync_through else ""
    table = Table(title=f"{len(fog)} fog nodes, the cloud aggregates every {fog.cloud_every} round"
                        f"{'s' if fog.cloud_every > 1 else ''}{through} and in the last")
    for column in ("fog node", "profile", "devices", "profiles of its devices", "to cloud (up / down)",
                   "local link (up / down)", "compute"):
        table.add_column(column, justify="right" if column == "devices" else "left")
    kinds: dict[int, list[str]] = {j: [] for j in range(len(fog))}
    for index, tier in enumerate(prepared.fleet.tiers):
        for j in fog.nodes_of_tier(index):
            if tier.profile_name not in kinds[j]:
                kinds[j].append(tier.profile_name)
    for j, node in enumerate(fog.nodes):
        p = node.profile
        table.add_row(node.name, node.profile_name, str(fog.devices[j]), ", ".join(kinds[j]),
                      f"{bits(p.uplink)} / {bits(p.downlink)}", f"{bits(p.local_uplink)} / {bits(p.local_downlink)}",
                      flops(p.flops))
    return table


def _accuracy(value) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"  # None, or NaN (value != value)


def summary_table(summary: dict) -> Table:
    """Per profile: what its devices cost, and ``accuracy``, the final global model under each device's
    last known mask (the server's, always there); ``local accuracy``, the devices' own models after
    their last local training, only when some trained in the last round; ``device-rounds ok / failed``
    counts a profile's devices' rounds (a device sampled in 3 rounds counts 3)."""
    wide = summary.get("wan_upload_bytes", 0) + summary.get("wan_download_bytes", 0)
    table = Table(title=f"{summary['scenario']}: accuracy {summary['accuracy']:.4f} after {summary['rounds']} rounds, "
                        f"wide area {format_bytes(wide)}, simulated {summary['sim_time_s']:.1f} s, "
                        f"wall {summary['wall_time_s']:.1f} s")
    for column in ("profile", "devices", "budget", "peak memory", "chosen batch", "compression", "accuracy", "local accuracy",
                   "device-rounds ok / failed", "uploaded", "downloaded", "simulated time"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for name, tier in summary["profiles"].items():
        trained = "peak_memory_bytes" in tier
        table.add_row(
            name, str(tier["devices"]), format_bytes(tier["budget_bytes"]),
            format_bytes(tier["peak_memory_bytes"]) if trained else "-",
            f"{tier['batch_size_min']}..{tier['batch_size_max']}" if trained else "-",
            f"{tier['trained_compression']:.3g}x" if trained else "-",
            _accuracy(tier.get("accuracy")), _accuracy(tier.get("local_accuracy")),
            f"{tier['rounds_trained']} / {tier['rounds_failed']}",
            format_bytes(tier["upload_bytes"]) if trained else "-",
            format_bytes(tier["download_bytes"]) if trained else "-",
            f"{tier['sim_time_s']:.2f} s" if trained else "-")
    return table


def print_training_summary(summary: dict, out: Path) -> None:
    table = Table(title=f"{summary['method']} — {summary['model']} on {summary['dataset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("test accuracy", f"{summary['test_accuracy']:.4f}"),
        ("density", f"{summary['density']:.4f}"),
        ("compression", f"{summary['compression']:.2f}x"),
        ("peak training memory", format_bytes(summary["peak_memory_bytes"])),
        ("budget", format_bytes(summary["budget_bytes"])),
        ("mean model state S(d)", format_bytes(summary["mean_state_bytes"])),
        ("batch size (final / max)", f"{summary['batch_size_final']} / {summary['batch_size_max']}"),
        ("optimizer steps", str(summary["steps"])),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    print_table(table)
    stdout_console().print(f"run directory: {out}")
