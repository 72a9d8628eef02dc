"""benchmarks/speed.py: the plan alternates, --only picks, the scenario is fogsim's workload, the
ratios and the table read the runs right, and the floor worker trains (digits, 20 devices, 1 round)."""

import json
import sys

import pytest


@pytest.fixture(scope="module")
def speed(benchmarks_on_path):
    import speed

    return speed


def _rows(speed, quickstart=False, suite=False):
    return speed.contenders(["ray", "local"], num_cpus=2, quickstart=quickstart, suite=suite)


def test_passes_alternate_round_robin(speed):
    rows = speed.select(_rows(speed, quickstart=True), ["floor", "pfl-1", "quickstart"])
    counts = {"floor": 2, "pfl-1": 2, "quickstart": 3}
    order = [(rep, row.key) for rep, row in speed.plan(rows, counts)]
    assert order == [(1, "floor"), (1, "pfl-1"), (1, "quickstart"), (2, "floor"), (2, "pfl-1"),
                     (2, "quickstart"), (3, "quickstart")]


def test_only_names_keys_or_their_groups(speed):
    rows = _rows(speed, suite=True)
    assert [r.key for r in speed.select(rows, ["pfl"])] == ["pfl-1", "pfl-2"]
    assert [r.key for r in speed.select(rows, ["fogsim-off"])] == ["fogsim-off-ray", "fogsim-off-local"]
    assert [r.key for r in speed.select(rows, ["suite"])] == ["suite", "suite-fast"]
    assert speed.select(rows, None) == rows
    with pytest.raises(speed.UserError, match="--only quickstart: no such contender"):
        speed.select(rows, ["quickstart"])  # not without --quickstart
    ray, local = speed.select(rows, ["fogsim-on"])
    assert (ray.processes, local.processes, ray.engine, ray.pruning) == (2, 1, "ray", True)


def test_engine_sets(speed):
    assert speed.engine_sets("local", known=True) == ["simulation.engine=local"]
    assert speed.engine_sets("ray", known=False) == []
    with pytest.raises(speed.UserError, match="no simulation.engine setting"):
        speed.engine_sets("local", known=False)


@pytest.mark.parametrize("pruning", [False, True])
def test_the_scenario_is_the_workload_and_validates(speed, tmp_path, pruning):
    from fogsim.sim import draws
    from fogsim.sim.run import prepare
    from fogsim.sim.scenario import Simulation

    workload = speed.Workload("digits", devices=20, clients=5, rounds=1, test_samples=100)
    paths = speed.write_scenarios(tmp_path, workload, num_cpus=2)
    rows = speed.select(_rows(speed), ["fogsim"])
    sets = speed.check_fogsim(rows, paths, workload)
    engine = "local" if "engine" in Simulation.model_fields else "ray"
    prepared = prepare(paths[pruning], sets[f"fogsim-{'on' if pruning else 'off'}-{engine}"])
    s = prepared.scenario
    assert len(prepared.fleet) == 20 and draws.most_sampled(20, s.fraction) == 5
    assert (s.model, s.rounds, s.training.epochs, s.training.batch_size, s.training.lr) == ("mlp", 1, 1, 32, 0.05)
    assert s.data.partition.per_device == 100 and s.evaluation.test_samples == 100
    assert (s.pruning.method, s.strategy.name) == (("dynhp", "masked-fedavg") if pruning else ("dense", "fedavg"))
    assert all(len(prepared.spec.partitions[d]) == 100 for d in range(20))


def _run(key, processes, rep, median, first, whole, status="ok", memory=1000.0):
    return {"key": key, "contender": key, "processes": processes, "repetition": rep, "status": status,
            "median_round_s": median, "round1_s": first, "whole_run_s": whole, "peak_memory_mib": memory,
            "accuracy": 0.8}


def test_summary_ratios_and_table(speed):
    rows = _rows(speed, quickstart=True)
    by_key = {r.key: r for r in rows}
    runs = [_run("floor", 1, 1, 1.0, 1.2, 10.0), _run("floor", 1, 2, 3.0, 1.4, 30.0),
            _run("pfl-1", 1, 1, 4.0, 4.0, 40.0), _run("pfl-2", 2, 1, 2.5, 3.0, 50.0),
            _run("fogsim-off-ray", 2, 1, 5.0, 9.0, 25.0, memory=3000.0),
            _run("fogsim-off-local", 1, 1, 1.0, 2.0, 20.0),
            _run("fogsim-on-local", 1, 1, None, None, 5.0, status="failed (exit 1)"),
            _run("quickstart", None, 1, None, None, 12.0)]
    summary = {s["key"]: s for s in speed.summarize(runs, list(by_key.values()))}
    assert list(summary) == ["floor", "pfl-1", "pfl-2", "fogsim-off-ray", "fogsim-off-local", "fogsim-on-local",
                             "quickstart"], "in the order of a pass, only what ran"
    floor = summary["floor"]
    assert (floor["median_round_s"], floor["round1_s"], floor["whole_run_s"]) == pytest.approx((2.0, 1.3, 20.0))
    assert floor["median_round_vs_floor"] is None and floor["median_round_vs_pfl"] == pytest.approx(0.5)
    ray = summary["fogsim-off-ray"]
    assert ray["median_round_vs_floor"] == pytest.approx(2.5) and ray["whole_run_vs_floor"] == pytest.approx(1.25)
    assert ray["median_round_vs_pfl"] == pytest.approx(2.0) and ray["whole_run_vs_pfl"] == pytest.approx(0.5), \
        "fogsim on Ray with 2 CPUs is compared with pfl 2 processes"
    local = summary["fogsim-off-local"]
    assert local["median_round_vs_pfl"] == pytest.approx(0.25), "the local engine with pfl 1 process"
    assert summary["pfl-2"]["median_round_vs_pfl"] is None, "not with itself"
    assert summary["quickstart"]["whole_run_vs_floor"] is None and summary["quickstart"]["whole_run_s"] == 12.0
    failed = summary["fogsim-on-local"]
    assert failed["median_round_s"] is None and failed["failed"] == "failed (exit 1)"

    lines = speed.table(list(summary.values())).splitlines()
    assert len(lines) == 2 + len(summary)
    assert lines[0].startswith("| contender | processes | median round (s) | round 1 (s) | whole run (s) | "
                               "peak memory (MiB) | median round vs floor |")
    assert lines[2] == "| floor (plain PyTorch) | 1 | 2.000 | 1.300 | 20.0 | 1000 | – | – | 0.50x | 0.50x |"
    assert "| fogsim, pruning off (ray) | 2 | 5.000 | 9.000 | 25.0 | 3000 | 2.50x | 1.25x | 2.00x | 0.50x |" in lines
    assert any(line.startswith("| fogsim, pruning on (local) (failed (exit 1)) | 1 | – |") for line in lines)
    assert any(line.startswith("| fogsim run scenarios/quickstart.yaml (whole command) | – | – | – | 12.0 |")
               for line in lines)


def test_the_worker_line_is_found_among_other_output(speed):
    out = 'Metrics at iteration 0:\n{"worker": "pfl", "round_wall_s": [1.0]}\n{not json\n[1, 2]\nbye\n'
    assert speed.worker_result(out) == {"worker": "pfl", "round_wall_s": [1.0]}
    assert speed.worker_result("no result\n") is None


def test_floor_worker_trains_a_tiny_fleet(speed):
    workload = speed.Workload("digits", devices=20, clients=5, rounds=1, test_samples=100)
    result = speed.floor_worker(workload)
    assert len(result["round_wall_s"]) == 1 and result["round_wall_s"][0] > 0
    assert 0.2 < result["accuracy"] <= 1.0, "one round of FedAvg on digits is above chance (0.1)"
    assert result["ready"] <= result["last_round_end"]


def test_a_run_in_its_own_process_writes_the_results(speed, tmp_path, capsys):
    out = tmp_path / "out"
    code = speed.main(["--out", str(out), "--only", "floor", "--dataset", "digits", "--devices", "20",
                       "--clients", "5", "--rounds", "1", "--test-samples", "100"])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    (run,) = result["runs"]
    assert run["key"] == "floor" and run["status"] == "ok" and run["peak_memory_mib"] > 50
    assert 0 < run["median_round_s"] < run["whole_run_s"]
    assert result["workload"]["devices"] == 20 and result["environment"]["torch"]
    assert "| floor (plain PyTorch) | 1 |" in (out / "results.md").read_text()
    assert (out / "summary.csv").exists() and (out / "runs.csv").exists()
    assert speed.main(["--out", str(out), "--only", "floor"]) == 2, "an --out with runs is refused"
    assert "already holds runs" in capsys.readouterr().err


def test_a_command_row_is_timed_and_its_failure_shown(speed, tmp_path):
    import argparse

    args = argparse.Namespace(threads=1, timeout=30, sample_interval=0.05)
    row = speed.Contender("fails", "fails", "command", argv=(sys.executable, "-c", "import sys; sys.exit(3)"))
    run = speed.launch(row, 1, tmp_path / "fails-1", speed.Workload(), {}, {}, args)
    assert run["status"] == "failed (exit 3)" and run["whole_run_s"] > 0 and run["median_round_s"] is None


def test_missing_pfl_is_one_line_and_exit_2(speed, tmp_path, monkeypatch, capsys):
    real = speed.importlib.util.find_spec
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name, *a: None if name == "pfl" else real(name, *a))
    assert speed.main(["--out", str(tmp_path / "out"), "--only", "pfl"]) == 2
    assert capsys.readouterr().err == "error: pfl is not installed: pip install -e '.[bench]'\n"


def test_each_contender_gets_its_command_and_one_thread(speed, tmp_path):
    rows = {r.key: r for r in _rows(speed, quickstart=True)}
    workload = speed.Workload("digits", devices=20, clients=5, rounds=1)
    scenarios = {False: tmp_path / "off.yaml", True: tmp_path / "on.yaml"}
    sets = {"fogsim-on-local": ["simulation.engine=local"]}

    def command(key, threads=1):
        return speed.command_for(rows[key], tmp_path / key, workload, scenarios, sets, threads)

    for key in rows:
        (tmp_path / key).mkdir()
    argv, env = command("pfl-2")
    assert argv[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    assert argv[-4:] == ["--worker", "pfl", "--spec", str(tmp_path / "pfl-2" / "spec.json")]
    assert env["PFL_PYTORCH_DEVICE"] == "cpu" and env["OMP_NUM_THREADS"] == "1"
    argv, env = command("pfl-1")
    assert argv[0] == sys.executable and argv[2:4] == ["--worker", "pfl"]
    command("fogsim-on-local")
    spec = json.loads((tmp_path / "fogsim-on-local" / "spec.json").read_text())
    assert spec["scenario"] == str(tmp_path / "on.yaml") and spec["sets"] == ["simulation.engine=local"]
    assert spec["workload"]["devices"] == 20
    argv, env = command("quickstart")
    assert argv[-5:] == ["run", "scenarios/quickstart.yaml", "--out", str(tmp_path / "quickstart" / "run"), "--quiet"]
    assert env.get("OMP_NUM_THREADS") == speed.os.environ.get("OMP_NUM_THREADS"), "a command runs as a user runs it"
    assert command("floor", threads=0)[1].get("OMP_NUM_THREADS") == speed.os.environ.get("OMP_NUM_THREADS"), \
        "--threads 0 leaves the libraries' defaults"
