"""The local engine: the whole run in this process, the same files as Ray's (``test_sim_run``),
and a device that crashes mid-cohort ends the run in one line with the finished rounds kept."""

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
    assert "the 1 finished rounds are in" in message
    assert len(pd.read_csv(tmp_path / "run" / "rounds.csv")) == 1, "round 1 is kept"
