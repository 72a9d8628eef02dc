"""The quickstart scenario end to end, on Flower and Ray and on the local engine: files, budgets,
and the same results from both."""

import json

import pandas as pd
import pytest

from fogsim.cli import main
from fogsim.sim.reports import CLIENT_COLUMNS, ROUND_COLUMNS, TIER_COLUMNS, WALL_COLUMNS
from fogsim.sim.run import prepare, run

pytestmark = pytest.mark.slow
QUICKSTART = "scenarios/quickstart.yaml"
SHORT = ["rounds=3", "fraction=0.7", "fleet[1].overrides.failure_rate=0.5"]  # devices that sit out, that drop out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The shortened quickstart, run twice with the same seed: once through the command line on
    Flower and Ray with two workers, once on the local engine (one worker, in this process)."""
    root = tmp_path_factory.mktemp("runs")
    sets = [*SHORT, "simulation.engine=ray", "simulation.num_cpus=2"]
    assert main(["run", QUICKSTART, "--out", str(root / "a"), "--quiet", *[f"--set={s}" for s in sets]]) == 0
    run(prepare(QUICKSTART, [*SHORT, "simulation.engine=local"]), root / "b")
    return root / "a", root / "b"


def test_run_directory_holds_every_file(two_runs):
    out, _ = two_runs
    names = {p.name for p in out.iterdir()}
    assert {"scenario.yaml", "rounds.csv", "clients.csv", "summary.json",
            "tiers.csv", "accuracy.png", "devices.png", "traffic.png"} <= names
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns) == ROUND_COLUMNS and list(rounds["round"]) == [1, 2, 3]
    assert list(pd.read_csv(out / "clients.csv").columns) == CLIENT_COLUMNS
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["profiles"]) == {"samd21", "nrf52840", "esp32-s3"}
    assert summary["accuracy"] > 0.5
    local = [tier["local_accuracy"] for tier in summary["profiles"].values() if tier.get("local_accuracy")]
    assert local and all(0 < accuracy <= 1 for accuracy in local)
    assert all(0 < tier["accuracy"] <= 1 for tier in summary["profiles"].values()), "always there, per profile"
    tiers = pd.read_csv(out / "tiers.csv")
    assert list(tiers.columns) == TIER_COLUMNS and list(tiers["profile"]) == list(summary["profiles"])


def test_every_device_stays_within_its_budget(two_runs):
    clients = pd.read_csv(two_runs[0] / "clients.csv")
    ok = clients[clients["failed"] == 0]
    assert len(ok) > 0
    assert (ok["peak_memory_bytes"] <= ok["budget_bytes"]).all()
    tiny = ok[ok["profile"] == "samd21"]
    assert (tiny["batch_size_max"] < ok[ok["profile"] == "esp32-s3"]["batch_size_max"].max()).all()


def test_pruned_uploads_and_downloads_are_sparse(two_runs):
    clients = pd.read_csv(two_runs[0] / "clients.csv")
    dense = clients.loc[clients["round"] == 1, "download_bytes"]  # no device holds a mask yet: the dense model
    assert dense.nunique() == 1
    last = clients[(clients["failed"] == 0) & (clients["round"] == 3)]
    assert (last["upload_bytes"] < dense.iloc[0] / 2).all()
    assert (last["download_bytes"] < dense.iloc[0] / 2).all()


def test_same_seed_gives_the_same_files_on_either_engine(two_runs):
    a, b = (pd.read_csv(out / "rounds.csv").drop(columns=WALL_COLUMNS) for out in two_runs)
    pd.testing.assert_frame_equal(a, b)
    ca, cb = (pd.read_csv(out / "clients.csv") for out in two_runs)
    assert ca["failed"].any() and (a["clients_sampled"] < 6).any(), "devices that drop out and sit out"
    pd.testing.assert_frame_equal(ca, cb)
    pd.testing.assert_frame_equal(*(pd.read_csv(out / "tiers.csv") for out in two_runs))


def test_flowers_engine_looks_for_the_servers_messages_every_10_ms_while_fogsim_runs_it():
    """Flower's engine hands messages to its workers from a feeder that sleeps 0.1 s between looks;
    fogsim bounds that sleep (run.brisk_engine) for its runs and puts Flower back after."""
    import threading
    import time

    from flwr.server.superlink.fleet.vce import vce_api

    from fogsim.sim.run import ENGINE_POLL_S, brisk_engine

    class State:
        looks = 0

        def get_message_ins(self, node_id, limit):
            State.looks += 1
            return []

    original = vce_api.add_messages_to_queue
    undo = brisk_engine()
    try:
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        started = time.perf_counter()
        vce_api.add_messages_to_queue(State(), None, {1: 0}, stop)
        assert time.perf_counter() - started < 0.5, "the feeder still stops when the engine stops"
        assert State.looks >= 0.2 / ENGINE_POLL_S / 3, f"{State.looks} looks in 0.2 s"
    finally:
        undo()
    assert vce_api.add_messages_to_queue is original
