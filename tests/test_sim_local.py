"""The local engine: the whole run in this process, the same files as Ray's (``test_sim_run``),
and a device that crashes mid-cohort ends the run in one line with the finished rounds kept."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from fogsim.errors import FogsimError
from fogsim.sim import client_app
from fogsim.sim.run import prepare, run

QUICKSTART = "scenarios/quickstart.yaml"


def test_the_quickstart_runs_locally_without_starting_ray(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("the local engine started Ray"))
    summary = run(prepare(QUICKSTART, ["rounds=2"]), tmp_path / "run")
    assert summary["rounds"] == 2
    assert len(pd.read_csv(tmp_path / "run" / "rounds.csv")) == 2


def test_batch_ranges_are_the_batch_sizes_chosen_within_the_plan(tmp_path):
    """The plan says batch 8..32 for every device; a pass's last batch, cut short by the end of the data,
    is not a batch size the device chose, and counting its samples made the results say 2..24."""
    prepared = prepare(QUICKSTART, ["rounds=2"])
    summary = run(prepared, tmp_path / "run")
    clients = pd.read_csv(tmp_path / "run" / "clients.csv")
    ok = clients[clients["failed"] == 0]
    for tier in prepared.fleet.tiers:
        mine = ok[ok["client_id"].between(tier.first, tier.first + tier.count - 1)]
        assert (mine["batch_size_min"] >= tier.plan.batch_min).all(), tier.profile_name
        assert (mine["batch_size_max"] <= tier.plan.batch_max).all(), tier.profile_name
        profile = summary["profiles"][tier.profile_name]
        assert profile["batch_size_min"] >= tier.plan.batch_min and "trained_density" in profile
    tiers = pd.read_csv(tmp_path / "run" / "tiers.csv")
    assert "masked_density" in tiers.columns and "density" not in tiers.columns, "which density it is, in its name"


def test_a_device_that_crashes_mid_cohort_ends_the_run_in_one_line_and_keeps_the_rounds(tmp_path, monkeypatch):
    real = client_app.Worker.simulate

    def simulate(self, assignment, dense, config, download):
        if int(config["server-round"]) == 2 and assignment.device == 3:
            raise ValueError("boom\nsecond line")
        return real(self, assignment, dense, config, download)

    monkeypatch.setattr(client_app.Worker, "simulate", simulate)
    with pytest.raises(FogsimError) as caught:
        run(prepare(QUICKSTART, ["rounds=3"]), tmp_path / "run")
    message = str(caught.value)
    assert "\n" not in message and "device 3 crashed in round 2: ValueError: boom second line" in message
    assert "the finished round is in" in message
    assert len(pd.read_csv(tmp_path / "run" / "rounds.csv")) == 1, "round 1 is kept"


@pytest.mark.slow
def test_an_interrupt_stops_a_local_run_within_seconds_and_keeps_its_rounds(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "fogsim", "run", QUICKSTART, "--set", "rounds=2000",
                                "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "rounds.csv").exists() or len((out / "rounds.csv").read_text().splitlines()) < 3:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - sent < 10, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fogsim: interrupted by"), err[-2000:]
    assert len(pd.read_csv(out / "rounds.csv")) >= 2, "the finished rounds are kept"
