"""Per-tier accuracy: the final global model under each device's last known mask, evaluated by the server.

The runs are the server's rounds in-process with the real client (``inprocess``'s grid, no
Ray), on the quickstart's digits, with a checkpoint after every round as ``fogsim run`` writes it.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord
from flwr.supercore.task_identity import TaskIdentity

from fogsim.core import Topology, evaluate
from fogsim.models import build_model
from fogsim.sim import checkpoint, outputs, server_app
from fogsim.cli.tables import summary_table
from fogsim.sim.device_state import DeviceState, DeviceStates, pack_masks
from fogsim.sim.outputs import OutputFailed, RunFiles, read_run, read_tiers, summarize
from fogsim.sim.reports import TIER_COLUMNS
from fogsim.sim.run import prepare
from fogsim.sim.server_app import RoundEnd, ServerJob
from inprocess import QUICKSTART, serve_in_process

pytestmark = pytest.mark.usefixtures("flower_task_identity")

# Seed 10 with half the available devices sampled: the samd21 boards never train, one nrf52840
# board trains in rounds 1 and 2 only, the esp32-s3 boards train in round 3 (asserted below).
SETS = ["rounds=3", "fraction=0.5", "seed=10"]


def run_in_process(out, sets, stop_after=None, resume=False):
    return serve_in_process(out, sets, stop_after=stop_after, resume=resume)[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiers") / "full"
    with pytest.MonkeyPatch.context() as patch:  # the run identity a Flower app has, for the module's run
        for name in ("_run_id", "_node_id", "_task_id"):
            patch.setattr(TaskIdentity, name, 1)
        prepared = run_in_process(out, SETS)
    return out, prepared


def test_a_tier_not_sampled_in_the_last_round_still_has_its_accuracy(finished):
    out, prepared = finished
    clients = pd.read_csv(out / "clients.csv")
    ok = clients[clients["failed"] == 0]
    last = set(ok[ok["round"] == 3]["profile"])
    assert "nrf52840" not in last and "nrf52840" in set(ok["profile"]), \
        "the scenario must have a tier that trained, but not in the last round"
    assert "samd21" not in set(ok["profile"]), "the scenario must have a tier that never trained"
    assert "esp32-s3" in last

    tiers = pd.read_csv(out / "tiers.csv")
    assert list(tiers.columns) == TIER_COLUMNS
    tiers = tiers.set_index("profile")
    assert list(tiers.index) == ["samd21", "nrf52840", "esp32-s3"]
    assert tiers["accuracy"].between(0, 1).all() and tiers["loss"].notna().all()
    assert (tiers["devices"] == 2).all()
    trained = ok.groupby("profile")["client_id"].nunique()
    assert tiers.loc["nrf52840", "devices_with_mask"] == trained["nrf52840"] == 1
    assert tiers.loc["esp32-s3", "devices_with_mask"] == trained["esp32-s3"]
    # no mask known: the unmasked global model, which is what such a device receives
    assert tiers.loc["samd21", ["devices_with_mask", "masks_evaluated", "devices_evaluated"]].tolist() == [0, 0, 0]
    assert tiers.loc["samd21", "masked_density"] == pytest.approx(1.0, abs=0.01)
    assert tiers.loc["nrf52840", "masked_density"] < 0.5, "evaluated under its (pruned) mask"

    rounds, client_rows = read_run(out)
    summary = summarize("q", rounds, client_rows, prepared.fleet, 1.0, read_tiers(out))
    profiles = summary["profiles"]
    assert all(profiles[p]["accuracy"] == pytest.approx(tiers.loc[p, "accuracy"]) for p in profiles)
    assert profiles["nrf52840"]["local_accuracy"] is None, "its devices did not train in the last round"
    assert 0 < profiles["esp32-s3"]["local_accuracy"] <= 1
    assert "final_accuracy" not in json.dumps(summary)
    table = summary_table({**summary, "accuracy": 0.5, "sim_time_s": 1.0})
    accuracy = next(c for c in table.columns if c.header == "accuracy")
    local = next(c for c in table.columns if c.header == "local accuracy")
    assert "-" not in list(accuracy.cells) and list(accuracy.cells)[1] == f"{tiers.loc['nrf52840', 'accuracy']:.4f}"
    assert list(local.cells)[:2] == ["-", "-"]


def test_tier_accuracy_equals_an_independent_computation(finished):
    """The final global arrays and every device's mask, from the last checkpoint; each device's
    model evaluated on its own, then averaged per profile."""
    out, prepared = finished
    saved = checkpoint.latest(out)
    assert saved.name == "round-000003"
    with np.load(saved / "arrays.npz") as data:
        arrays = {k: torch.from_numpy(data[k]) for k in data.files}
    with np.load(saved / "devices.npz") as data:
        mask_index, masks = data["mask_index"], data["masks"]
    data = prepared.data
    model = build_model(prepared.scenario.model, data.input_shape, data.num_classes)
    prunable = Topology(model, data.input_shape).prunable
    sizes = [arrays[n].numel() for n in prunable]
    expected = {}
    for tier in prepared.fleet.tiers:
        scores = []
        for device in tier.ids:
            if mask_index[device] < 0:
                continue
            flat = np.unpackbits(masks[mask_index[device]], count=sum(sizes)).astype(bool)
            state = dict(arrays)
            for name, part in zip(prunable, np.split(flat, np.cumsum(sizes)[:-1])):
                state[name] = arrays[name] * torch.from_numpy(part.reshape(arrays[name].shape))
            model.load_state_dict(state)
            accuracy, loss = evaluate(model, data.test_x, data.test_y)
            kept = sum(int(torch.count_nonzero(state[n])) for n in prunable)
            scores.append((accuracy, loss, kept / sum(sizes)))
        if not scores:
            model.load_state_dict(arrays)
            accuracy, loss = evaluate(model, data.test_x, data.test_y)
            scores = [(accuracy, loss, sum(int(torch.count_nonzero(arrays[n])) for n in prunable) / sum(sizes))]
        expected[tier.profile_name] = np.mean(scores, axis=0)
    tiers = pd.read_csv(out / "tiers.csv").set_index("profile")
    for profile, (accuracy, loss, density) in expected.items():
        assert tiers.loc[profile, "accuracy"] == pytest.approx(accuracy, abs=1e-9), profile
        assert tiers.loc[profile, "loss"] == pytest.approx(loss, rel=1e-6), profile
        assert tiers.loc[profile, "masked_density"] == pytest.approx(density, abs=1e-9), profile


def test_tiers_csv_survives_resume(finished, tmp_path):
    full, _ = finished
    out = tmp_path / "cut"
    run_in_process(out, SETS, stop_after=2)
    assert len(read_run(out)[0]) == 2 and not (out / "tiers.csv").exists()
    (out / "tiers.csv").write_text("profile\nstale\n")  # as a crash after it was written would leave it
    run_in_process(out, SETS, resume=True)
    assert len(read_run(out)[0]) == 3
    pd.testing.assert_frame_equal(pd.read_csv(full / "tiers.csv"), pd.read_csv(out / "tiers.csv"))


def test_resume_removes_tiers_csv_and_a_failed_write_keeps_the_old_one(tmp_path, monkeypatch):
    files = RunFiles(tmp_path, "name: t\n")
    row = {"profile": "samd21", "devices": 2, "devices_with_mask": 1, "masks_evaluated": 1, "devices_evaluated": 1,
           "accuracy": 0.5, "loss": 1.25, "masked_density": 0.1}
    files.write_tiers([row])
    assert read_tiers(tmp_path) == [row]
    before = (tmp_path / "tiers.csv").read_bytes()

    def full_disk(file, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_write_all", full_disk)
    with pytest.raises(OutputFailed, match="tiers.csv could not be written"):
        files.write_tiers([{**row, "accuracy": 0.9}])
    assert (tmp_path / "tiers.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.csv", "rounds.csv", "scenario.yaml", "tiers.csv"]
    monkeypatch.undo()
    files.close()
    with pytest.raises(OutputFailed, match="stopped before tiers.csv"):
        files.write_tiers([row])
    RunFiles.resume(tmp_path, 0).close()
    assert not (tmp_path / "tiers.csv").exists() and read_tiers(tmp_path) == []


class Grid:
    def __init__(self, states, round_):
        self.states, self.round = states, round_


def test_one_pass_per_distinct_mask_and_a_seeded_cap_per_profile(monkeypatch):
    """esp32-s3 (devices 4..7) holds 3 distinct masks, one of them twice; nrf52840's one device shares
    a mask with esp32-s3; samd21 has none. With the cap at 2, esp32-s3 has 2 of its 3 masks evaluated."""
    prepared = prepare(QUICKSTART, ["fleet[2].count=4"])
    data, scenario = prepared.data, prepared.scenario
    states = DeviceStates(len(prepared.fleet), 1 << 20)
    model = build_model(scenario.model, data.input_shape, data.num_classes, seed=0)
    prunable = Topology(model, data.input_shape).prunable
    rng = np.random.default_rng(0)
    masks = [{n: rng.random(tuple(model.get_parameter(n).shape)) < keep for n in prunable} for keep in (0.2, 0.5, 0.8)]
    holders = {3: 0, 4: 0, 5: 1, 6: 2, 7: 2}
    for device, which in holders.items():
        states.put(device, DeviceState(1, 0.0, pack_masks(masks[which], prunable)))
    passes = []
    monkeypatch.setattr(server_app, "evaluate", lambda *a: passes.append(1) or evaluate(*a))
    job = ServerJob(prepared.spec, data, None, 1, states)
    arrays = ArrayRecord(model.state_dict())
    end = RoundEnd(job, Grid(states, 3))
    rows = {r["profile"]: r for r in end.evaluate_tiers(arrays)}
    assert len(passes) == 4, "three masks and the unmasked model, each once"
    assert rows["samd21"]["devices_with_mask"] == 0 and rows["samd21"]["masked_density"] == pytest.approx(1.0, abs=1e-3)
    nrf = rows["nrf52840"]
    assert (nrf["devices"], nrf["devices_with_mask"], nrf["masks_evaluated"], nrf["devices_evaluated"]) == (2, 1, 1, 1)
    esp = rows["esp32-s3"]
    assert (esp["devices"], esp["devices_with_mask"], esp["masks_evaluated"], esp["devices_evaluated"]) == (4, 4, 3, 4)
    single = {which: next(r for r in RoundEnd(job, Grid(_only(states, device, prunable, masks[which]), 3))
                          .evaluate_tiers(arrays) if r["profile"] == "esp32-s3")
              for which, device in ((0, 4), (1, 5), (2, 6))}
    assert esp["accuracy"] == pytest.approx((single[0]["accuracy"] + single[1]["accuracy"]
                                             + 2 * single[2]["accuracy"]) / 4), "each device counts once"
    assert esp["masked_density"] == pytest.approx(np.mean([0.2, 0.5, 0.8, 0.8]), abs=0.02)

    monkeypatch.setattr(server_app, "TIER_MASKS", 2)
    capped = [next(r for r in RoundEnd(job, Grid(states, 3)).evaluate_tiers(arrays) if r["profile"] == "esp32-s3")
              for _ in range(2)]
    assert capped[0] == capped[1], "the draw is seeded"
    assert capped[0]["masks_evaluated"] == 2 and capped[0]["devices_evaluated"] in (2, 3)
    options = {frozenset(p): [c for c in (0, 1, 2) if c in p] for p in ({0, 1}, {0, 2}, {1, 2})}
    weights = {0: 1, 1: 1, 2: 2}
    means = [sum(weights[c] * single[c]["accuracy"] for c in chosen) / sum(weights[c] for c in chosen)
             for chosen in options.values()]
    assert any(math.isclose(capped[0]["accuracy"], m) for m in means)
    states.close()


def _only(states, device, prunable, mask):
    one = DeviceStates(len(states.trained), 1 << 20)
    one.put(device, DeviceState(1, 0.0, pack_masks(mask, prunable)))
    return one
