"""Training that diverges stops the run with one line naming where and what to lower (exit 1, finished
rounds kept) unless the scenario says go on; files never hold NaN (issue: trust the files)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from fogsim.cli import main
from fogsim.core import DeviceTrainer
from fogsim.core.config import DIVERGED_LOSS, TrainConfig
from fogsim.core.trainer import Diverged
from fogsim.data import load_dataset
from fogsim.models import build_model
from fogsim.numbers import csv_row, json_text
from fogsim.sim.outputs import read_rows

QUICKSTART = "scenarios/quickstart.yaml"
WILD = ["--set", "training.lr=10", "--set", "training.weight_decay=1"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def trainer(digits, **settings) -> DeviceTrainer:
    config = TrainConfig(method="dense", epochs=1, batch_size=32, **settings)
    model = build_model("mlp-small", digits.input_shape, digits.num_classes, seed=0)
    return DeviceTrainer(model, digits.input_shape, digits.num_classes, config, horizon=len(digits.train_y))


@pytest.mark.parametrize("settings", [{"lr": 10.0, "weight_decay": 1.0}, {"lr": 10.0, "optimizer": "sgd"}])
def test_a_loss_past_the_bound_or_not_finite_stops_training_naming_what_to_lower(digits, settings):
    t = trainer(digits, **settings)
    with pytest.raises(Diverged) as error:
        t.train(digits.train_x, digits.train_y, len(digits.train_y), generator=torch.Generator().manual_seed(0))
    assert not error.value.loss <= DIVERGED_LOSS * math.log(10)
    message = str(error.value)
    assert message.startswith(f"training diverged at step {error.value.step} ") and "lower lr (now 10)" in message
    assert ("weight_decay (now 1)" in message) == ("weight_decay" in settings) and "\n" not in message


def test_continue_trains_on_and_a_sane_run_never_stops(digits):
    rows = trainer(digits, lr=10.0, weight_decay=1.0, on_divergence="continue").train(
        digits.train_x, digits.train_y, len(digits.train_y), generator=torch.Generator().manual_seed(0))
    assert len(rows) == math.ceil(len(digits.train_y) / 32) and not all(r["loss"] <= 230 for r in rows)
    sane = trainer(digits, lr=0.05).train(digits.train_x, digits.train_y, len(digits.train_y),
                                           generator=torch.Generator().manual_seed(0))
    assert all(math.isfinite(r["loss"]) for r in sane)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_device_that_diverges_ends_the_run_in_one_line_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", QUICKSTART, "--out", str(out), "--quiet", *WILD]) == 1
    line = one_line(capsys)
    assert "diverged in round 1 (" in line and "device " in line
    assert "training.lr (now 10)" in line and "training.weight_decay (now 1)" in line
    assert "training.on_divergence" in line and "no round finished" in line
    assert not out.exists()


def test_a_server_optimizer_that_diverges_names_its_step_size_and_keeps_finished_rounds(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", QUICKSTART, "--out", str(out), "--quiet", "--set", "strategy.name=masked-fedavgm",
                 "--set", "strategy.server_lr=10", "--set", "strategy.server_momentum=0.99"])
    line = one_line(capsys)
    assert code == 1 and "diverged in round 2" in line and "strategy.server_lr (now 10)" in line, line
    assert f"the finished round is in {out}" in line
    assert [row["round"] for row in read_rows(out / "rounds.csv")] == [1]


def test_continue_writes_the_numbers_with_missing_values_as_empty_cells_and_json_null(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", QUICKSTART, "--out", str(out), "--quiet", *WILD, "--set", "rounds=2",
                 "--set", "training.on_divergence=continue"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)  # NaN, Infinity refused
    assert summary["rounds"] == 2 and summary["loss"] is None  # the diverged model's loss: missing, not NaN
    for name in ("rounds.csv", "clients.csv", "tiers.csv"):
        with open(out / name, newline="") as file:
            cells = [cell for row in csv.reader(file) for cell in row]
        assert not {c.lower() for c in cells} & {"nan", "inf", "-inf", "infinity"}, name
    assert all("loss" not in row for row in read_rows(out / "rounds.csv"))  # empty cells: missing


def test_train_names_its_own_options(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--lr", "10", "--weight-decay", "1", "--out", str(tmp_path / "t"),
                 "--quiet"])
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("fogsim")][-1]
    assert code == 1 and "lower --lr (now 10) or --weight-decay (now 1)" in line and "--on-divergence" in line
    assert "Traceback" not in err and not (tmp_path / "t").exists()


def test_missing_and_non_finite_numbers_are_empty_cells_and_null_everywhere():
    row = {"a": float("nan"), "b": float("inf"), "c": None, "d": 1.5, "e": "x", "f": 3}
    assert csv_row(row) == {"a": "", "b": "", "c": "", "d": 1.5, "e": "x", "f": 3}
    text = json_text({"x": [float("-inf"), {"y": float("nan")}], "z": 2.0})
    assert json.loads(text) == {"x": [None, {"y": None}], "z": 2.0} and "NaN" not in text


def test_the_on_divergence_option_of_run_is_the_scenario_key(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", QUICKSTART, "--out", str(out), "--quiet", *WILD, "--set", "rounds=1",
                 "--on-divergence", "continue"]) == 0
    capsys.readouterr()
    assert "on_divergence: continue" in (out / "scenario.yaml").read_text()
    assert main(["run", QUICKSTART, "--out", str(tmp_path / "x"), "--quiet", "--on-divergence", "maybe"]) == 2
    assert "--on-divergence 'maybe': choose stop or continue" in one_line(capsys)
