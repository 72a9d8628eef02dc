"""A run directory is self-contained: the user's profile files are copied in and named relative to it,
``run.json`` says how the results were made, and a moved directory validates and resumes."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from fogsim.cli import main
from fogsim.sim import provenance
from fogsim.sim.outputs import read_rows
from fogsim.sim.run import prepare, prepare_resume, run

PROFILE = {"my-board": {"memory_budget": "64KiB", "flops": 5e7, "uplink": 2e5, "downlink": 2e5}}


@pytest.fixture
def scenario(tmp_path):
    folder = tmp_path / "scenarios"
    (folder / "boards").mkdir(parents=True)
    (folder / "boards" / "p.yaml").write_text(yaml.safe_dump(PROFILE))
    data = yaml.safe_load(open("scenarios/quickstart.yaml"))
    data.update(rounds=3, profiles=["boards/p.yaml"])
    data["fleet"].append({"profile": "my-board", "count": 1})
    (folder / "s.yaml").write_text(yaml.safe_dump(data))
    return folder / "s.yaml"


def stop_in_round(n):
    def on_round(row):
        if row["round"] == n:
            raise KeyboardInterrupt  # as an interrupt does, after the round's rows and checkpoint
    return on_round


def test_a_moved_run_directory_validates_and_resumes_without_the_original_files(tmp_path, scenario, capsys):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(prepare(scenario), out, on_round=stop_in_round(1))
    assert (out / "profiles" / "p.yaml").read_text() == (scenario.parent / "boards" / "p.yaml").read_text()
    assert yaml.safe_load((out / "scenario.yaml").read_text())["profiles"] == ["profiles/p.yaml"]
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.rmtree(scenario.parent)  # the originals are gone: the directory needs nothing outside it
    assert main(["validate", str(moved / "scenario.yaml")]) == 0, capsys.readouterr().err
    run(prepare_resume(moved), moved, resume=True)
    assert [r["round"] for r in read_rows(moved / "rounds.csv")] == [1, 2, 3]
    record = json.loads((moved / "run.json").read_text())
    assert [s["outcome"] for s in record["sessions"]] == ["interrupted", "finished"]
    assert all(s["start"] <= s["end"] for s in record["sessions"])


def test_run_json_records_versions_host_and_the_command(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "scenarios/quickstart.yaml", "--set", "rounds=1", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "run.json").read_text())
    import flwr
    import numpy
    import torch

    assert record["versions"]["torch"] == torch.__version__.split("+")[0]
    assert record["versions"]["numpy"] == numpy.__version__ and record["versions"]["flwr"] == flwr.__version__
    assert record["versions"]["fogsim"] and record["versions"]["python"] and record["host"]["cpus"] >= 1
    (session,) = record["sessions"]
    assert session["outcome"] == "finished" and "--out" in session["command"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # the scenario lies in this repository
        assert record["scenario_commit"].removesuffix("+dirty") == head


def test_a_repeated_profile_file_name_gets_its_own_copy(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "p.yaml").write_text(folder)
    (tmp_path / "out").mkdir()
    names = provenance.copy_profiles(["a/p.yaml", "b/p.yaml"], tmp_path, tmp_path / "out")
    assert names == ["profiles/p.yaml", "profiles/1-p.yaml"]
    assert [(tmp_path / "out" / n).read_text() for n in names] == ["a", "b"]
