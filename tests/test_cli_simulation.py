"""``fogsim run / validate / profiles``: every bad input is one line, exit 2, and leaves no run directory."""

import subprocess
import sys

import pytest
import yaml

from fogsim.cli import main

GOOD = {"name": "t", "data": {"name": "digits"}, "model": "mlp-small", "rounds": 2,
        "training": {"batch_min": 8}, "fleet": [{"profile": "samd21", "count": 2}, {"profile": "rpi4"}]}


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch):
    """Rich wraps tables to the terminal; make it wide enough that names stay whole."""
    monkeypatch.setenv("COLUMNS", "250")


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_keys(**changes):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data.update(changes)
    return data


BAD = [
    ("name: t\nfleet:\n  - profile: samd21\n   count: 2\n", None, "invalid YAML at line 4"),
    (with_keys(colour="red"), None, "colour: unknown key"),
    (with_keys(rounds="three"), None, "rounds: Input should be a valid integer"),
    (with_keys(rounds=0), None, "rounds: Input should be greater than 0"),
    (with_keys(rounds=-2), None, "rounds: Input should be greater than 0"),
    (with_keys(fraction=0), None, "fraction: Input should be greater than 0"),
    (with_keys(fraction=1.01), None, "fraction: Input should be less than or equal to 1"),
    (with_keys(fleet=[{"profile": "esp33", "count": 1}]), None, "fleet[0].profile: unknown profile 'esp33'"),
    (with_keys(fleet=[{"profile": "rpi4", "count": 0}]), None, "fleet[0].count: Input should be greater than 0"),
    (with_keys(fleet=[{"profile": "rpi4"}, {"profile": "samd21", "overrides": {"memory_budget": "4KiB"}}]), None,
     "fleet[1] (samd21) cannot train dynhp: budget 4.00 KiB"),
    (with_keys(data={"name": "mnist", "root": "/nonexistent/fogsim-data"}), None, "data.name: MNIST not found"),
    (GOOD, ["--set", "fleet[1].count=-1"], "fleet[1].count: Input should be greater than 0"),
    (GOOD, ["--set", "fleet[2].count=1"], "--set fleet[2].count: fleet[2] does not exist"),
]


@pytest.mark.parametrize("data, extra, message", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, capsys, data, extra, message):
    out = tmp_path / "runs" / "x"
    code = main(["run", str(write(tmp_path, data)), "--out", str(out), "--quiet", *(extra or [])])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_validate_prints_the_plan_of_each_fleet_entry(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    printed = capsys.readouterr().out
    assert "samd21" in printed and "rpi4" in printed and "one-shot" in printed and "valid" in printed


def test_validate_refuses_the_same_bad_input(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, with_keys(rounds=0)))]) == 2
    assert "rounds: Input should be greater than 0" in capsys.readouterr().err


def test_run_refuses_an_occupied_out(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_profiles_lists_builtin_and_user_profiles(tmp_path, capsys):
    path = write(tmp_path, {"my-board": {"memory_budget": "96KiB", "flops": 1e8, "uplink": 1e6, "downlink": 1e6}})
    assert main(["profiles", "--file", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "samd21" in printed and "my-board" in printed and "96.00 KiB" in printed


def test_shipped_scenarios_validate():
    from pathlib import Path

    from fogsim.sim.scenario import load_scenario

    scenarios = sorted(Path(__file__).resolve().parent.parent.joinpath("scenarios").glob("*.yaml"))
    assert any(p.name == "quickstart.yaml" for p in scenarios)
    for path in scenarios:
        load_scenario(path)


def test_console_script_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fogsim", "run", str(tmp_path / "missing.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("fogsim: error: cannot read scenario") and "Traceback" not in result.stderr


DERIVED = "a:\n  base: b\n  uplink: 1e6\nb:\n  base: samd21\n  memory_budget: 256KiB\n"


def test_profiles_list_subcommand_and_file_after_it(tmp_path, capsys):
    path = write(tmp_path, DERIVED, "mine.yaml")
    assert main(["profiles", "list", "--file", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "samd21" in printed and "a " in printed and "256 KiB" in printed
    assert main(["profiles"]) == 0
    assert "jetson-nano" in capsys.readouterr().out


def test_profiles_show_prints_the_resolved_profile_its_file_and_chain(tmp_path, capsys):
    path = write(tmp_path, DERIVED, "mine.yaml")
    assert main(["profiles", "show", "a", "--file", str(path)]) == 0
    printed = capsys.readouterr().out
    for field in ("description", "memory_budget", "flops", "uplink", "downlink", "availability", "failure_rate"):
        assert field in printed
    assert "256 KiB (262144 bytes)" in printed and "1 Mbit/s" in printed and "2 MFLOP/s" in printed
    assert f"source: {path}" in printed
    assert f"derived from: b ({path}) <- samd21 (" in printed and "builtin.yaml)" in printed
    assert "this profile" in printed and "base b (mine.yaml)" in printed
    # --file may also come before `show`
    assert main(["profiles", "--file", str(path), "show", "b"]) == 0
    assert "derived from: samd21 (" in capsys.readouterr().out


def test_profiles_show_a_builtin(capsys):
    assert main(["profiles", "show", "rpi4"]) == 0
    printed = capsys.readouterr().out
    assert "1.00 GiB (1073741824 bytes)" in printed and "builtin.yaml" in printed
    assert "derived from: nothing (a complete definition)" in printed


@pytest.mark.parametrize("args, message", [
    (["profiles", "show", "esp33"], "unknown profile 'esp33' (known: esp32-s3, "),
    (["profiles", "show", "a", "--file", "CYCLE"], "b.base: profiles derive from each other in a cycle: a -> b -> a"),
])
def test_profiles_show_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    path = write(tmp_path, "a:\n  base: b\nb:\n  base: a\n", "cycle.yaml")
    assert main([str(path) if a == "CYCLE" else a for a in args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_flower_and_ray_logs_are_quiet_unless_verbose():
    import logging

    from fogsim.sim.run import backend_config, quiet_flower
    from fogsim.sim.scenario import parse_scenario

    scenario = parse_scenario({"fleet": [{"profile": "rpi4"}]})
    assert backend_config(scenario)["init_args"]["logging_level"] == "ERROR"
    assert backend_config(scenario)["init_args"]["log_to_driver"] is False
    assert backend_config(scenario, verbose=True)["init_args"]["logging_level"] == "INFO"
    quiet_flower(verbose=True)
    assert logging.getLogger("flwr").level == logging.INFO
    quiet_flower()
    assert logging.getLogger("flwr").level == logging.CRITICAL, "fogsim says what failed, in one line"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_run_and_sweep_offer_verbose(command, capsys):
    assert main([command, "--help"]) == 0
    assert "--verbose" in capsys.readouterr().out
