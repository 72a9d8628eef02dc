"""``fogsim sweep``: every value is checked before anything runs; runs beside their comparison; a crash keeps runs."""

import pandas as pd
import pytest

import fogsim.sim.run as sim_run
from fogsim.cli import main
from fogsim.sim.compare import FILES, GROUP_FILES
from fogsim.sim.sweep import run_name, split_seeds, split_values

QUICKSTART = "scenarios/quickstart.yaml"
SHORT = ["--set", "rounds=1"]


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def sweep(out, key, values, *extra):
    return main(["sweep", QUICKSTART, "--key", key, "--values", values, "--out", str(out), "--quiet", *SHORT,
                 *extra])


def no_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a run started although a value was bad")
    monkeypatch.setattr(sim_run, "run", refuse)


@pytest.mark.parametrize("key, values, message", [
    ("pruning.compresion", "5,10", "sweep value pruning.compresion=5: scenarios/quickstart.yaml: "
                                   "pruning.compresion: unknown key"),
    ("pruning.compression", "5,0.5", "sweep value pruning.compression=0.5: scenarios/quickstart.yaml: "
                                     "pruning.compression: must be a number >= 1"),
    ("fleet[0].overrides.memory_budget", "256KiB,2KiB",
     "sweep value fleet[0].overrides.memory_budget=2KiB: fleet[0] (samd21) cannot train dynhp: budget 2.00 KiB"),
    ("strategy.name", "fedavg,nope", "sweep value strategy.name=nope: "),
    ("fleet[5].count", "1,2", "sweep value fleet[5].count=1: "),
    ("pruning.compression", "5,5", "--values: 5 given more than once"),
    ("pruning.compression", "5,,10", "--values '5,,10': give a comma-separated list"),
    ("rounds=2", "1,2", "--key 'rounds=2': give one scenario key"),
])
def test_every_value_is_checked_before_anything_runs(tmp_path, capsys, monkeypatch, key, values, message):
    no_runs(monkeypatch)
    assert sweep(tmp_path / "sweep", key, values) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fogsim: error: {message}") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "sweep").exists() and list(tmp_path.iterdir()) == []


def test_a_non_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    no_runs(monkeypatch)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "keep.txt").write_text("mine")
    assert sweep(tmp_path / "sweep", "pruning.compression", "5,10") == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["keep.txt"]


def test_run_names_are_file_names():
    assert run_name("fleet[0].overrides.memory_budget", "256KiB") == "fleet0.overrides.memory_budget=256KiB"
    assert run_name("strategy.name", "masked-fedavg") == "strategy.name=masked-fedavg"
    assert run_name("fleet[1].profile", "a b/c") == "fleet1.profile=a-b-c"
    assert split_values(" 5, 10 ,20") == ["5", "10", "20"]


def test_values_that_share_a_directory_are_refused(tmp_path, capsys, monkeypatch):
    no_runs(monkeypatch)
    assert sweep(tmp_path / "sweep", "name", "a b,a/b") == 2
    assert "would share the run directory name=a-b" in capsys.readouterr().err


def test_a_crash_keeps_the_finished_runs(tmp_path, capsys, monkeypatch):
    calls = []

    def flaky(prepared, out, on_round=None, verbose=False):
        calls.append(prepared.scenario.pruning.compression)
        out.mkdir(parents=True)
        (out / "scenario.yaml").write_text("name: x\n")
        if len(calls) == 2:
            raise RuntimeError("the simulation ended after 0 of 1 rounds\nmore detail")
        return {}
    monkeypatch.setattr(sim_run, "run", flaky)
    out = tmp_path / "sweep"
    assert sweep(out, "pruning.compression", "5,10,20") == 1
    err = capsys.readouterr().err
    assert err == (f"fogsim: error: sweep stopped at pruning.compression=10: the simulation ended after 0 of 1 "
                   f"rounds; finished runs kept in {out}: pruning.compression=5\n")
    assert calls == [5, 10], "the sweep stops at the first crash"
    assert sorted(p.name for p in out.iterdir()) == [".fogsim", "pruning.compression=10", "pruning.compression=5"]


@pytest.mark.slow
def test_a_two_value_sweep_writes_runs_beside_the_comparison(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep(out, "pruning.compression", "5,20") == 0
    runs = ["pruning.compression=5", "pruning.compression=20"]
    assert sorted(p.name for p in out.iterdir()) == sorted([".fogsim", *FILES, *GROUP_FILES, *runs])
    for run in runs:
        assert (out / run / "summary.json").is_file() and (out / run / "rounds.csv").is_file()
    frame = pd.read_csv(out / "comparison.csv")
    assert list(dict.fromkeys(frame["run"])) == runs
    assert set(frame["profile"]) == {"samd21", "nrf52840", "esp32-s3"}
    density = frame.groupby("run", sort=False)["global_density"].first()
    assert density[runs[1]] < density[runs[0]], "20x compression keeps fewer weights than 5x"
    printed = capsys.readouterr().out
    assert all(run in printed for run in runs) and f"sweep directory: {out}" in printed


@pytest.mark.parametrize("seeds, message", [
    ("0,x", "--seeds '0,x': give comma-separated whole numbers from 0 to 4294967295, e.g. --seeds 0,1,2"),
    ("-1", "--seeds '-1': give comma-separated whole numbers"), ("", "--seeds '': give comma-separated"),
    ("1,,2", "--seeds '1,,2': give"), ("4294967296", "--seeds '4294967296': give comma-separated whole numbers from 0 to 4294967295"),
    ("3,1,3", "--seeds: 3 given more than once")])
def test_bad_seeds_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch, seeds, message):
    no_runs(monkeypatch)
    assert sweep(tmp_path / "sweep", "pruning.compression", "5,10", "--seeds", seeds) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fogsim: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "sweep").exists()


def test_the_seed_is_swept_once(tmp_path, capsys, monkeypatch):
    no_runs(monkeypatch)
    assert sweep(tmp_path / "sweep", "seed", "1,2", "--seeds", "0,1") == 2
    assert "--key seed with --seeds: give the seeds once, with --seeds" in capsys.readouterr().err
    assert split_seeds(None) is None and split_seeds(" 2, 0 ") == [2, 0]


def test_a_sweep_with_seeds_runs_every_value_with_every_seed_and_groups_them(tmp_path, capsys):
    """Budgets as bytes in a typed column, a seed column, the table by value with mean ± sd, sweep.png."""
    out = tmp_path / "sweep"
    assert sweep(out, "fleet[0].overrides.memory_budget", "16KiB,64KiB", "--seeds", "0,1") == 0
    runs = [f"fleet0.overrides.memory_budget={v},seed={s}" for v in ("16KiB", "64KiB") for s in (0, 1)]
    assert sorted(p.name for p in out.iterdir()) == sorted([".fogsim", *FILES, *GROUP_FILES, *runs])
    frame = pd.read_csv(out / "comparison.csv")
    assert list(frame.columns[:5]) == ["run", "path", "scenario", "seed", "fleet[0].overrides.memory_budget"]
    per_run = frame.drop_duplicates("run").set_index("run")
    assert list(per_run.index) == runs and list(per_run["seed"]) == [0, 1, 0, 1]
    assert list(per_run["fleet[0].overrides.memory_budget"]) == [16384, 16384, 65536, 65536]
    samd21 = frame[frame["profile"] == "samd21"].set_index("run")["budget_bytes"]
    assert list(samd21) == [16384, 16384, 65536, 65536], "the column is the budget the devices had"
    groups = pd.read_csv(out / "groups.csv")
    assert list(groups["fleet[0].overrides.memory_budget"].unique()) == [16384, 65536]
    assert set(groups["runs"]) == {2} and set(groups["seeds"]) == {"0,1"}
    for budget, group in groups.groupby("fleet[0].overrides.memory_budget"):
        finals = per_run.loc[per_run["fleet[0].overrides.memory_budget"] == budget, "final_accuracy"]
        assert group["final_accuracy_mean"].iloc[0] == pytest.approx(finals.mean())
        assert group["final_accuracy_std"].iloc[0] == pytest.approx(finals.std(ddof=1))
    printed = capsys.readouterr().out
    assert "by value: mean ± standard deviation over seeds" in printed and "16.00 KiB" in printed
    assert "final accuracy differs by" in printed
    assert (out / "sweep.png").stat().st_size > 10_000
    assert "## By value" in (out / "comparison.md").read_text()
