"""``fogsim compare``: the table, CSV, Markdown and plots of several runs, and one-line errors for bad inputs."""

import json

import pandas as pd
import pytest
import yaml

from fogsim.cli import main
from fogsim.errors import FogsimError
from fogsim.sim.compare import COLUMNS, FILES, GROUP_FILES, compare, load_run
from fogsim.sim.reports import CLIENT_COLUMNS, ROUND_COLUMNS


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def fake_run(path, accuracy, fleet, strategy="masked-fedavg", upload=100, batches=None, failed=(), tiers=None,
             scenario=None):
    """A schema-correct run directory: ``fleet`` maps profile -> (devices, budget, peak memory).

    ``batches`` maps profile -> batch_size_max per round; ``failed`` holds (round, client_id) pairs;
    ``tiers`` maps profile -> its accuracy in summary.json; ``scenario``: more keys of scenario.yaml."""
    path.mkdir(parents=True)
    (path / "scenario.yaml").write_text(yaml.safe_dump({"name": "fake", "strategy": {"name": strategy},
                                                        "pruning": {"method": "dynhp"}, **(scenario or {})}))
    rounds, clients, client_id = [], [], 0
    ids = {}
    for profile, (count, _, _) in fleet.items():
        ids[profile] = list(range(client_id, client_id + count))
        client_id += count
    for r, acc in enumerate(accuracy, start=1):
        rounds.append({c: 0 for c in ROUND_COLUMNS} | {"round": r, "accuracy": acc, "global_density": 1 - r / 10,
                                                       "upload_bytes": upload, "download_bytes": 2 * upload,
                                                       "sim_time_s": 1.5})
        for profile, (count, budget, peak) in fleet.items():
            for cid in ids[profile]:
                batch = (batches or {}).get(profile, [16] * len(accuracy))[r - 1]
                clients.append({c: 0 for c in CLIENT_COLUMNS} | {
                    "round": r, "client_id": cid, "profile": profile, "budget_bytes": budget,
                    "peak_memory_bytes": peak - (len(accuracy) - r), "batch_size_min": 8, "batch_size_max": batch,
                    "density": 0.5, "failed": int((r, cid) in failed)})
    pd.DataFrame(rounds, columns=ROUND_COLUMNS).to_csv(path / "rounds.csv", index=False)
    pd.DataFrame(clients, columns=CLIENT_COLUMNS).to_csv(path / "clients.csv", index=False)
    summary = {"scenario": "fake", "rounds": len(accuracy),
               "profiles": {p: {"devices": n, "budget_bytes": b, **({"accuracy": (tiers or {})[p]} if p in (tiers or {})
                                                                    else {})} for p, (n, b, _) in fleet.items()}}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


WITH_STRATEGY = [*COLUMNS[:3], "seed", "strategy.name", *COLUMNS[3:]]  # two_fleets' runs differ in strategy.name


@pytest.fixture
def two_fleets(tmp_path):
    a = fake_run(tmp_path / "a", [0.5, 0.8, 0.7], {"samd21": (2, 24576, 20000), "rpi4": (1, 2 ** 30, 4_000_000)},
                 batches={"samd21": [8, 12, 16], "rpi4": [32, 64, 64]}, failed={(3, 0)},
                 tiers={"samd21": 0.625, "rpi4": 0.75})
    b = fake_run(tmp_path / "b", [0.6, 0.65], {"esp32-s3": (3, 2 ** 21, 2_000_000)}, strategy="fedavg",
                 upload=300)
    return a, b


def test_files_columns_and_values(two_fleets, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, two_fleets), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([".fogsim", *FILES, *GROUP_FILES]), \
        "the marker says fogsim made it; the runs differ in strategy.name, so they are grouped by it"
    frame = pd.read_csv(out / "comparison.csv")
    assert list(frame.columns) == WITH_STRATEGY
    assert frame["seed"].isna().all() and list(frame["strategy.name"].unique()) == ["masked-fedavg", "fedavg"]
    # the union of the profiles for every run: 2 runs x 3 profiles
    assert len(frame) == 6 and set(frame["profile"]) == {"samd21", "rpi4", "esp32-s3"}
    a = frame[frame["run"] == "a"].set_index("profile")
    assert (a["final_accuracy"] == 0.7).all() and (a["best_accuracy"] == 0.8).all() and (a["best_round"] == 2).all()
    assert a.loc["samd21", "global_density"] == pytest.approx(0.7)
    assert a.loc["samd21", "upload_bytes"] == 300 and a.loc["samd21", "sim_time_s"] == pytest.approx(4.5)
    assert a.loc["samd21", "devices"] == 2 and a.loc["samd21", "budget_bytes"] == 24576
    assert a.loc["samd21", "peak_memory_bytes"] == 20000 and a.loc["rpi4", "peak_memory_bytes"] == 4_000_000
    # client 0 failed round 3, so its last round is 2 (batch 12); client 1 reached 16
    assert a.loc["samd21", "final_batch_size"] == 16 and a.loc["rpi4", "final_batch_size"] == 64
    assert a.loc["samd21", "strategy"] == "masked-fedavg"
    assert a.loc["samd21", "profile_accuracy"] == 0.625 and a.loc["rpi4", "profile_accuracy"] == 0.75
    # a profile the run does not have is empty
    assert a.loc["esp32-s3", ["devices", "budget_bytes", "peak_memory_bytes", "final_batch_size"]].isna().all()
    b = frame[frame["run"] == "b"].set_index("profile")
    assert b.loc["esp32-s3", "strategy"] == "fedavg" and b.loc["esp32-s3", "upload_bytes"] == 600
    assert b.loc["esp32-s3", "final_batch_size"] == 16 and b.loc["samd21"].isna()["peak_memory_bytes"]
    assert pd.isna(b.loc["esp32-s3", "profile_accuracy"]), "a summary without it (an older run): empty"
    md = (out / "comparison.md").read_text()
    assert "| a | fake | masked-fedavg | 0.7000 | 0.8000 (2) |" in md and "esp32-s3" in md
    printed = capsys.readouterr().out
    assert "0.8000 (2)" in printed and "fedavg" in printed and str(out) in printed and "0.6250" in printed


def test_colliding_directory_names_are_told_apart(tmp_path):
    fleet = {"rpi4": (1, 2 ** 30, 1000)}
    x = fake_run(tmp_path / "x" / "run", [0.5], fleet)
    y = fake_run(tmp_path / "y" / "run", [0.6], fleet)
    frame = compare([x, y, x], tmp_path / "cmp")
    assert list(frame["run"]) == ["x/run", "y/run", "x/run (2)"]


def bad_inputs(tmp_path):
    good = fake_run(tmp_path / "good", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    running = fake_run(tmp_path / "running", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    (running / "summary.json").unlink()
    no_clients = fake_run(tmp_path / "noclients", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    (no_clients / "clients.csv").unlink()
    old = fake_run(tmp_path / "old", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    pd.read_csv(old / "rounds.csv").drop(columns=["global_density"]).to_csv(old / "rounds.csv", index=False)
    binary = fake_run(tmp_path / "binary", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    (binary / "scenario.yaml").write_bytes(b"\xff\xfe\x00name: x")
    deep = fake_run(tmp_path / "deep", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    (deep / "summary.json").write_text("[" * 100_000)
    garbled = fake_run(tmp_path / "garbled", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    frame = pd.read_csv(garbled / "rounds.csv")
    frame["round"] = "x"
    frame.to_csv(garbled / "rounds.csv", index=False)
    shapes = {}
    for name, profiles, message in [
            ("profiles int", 5, "profiles is not a mapping of profile names"),
            ("profiles list", [1, 2], "profiles is not a mapping of profile names"),
            ("profile str", {"rpi4": "x"}, "profiles.rpi4 is not a mapping"),
            ("budget str", {"rpi4": {"budget_bytes": "y"}}, "profiles.rpi4.budget_bytes is not a number"),
            ("devices bool", {"rpi4": {"devices": True}}, "profiles.rpi4.devices is not a number")]:
        odd = fake_run(tmp_path / name.replace(" ", "-"), [0.5], {"rpi4": (1, 2 ** 30, 1000)})
        summary = json.loads((odd / "summary.json").read_text())
        (odd / "summary.json").write_text(json.dumps({**summary, "profiles": profiles}))
        shapes[name] = ([odd], f"summary.json: {message}; was it written by fogsim run?")
    return good, {
        **shapes,
        "binary scenario": ([binary], "scenario.yaml: not UTF-8 text"),
        "deep summary": ([deep], "summary.json: not readable JSON (RecursionError)"),
        "garbled rounds": ([garbled], "column round holds something other than numbers"),
        "missing": ([tmp_path / "nope"], "no such directory"),
        "file": ([tmp_path / "file.txt"], "not a directory"),
        "not a run": ([tmp_path / "empty"], "not a run directory (no scenario.yaml or rounds.csv)"),
        "running": ([running], "run is missing summary.json: it is still running or it crashed"),
        "no clients": ([no_clients], "run is missing clients.csv"),
        "old columns": ([old], "lacks the columns global_density"),
        "no runs": ([], "give at least one run directory"),
    }


@pytest.mark.parametrize("case", ["missing", "file", "not a run", "running", "no clients", "old columns", "no runs",
                                  "binary scenario", "deep summary", "garbled rounds", "profiles int",
                                  "profiles list", "profile str", "budget str", "devices bool"])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, case):
    good, cases = bad_inputs(tmp_path)
    paths, message = cases[case]
    out = tmp_path / "out" / "cmp"
    code = main(["compare", *([str(good)] if paths else []), *map(str, paths), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_out(two_fleets, tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compare", str(two_fleets[0]), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_load_run_names_the_missing_file(tmp_path):
    run = fake_run(tmp_path / "r", [0.5], {"rpi4": (1, 2 ** 30, 1000)})
    (run / "summary.json").unlink()
    with pytest.raises(FogsimError, match="summary.json"):
        load_run(run)


@pytest.mark.slow
def test_compare_real_quickstart_runs(tmp_path):
    from fogsim.sim.run import prepare, run

    run(prepare("scenarios/quickstart.yaml", ["rounds=2"]), tmp_path / "q")
    run(prepare("scenarios/quickstart.yaml", ["rounds=2", "strategy.name=fedavg",
                                             "fleet[0].overrides.memory_budget=32KiB"]), tmp_path / "f")
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "q"), str(tmp_path / "f"), "--out", str(out)]) == 0
    frame = pd.read_csv(out / "comparison.csv")
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    q = frame[frame["run"] == "q"].set_index("profile")
    assert set(q.index) == set(summary["profiles"]) == {"samd21", "nrf52840", "esp32-s3"}
    assert q["best_accuracy"].iloc[0] == pytest.approx(summary["best_accuracy"])
    assert q["upload_bytes"].iloc[0] == summary["upload_bytes"]
    for profile, tier in summary["profiles"].items():
        assert q.loc[profile, "peak_memory_bytes"] == tier["peak_memory_bytes"]
        assert q.loc[profile, "final_batch_size"] <= tier["batch_size_max"]
        assert q.loc[profile, "profile_accuracy"] == pytest.approx(tier["accuracy"])
    f = frame[frame["run"] == "f"].set_index("profile")
    assert f.loc["samd21", "budget_bytes"] == 32 * 1024 and f.loc["samd21", "strategy"] == "fedavg"
    assert all((out / name).stat().st_size > 0 for name in FILES + GROUP_FILES)
    swept = "fleet[0].overrides.memory_budget"  # set in one run only: empty in the other
    assert pd.isna(q[swept].iloc[0]) and f[swept].iloc[0] == 32 * 1024 and f["strategy.name"].iloc[0] == "fedavg"


def test_the_public_api_compares_and_loads_runs(two_fleets, tmp_path):
    import fogsim

    frame = fogsim.compare_runs(two_fleets)
    assert list(frame.columns) == WITH_STRATEGY and set(frame["run"]) == {"a", "b"}
    assert not (tmp_path / "out").exists(), "without out nothing is written"
    written = fogsim.compare_runs(two_fleets, tmp_path / "out")
    pd.testing.assert_frame_equal(frame, written)
    assert all((tmp_path / "out" / name).stat().st_size > 0 for name in FILES)
    run = fogsim.load_run(two_fleets[0])
    assert list(run.rounds["accuracy"]) == [0.5, 0.8, 0.7]


def test_runs_that_differ_only_in_seed_are_one_group(tmp_path, capsys):
    """What differs besides the seed is a typed column (sizes in bytes); runs differing only in seed are grouped:
    mean and standard deviation over seeds, in the table by value, groups.csv and comparison.md."""
    runs = []
    for budget, finals in (("16KiB", (0.5, 0.7)), ("1MiB", (0.8, 0.9))):
        for seed, final in enumerate(finals):
            runs.append(fake_run(tmp_path / f"{budget}-{seed}", [0.1, final], {"samd21": (1, 1, 1)},
                                 tiers={"samd21": final - 0.1},
                                 scenario={"seed": seed, "fleet": [{"profile": "samd21",
                                                                    "overrides": {"memory_budget": budget}}]}))
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    frame = pd.read_csv(out / "comparison.csv")
    assert list(frame.columns[2:5]) == ["scenario", "seed", "fleet[0].overrides.memory_budget"]
    assert list(frame["seed"]) == [0, 1, 0, 1]
    assert list(frame["fleet[0].overrides.memory_budget"]) == [16384, 16384, 2 ** 20, 2 ** 20]
    groups = pd.read_csv(out / "groups.csv")
    assert list(groups["fleet[0].overrides.memory_budget"]) == [16384, 2 ** 20]
    assert list(groups["final_accuracy_mean"]) == pytest.approx([0.6, 0.85])
    assert list(groups["final_accuracy_std"]) == pytest.approx([0.1414214, 0.0707107])
    assert list(groups["profile_accuracy_mean"]) == pytest.approx([0.5, 0.75])
    printed = capsys.readouterr().out
    assert "0.6000 ± 0.1414" in printed and "1.00 MiB" in printed and "16.00 KiB" in printed
    assert "more than seed noise" in " ".join(printed.split()), "0.25 apart; 2 pooled standard deviations: 0.2236"


@pytest.mark.parametrize("finals, verdict", [((0.5, 0.52, 0.9, 0.92), "more than seed noise"),
                                             ((0.5, 0.7, 0.55, 0.75), "within seed noise"),
                                             ((0.5, 0.9), "from one seed each")])
def test_the_note_says_whether_values_differ_by_more_than_seed_noise(tmp_path, capsys, finals, verdict):
    seeds = len(finals) // 2
    runs = [fake_run(tmp_path / f"{i}", [final], {"samd21": (1, 1, 1)}, scenario={"seed": i % seeds, "training": {"lr": i // seeds}})
            for i, final in enumerate(finals)]
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert verdict in printed
    assert verdict in (tmp_path / "cmp" / "comparison.md").read_text()


def test_swept_values_are_typed_and_keys_are_those_of_set():
    from fogsim.sim.groups import flatten, typed, varying_keys

    assert flatten({"a": {"b": [1, {"c": 2}], "d": {}}, "e": []}) == {"a.b[0]": 1, "a.b[1].c": 2, "e": "[]"}
    assert typed(["16KiB", 24576, None]) == [16384, 24576, None], "sizes and whole numbers of bytes"
    assert typed(["50%", "1MiB"]) == ["50%", "1MiB"], "a percentage is not a size: the column stays text"
    assert typed([0.1, 1]) == [0.1, 1] and typed([True, 1]) == ["True", "1"]
    assert varying_keys([{"name": "a", "seed": 0, "x": {"y": 1}}, {"name": "b", "seed": 1, "x": {"y": 2}, "z": 3}]) \
        == ["x.y", "z"], "name and seed are never swept columns; a key only one run has is"
