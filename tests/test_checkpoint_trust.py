"""A checkpoint is verified before a resume trusts it: anything off is one line, exit 2, and the run
directory exactly as it was (issue: trust the files).

One interrupted run is made (fog nodes and a server optimizer, so that every kind of strategy state
is in its checkpoint); each case damages a copy of it in one way, most of them keeping the manifest
consistent (as a careless tool or a bit flip followed by a rewrite would), so that the checks behind
the manifest are what must catch them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fogsim.cli import main
from fogsim.errors import FogsimError
from fogsim.rundir import Claim
from fogsim.sim import checkpoint
from fogsim.sim.run import prepare_resume
from inprocess import serve_in_process

SETS = ["rounds=5", "strategy.name=masked-fedadam", "fog.cloud_every=2",
        "fog.nodes=[{name: near, profile: mec-server}, {name: far, profile: satellite-gateway}]",
        "fleet[0].fog=far", "fleet[2].fog=near"]


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """A run stopped in round 4 of 5, its checkpoint that of round 3: the cloud's optimizer has
    moments (round 2 was a cloud round) and a fog period is under way (fog models kept)."""
    from flwr.supercore.task_identity import TaskIdentity

    out = tmp_path_factory.mktemp("trust") / "cut"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskIdentity, "_run_id", 1)
        patch.setattr(TaskIdentity, "_node_id", 1)
        patch.setattr(TaskIdentity, "_task_id", 1)
        serve_in_process(out, SETS, stop_after=4)
    found = checkpoint.latest(out)
    assert found is not None and found.name == "round-000003"
    return out


def files_of(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def damaged(cut: Path, tmp_path: Path, damage) -> Path:
    out = tmp_path / "run"
    shutil.copytree(cut, out)
    damage(checkpoint.latest(out))
    return out


def refused(out: Path, *fragments: str) -> str:
    before = files_of(out)
    with pytest.raises(FogsimError) as error:
        prepare_resume(out)
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, message
    assert files_of(out) == before, "a refused resume writes nothing"
    Claim.existing(out, "run").release(True)  # and leaves the directory unlocked
    return message


def rewrite(path: Path, name: str, change) -> None:
    """Change the arrays of ``path/name`` with ``change(dict)`` and keep the manifest consistent."""
    with np.load(path / name) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    entry = checkpoint._save_npz(path / name, arrays)
    edit_round(path, lambda found: found["files"].update({name: entry}))


def edit_round(path: Path, change) -> None:
    found = json.loads((path / "round.json").read_text())
    change(found)
    (path / "round.json").write_text(json.dumps(found))


def test_an_intact_checkpoint_is_resumed(cut, tmp_path):
    out = damaged(cut, tmp_path, lambda path: None)
    prepared = prepare_resume(out)
    try:
        assert prepared.resumed[0].round == 3
        assert any(k.startswith("hier::model::") for k in prepared.resumed[0].strategy)
        assert any(k.startswith("m_t::") for k in prepared.resumed[0].strategy)
    finally:
        prepared.resumed[1].close()
        prepared.held.release(True)


def test_a_run_still_going_on_is_not_called_damaged(cut, tmp_path):
    out = damaged(cut, tmp_path, lambda path: None)
    live = Claim.existing(out, "run")  # as the live run holds it
    try:
        with pytest.raises(FogsimError, match="in use by another fogsim command") as error:
            prepare_resume(out)
        assert "damaged" not in str(error.value)
    finally:
        live.release(True)


@pytest.mark.parametrize("round_", [-1, -5, 5, 9, True, "3", 3.0, None])
def test_a_round_that_is_not_this_runs_is_refused(cut, tmp_path, round_):
    out = damaged(cut, tmp_path, lambda path: edit_round(path, lambda found: found.update(round=round_)))
    message = refused(out, "damaged checkpoint", "round.json")
    if round_ == 5:
        assert "rounds.csv has no row for round 5" in message


def test_a_round_past_the_rows_of_rounds_csv_is_refused(cut, tmp_path):
    def cut_rows(path: Path) -> None:
        rounds = path.parent.parent / "rounds.csv"
        lines = rounds.read_text().splitlines(keepends=True)
        rounds.write_text("".join(lines[:2]))  # the header and round 1: rounds 2 to 4 lost

    out = damaged(cut, tmp_path, cut_rows)
    refused(out, "rounds.csv has no row for round 2")


@pytest.mark.parametrize("name", checkpoint.FILES)
@pytest.mark.parametrize("how", ["truncated", "flipped", "missing"])
def test_a_file_that_is_not_what_the_manifest_says_is_refused(cut, tmp_path, name, how):
    def damage(path: Path) -> None:
        data = bytearray((path / name).read_bytes())
        if how == "truncated":
            (path / name).write_bytes(bytes(data[:len(data) // 3]))
        elif how == "flipped":
            data[len(data) // 2] ^= 0x10
            (path / name).write_bytes(bytes(data))
        else:
            (path / name).unlink()

    refused(damaged(cut, tmp_path, damage), "damaged checkpoint", name)


def test_a_checkpoint_without_its_manifest_is_refused(cut, tmp_path):
    out = damaged(cut, tmp_path, lambda path: edit_round(path, lambda found: found.pop("files")))
    refused(out, "damaged checkpoint", "manifest")
    out2 = damaged(cut, tmp_path / "older", lambda path: edit_round(path, lambda found: found.update(format=2)))
    refused(out2, "another version of fogsim")


def _first(arrays: dict, prefix: str = "") -> str:
    return next(k for k in arrays if k.startswith(prefix))


ARRAY_DAMAGE = {
    "a shape": lambda a: a.update({_first(a): a[_first(a)][:3]}),
    "a dtype": lambda a: a.update({_first(a): a[_first(a)].astype(np.float64)}),
    "NaN": lambda a: a[_first(a)].__setitem__((0,) * a[_first(a)].ndim, np.nan),
    "a missing array": lambda a: a.pop(_first(a)),
    "an extra array": lambda a: a.update(extra=np.zeros(3, np.float32)),
}


@pytest.mark.parametrize("what", ARRAY_DAMAGE)
def test_global_arrays_that_do_not_fit_the_model_are_refused(cut, tmp_path, what):
    out = damaged(cut, tmp_path, lambda path: rewrite(path, "arrays.npz", ARRAY_DAMAGE[what]))
    refused(out, "damaged checkpoint", "arrays.npz")


DEVICE_DAMAGE = {
    # masks cut to a few bytes: numpy would pad them with zeros (a denser device) if trusted
    "masks truncated": lambda a: a.update(masks=a["masks"][:, :4]),
    "mask index out of range": lambda a: a["mask_index"].__setitem__(np.flatnonzero(a["trained"])[0],
                                                                     len(a["masks"])),
    "negative steps": lambda a: a["steps"].__setitem__(np.flatnonzero(a["trained"])[0], -3),
    "next prune NaN": lambda a: a["next_prune"].__setitem__(np.flatnonzero(a["trained"])[0], np.nan),
    "another fleet's size": lambda a: a.update({k: a[k][:-1] for k in ("steps", "next_prune", "trained",
                                                                      "mask_index")}),
    "steps as floats": lambda a: a.update(steps=a["steps"].astype(np.float64)),
    "an array missing": lambda a: a.pop("trained"),
}


@pytest.mark.parametrize("what", DEVICE_DAMAGE)
def test_device_states_that_do_not_fit_the_fleet_are_refused(cut, tmp_path, what):
    out = damaged(cut, tmp_path, lambda path: rewrite(path, "devices.npz", DEVICE_DAMAGE[what]))
    refused(out, "damaged checkpoint", "devices.npz")


STRATEGY_DAMAGE = {
    "another strategy's state": lambda a: a.update({"momentum_vector::0": a[_first(a, "m_t::")]}),
    "a moment of the wrong shape": lambda a: a.update({_first(a, "v_t::"): np.zeros(5, np.float32)}),
    "a moment of no array": lambda a: a.update({"m_t::nothing": np.zeros(5, np.float32)}),
    "a fog node that does not exist": lambda a: a.update({"hier::weight::9": np.ones(1)}),
    "a fog model of the wrong shape": lambda a: a.update({_first(a, "hier::model::"): np.zeros(2, np.float32)}),
    "a negative fog weight": lambda a: a.update({_first(a, "hier::weight::"): -np.ones(1)}),
    "an infinite moment": lambda a: a[_first(a, "m_t::")].__setitem__(..., np.inf),
}


@pytest.mark.parametrize("what", STRATEGY_DAMAGE)
def test_strategy_state_that_is_not_the_strategys_is_refused(cut, tmp_path, what):
    out = damaged(cut, tmp_path, lambda path: rewrite(path, "strategy.npz", STRATEGY_DAMAGE[what]))
    refused(out, "damaged checkpoint", "strategy.npz")


def test_the_command_refuses_in_one_line_with_exit_2_and_touches_nothing(cut, tmp_path, capsys):
    out = damaged(cut, tmp_path, lambda path: edit_round(path, lambda found: found.update(round=-1)))
    before = files_of(out)
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "damaged checkpoint" in err and "Traceback" not in err
    assert files_of(out) == before
