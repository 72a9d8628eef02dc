"""The fog layer through the server's real rounds, in-process (the real client, no Ray), and its topology.

A one-fog-node hierarchy that syncs every round is the flat simulation, number for number; the
traffic and time of every round add up over fog nodes and devices; a fog run is deterministic and
resumes to the files of an uninterrupted run, also when stopped between two cloud rounds.
"""

import numpy as np
import pandas as pd
import pytest

from fogsim.sim.fog import build_fog
from fogsim.sim.outputs import read_fog_nodes, read_run
from fogsim.sim.reports import FOG_COLUMNS, WALL_COLUMNS
from fogsim.sim.run import prepare
from fogsim.sim.scenario import fog_device_counts, load_scenario, resolved_yaml
from inprocess import QUICKSTART, serve_in_process

pytestmark = pytest.mark.usefixtures("flower_task_identity")

# Added with fog nodes: what the flat run and the one-node hierarchy may differ in.
LAYER_COLUMNS = ["wan_upload_bytes", "wan_download_bytes", "sim_time_s", "cloud_round", *WALL_COLUMNS]
TWO_NODES = ["fog.cloud_every=2", "fog.nodes=[{name: near, profile: mec-server}, {name: far, profile: "
             "satellite-gateway}]", "fleet[0].fog=far", "fleet[2].fog=near"]
BASE = ["rounds=4", "fraction=0.7", "fleet[0].count=3", "fleet[1].count=3", "fleet[2].count=2",
        "fleet[0].overrides.failure_rate=0.3"]


def _frames(out):
    return {name: pd.read_csv(out / name) for name in ("rounds.csv", "clients.csv", "tiers.csv")}


@pytest.mark.parametrize("strategy", [["strategy.rule=delta"], ["strategy.rule=keepers"],
                                      ["strategy.name=masked-fedadam", "strategy.server_lr=0.01"],
                                      ["strategy.name=fedavg"]])
def test_one_fog_node_syncing_every_round_equals_the_flat_simulation(tmp_path, strategy):
    sets = [*BASE, *strategy]
    serve_in_process(tmp_path / "flat", sets)
    serve_in_process(tmp_path / "one", [*sets, "fog.nodes=[{name: hub, profile: mec-server}]"])
    flat, one = _frames(tmp_path / "flat"), _frames(tmp_path / "one")
    pd.testing.assert_frame_equal(flat["rounds.csv"].drop(columns=LAYER_COLUMNS),
                                  one["rounds.csv"].drop(columns=LAYER_COLUMNS))
    pd.testing.assert_frame_equal(flat["clients.csv"].drop(columns=["fog_node"]),
                                  one["clients.csv"].drop(columns=["fog_node"]))
    pd.testing.assert_frame_equal(flat["tiers.csv"], one["tiers.csv"])
    assert set(flat["clients.csv"]["fog_node"]) == {"server"} and set(one["clients.csv"]["fog_node"]) == {"hub"}
    # Flat: the devices' own traffic crosses the wide area, every round is a cloud round.
    rounds = flat["rounds.csv"]
    assert (rounds["wan_upload_bytes"] == rounds["upload_bytes"]).all() and (rounds["cloud_round"] == 1).all()
    assert not (tmp_path / "flat" / "fog_nodes.csv").exists()


def test_traffic_and_time_of_every_round_add_up_over_fog_nodes_and_devices(tmp_path):
    out = tmp_path / "two"
    _, prepared = serve_in_process(out, [*BASE, *TWO_NODES])
    rounds, clients = read_run(out)
    fog = read_fog_nodes(out)
    assert list(pd.read_csv(out / "fog_nodes.csv").columns) == FOG_COLUMNS
    assert len(fog) == 2 * len(rounds) and [r["cloud_round"] for r in rounds] == [0, 1, 0, 1]
    layer = prepared.spec.fog
    for row in rounds:
        mine = [f for f in fog if f["round"] == row["round"]]
        ok = [c for c in clients if c["round"] == row["round"] and not c["failed"]]
        for key in ("upload_bytes", "download_bytes", "wan_upload_bytes", "wan_download_bytes"):
            assert row[key] == sum(f[key] for f in mine), (row["round"], key)
        assert row["upload_bytes"] == sum(c["upload_bytes"] for c in ok)
        assert row["clients_ok"] == sum(f["clients_ok"] for f in mine)
        assert row["clients_sampled"] == sum(f["clients_sampled"] for f in mine)
        assert row["sim_time_s"] == pytest.approx(max(f["sim_time_s"] for f in mine))
        for f in mine:
            assert f["sim_time_s"] == pytest.approx(f["device_time_s"] + f["aggregation_s"] + f["wan_time_s"])
            own = [c for c in ok if c["fog_node"] == f["fog_node"]]
            assert f["device_time_s"] == pytest.approx(max((c["sim_time_s"] for c in own), default=0.0))
            assert f["examples"] == sum(c["num_examples"] for c in own)
            node = next(n for n in layer.nodes if n.name == f["fog_node"])
            wan_s = 8 * f["wan_upload_bytes"] / node.profile.uplink + 8 * f["wan_download_bytes"] / node.profile.downlink
            assert f["wan_time_s"] == pytest.approx(wan_s)
            if row["cloud_round"]:  # a node uploads when some device of it finished a round since the last sync
                period = sum(g["clients_ok"] for g in fog if g["fog_node"] == f["fog_node"]
                             and row["round"] - 2 < g["round"] <= row["round"])
                assert f["wan_download_bytes"] > 0 and (f["wan_upload_bytes"] > 0) == (period > 0)
            else:
                assert f["wan_upload_bytes"] == f["wan_download_bytes"] == 0 and f["wan_time_s"] == 0
    # Devices sit where the scenario put them; fleet[1] names no node and is spread round-robin.
    for c in clients:
        assert c["fog_node"] == layer.nodes[layer.node_of(c["client_id"])].name
    assert {c["fog_node"] for c in clients if c["profile"] == "samd21"} == {"far"}
    # Fewer wide-area bytes than the devices move, once the cloud syncs every other round.
    assert sum(r["wan_upload_bytes"] for r in rounds) < sum(r["upload_bytes"] for r in rounds)


def test_a_fog_run_is_deterministic_and_resumes_between_cloud_rounds_to_the_same_files(tmp_path):
    sets = [*BASE, *TWO_NODES, "fog.cloud_every=3", "rounds=5", "strategy.name=masked-fedavgm"]
    serve_in_process(tmp_path / "whole", sets)
    serve_in_process(tmp_path / "again", sets, workers=3)
    out = tmp_path / "cut"
    serve_in_process(out, sets, stop_after=2)  # round 2 of a 3-round period: fog models differ from the cloud's
    assert len(read_run(out)[0]) == 2 and len(read_fog_nodes(out)) == 4
    serve_in_process(out, sets, resume=True)
    for other in ("again", "cut"):
        for name in ("rounds.csv", "clients.csv", "tiers.csv", "fog_nodes.csv"):
            a, b = (pd.read_csv(d / name) for d in (tmp_path / "whole", tmp_path / other))
            if name == "rounds.csv":
                a, b = a.drop(columns=WALL_COLUMNS), b.drop(columns=WALL_COLUMNS)
            pd.testing.assert_frame_equal(a, b, obj=f"{other}/{name}")


def test_fog_nodes_csv_has_each_nodes_own_model_between_cloud_rounds(tmp_path):
    out = tmp_path / "two"
    serve_in_process(out, [*BASE, *TWO_NODES, "fraction=1.0", "fleet[0].overrides.failure_rate=0"])
    rounds = {r["round"]: r for r in read_run(out)[0]}
    fog = read_fog_nodes(out)
    first = [f for f in fog if f["round"] == 1]
    assert all(0 < f["accuracy"] <= 1 for f in first)
    assert len({f["accuracy"] for f in first}) == 2  # two different aggregates
    # Round 1 is no cloud round: the cloud still holds the untrained model, each node its trained one.
    assert rounds[1]["cloud_round"] == 0 and rounds[1]["accuracy"] < min(f["accuracy"] for f in first)
    assert rounds[2]["cloud_round"] == 1 and rounds[2]["accuracy"] > rounds[1]["accuracy"]


@pytest.mark.parametrize("assign, fleet, expected", [
    ("round-robin", [("samd21", 5, None), ("rpi4", 4, None)], [3, 3, 3]),
    ("round-robin", [("samd21", 2, None), ("rpi4", 3, "c"), ("esp32-s3", 2, None)], [2, 1, 4]),
    ("by-profile", [("samd21", 2, None), ("rpi4", 3, None), ("samd21", 1, None), ("esp32-s3", 5, None)], [3, 3, 5]),
])
def test_assignment_rules_place_every_device_and_count_alike(tmp_path, assign, fleet, expected):
    path = tmp_path / "s.yaml"
    entries = ", ".join(f"{{profile: {p}, count: {n}{', fog: ' + f if f else ''}}}" for p, n, f in fleet)
    path.write_text(f"data: {{name: digits}}\nmodel: mlp-small\nrounds: 1\ntraining: {{batch_min: 8}}\n"
                    f"fog: {{assign: {assign}, nodes: [{{name: a}}, {{name: b}}, {{name: c}}]}}\nfleet: [{entries}]\n")
    scenario = load_scenario(path)
    assert fog_device_counts(scenario) == expected
    prepared = prepare(path)
    layer = prepared.spec.fog
    nodes = layer.of(np.arange(len(prepared.fleet)))
    assert np.bincount(nodes, minlength=3).tolist() == expected
    assert [layer.node_of(d) for d in range(len(prepared.fleet))] == nodes.tolist()
    if assign == "by-profile":  # one kind of device per node
        assert len({prepared.fleet[d].profile_name for d in range(len(prepared.fleet)) if nodes[d] == 0}) == 1


def test_a_device_transfers_at_the_slower_of_its_radio_and_its_nodes_local_link():
    prepared = prepare(QUICKSTART, ["fog.nodes=[{name: slow, overrides: {local_uplink: 1000, local_downlink: 2000}},"
                                    " {name: fast, profile: mec-server}]", "fog.assign=by-profile"])
    layer = prepared.spec.fog
    slow = layer.device_profile(0)  # samd21 at node slow
    assert (slow.uplink, slow.downlink) == (1000, 2000)
    assert slow.memory_budget == prepared.fleet[0].profile.memory_budget
    fast = layer.device_profile(2)  # nrf52840 at node fast: its own radio is the slower
    assert fast.uplink == prepared.fleet[2].profile.uplink


def test_without_fog_the_resolved_scenario_is_what_it_was():
    scenario = load_scenario(QUICKSTART)
    assert "fog" not in resolved_yaml(scenario)
    assert build_fog(scenario, prepare(QUICKSTART).fleet) is None
    fogged = load_scenario(QUICKSTART, ["fog.nodes=[{name: a}]", "fleet[0].fog=a"])
    text = resolved_yaml(fogged)
    assert "cloud_every: 1" in text and "fog: a" in text and text.count("fog: a") == 1


def test_compare_and_plots_show_the_wide_area_of_flat_and_fog_runs(tmp_path):
    from fogsim.plots import plot_run
    from fogsim.sim.compare import FILES, compare, files_of

    serve_in_process(tmp_path / "flat", BASE)
    serve_in_process(tmp_path / "fog", [*BASE, *TWO_NODES])
    for run in ("flat", "fog"):
        (tmp_path / run / "summary.json").write_text("{}")
    frame = compare([tmp_path / "flat", tmp_path / "fog"], tmp_path / "cmp")
    files = files_of(frame)
    assert "accuracy_vs_wan.png" in files and all((tmp_path / "cmp" / f).is_file() for f in files)
    flat_only = compare([tmp_path / "flat"], tmp_path / "cmp-flat")
    assert not (tmp_path / "cmp-flat" / "accuracy_vs_wan.png").exists() and "accuracy_vs_wan" not in \
        (tmp_path / "cmp-flat" / "comparison.md").read_text(), "for flat runs it repeats accuracy_vs_upload"
    assert files_of(flat_only) == FILES
    per_run = frame.drop_duplicates("run").set_index("run")
    flat_rounds, fog_rounds = (pd.read_csv(tmp_path / r / "rounds.csv") for r in ("flat", "fog"))
    assert per_run.loc["fog", "wan_bytes"] == fog_rounds["wan_upload_bytes"].sum() + fog_rounds[
        "wan_download_bytes"].sum()
    assert per_run.loc["flat", "wan_bytes"] == flat_rounds["upload_bytes"].sum() + flat_rounds["download_bytes"].sum()
    assert per_run.loc["fog", "cloud_every"] == 2 and pd.isna(per_run.loc["flat", "cloud_every"])
    from fogsim import load_run

    assert load_run(tmp_path / "flat").fog_nodes is None
    pd.testing.assert_frame_equal(load_run(tmp_path / "fog").fog_nodes, pd.read_csv(tmp_path / "fog" / "fog_nodes.csv"))
    paths = plot_run(tmp_path / "fog")
    assert tmp_path / "fog" / "fog_nodes.png" in paths and (tmp_path / "fog" / "fog_nodes.png").stat().st_size > 0
    assert tmp_path / "flat" / "fog_nodes.png" not in plot_run(tmp_path / "flat")


def test_validate_prints_the_fog_nodes(capsys, monkeypatch):
    from fogsim.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    code = main(["validate", QUICKSTART, "--set", "fog.nodes=[{name: hill, profile: satellite-gateway}, "
                 "{name: port, profile: mec-server}]", "--set", "fleet[0].fog=hill", "--set", "fog.cloud_every=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 fog nodes, the cloud aggregates every 4 rounds and in the last" in out
    hill = next(line for line in out.splitlines() if "hill" in line)
    assert "satellite-gateway" in hill and "samd21" in hill and "2 Mbit/s / 10 Mbit/s" in hill
    port = next(line for line in out.splitlines() if "port" in line)
    assert "nrf52840, esp32-s3" in port and "1 TFLOP/s" in port


def test_fog_evaluate_off_leaves_the_fog_nodes_accuracy_empty_and_nothing_else_changed(tmp_path):
    serve_in_process(tmp_path / "on", [*BASE, *TWO_NODES])
    serve_in_process(tmp_path / "off", [*BASE, *TWO_NODES, "fog.evaluate=false"])
    on, off = (pd.read_csv(tmp_path / r / "fog_nodes.csv") for r in ("on", "off"))
    assert on["accuracy"].notna().any() and off["accuracy"].isna().all() and off["loss"].isna().all()
    pd.testing.assert_frame_equal(on.drop(columns=["accuracy", "loss"]), off.drop(columns=["accuracy", "loss"]))


def test_a_sweep_plans_one_run_per_cloud_every_and_refuses_a_bad_one():
    from fogsim.errors import FogsimError
    from fogsim.sim.sweep import plan

    fog = ["fog.nodes=[{name: a}, {name: b}]"]
    points = plan(QUICKSTART, "fog.cloud_every", ["1", "3"], fog)
    assert [p.name for p in points] == ["fog.cloud_every=1", "fog.cloud_every=3"]
    assert [p.prepared.spec.fog.cloud_every for p in points] == [1, 3]
    with pytest.raises(FogsimError, match=r"sweep value fog.cloud_every=0: .*fog\.cloud_every: .*greater than or equal"):
        plan(QUICKSTART, "fog.cloud_every", ["2", "0"], fog)


@pytest.mark.slow  # an end-to-end run through Ray
def test_fogsim_run_on_ray_writes_what_the_in_process_rounds_write(tmp_path, capsys):
    """The fog layer reaches Ray's workers (the spec, with the fog nodes, travels once per worker):
    a real run gives the in-process run's files, number for number."""
    from fogsim.cli import main

    sets = ["rounds=3", *TWO_NODES]
    serve_in_process(tmp_path / "inprocess", sets)
    argv = ["run", QUICKSTART, "--out", str(tmp_path / "ray"), "--quiet", "--set", "simulation.engine=ray"]
    for assignment in sets:
        argv += ["--set", assignment]
    assert main(argv) == 0, capsys.readouterr().err
    for name in ("rounds.csv", "clients.csv", "tiers.csv", "fog_nodes.csv"):
        a, b = (pd.read_csv(tmp_path / d / name) for d in ("inprocess", "ray"))
        if name == "rounds.csv":
            a, b = a.drop(columns=WALL_COLUMNS), b.drop(columns=WALL_COLUMNS)
        pd.testing.assert_frame_equal(a, b, obj=name)
    assert (tmp_path / "ray" / "fog_nodes.png").is_file()


@pytest.mark.parametrize("method, through", [("dynhp", 3), ("dense", 0)])
def test_sync_while_pruning_syncs_every_round_of_the_pruning_window(tmp_path, method, through):
    """quickstart prunes until 0.6 of 5 rounds: the cloud aggregates after rounds 1-3, then every 4 (and the last)."""
    out = tmp_path / method
    sets = [*BASE, *TWO_NODES, "rounds=5", "fog.cloud_every=4", "fog.sync_while_pruning=true",
            f"pruning.method={method}", *(["fleet[0].overrides.memory_budget=1MiB"] if method == "dense" else [])]
    _, prepared = serve_in_process(out, sets)
    assert prepared.spec.fog.sync_through == through
    cloud = [r["round"] for r in read_run(out)[0] if r["cloud_round"]]
    assert cloud == sorted({*range(1, through + 1), 4, 5})
