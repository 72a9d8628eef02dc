"""Sparse downloads: a device receives the global model restricted to its mask, packed like the uploads.

The rounds run in-process, with the real client on a Grid that calls it directly (no Ray), on
``inprocess``'s grid. What a device trains must not depend on the download: only the bytes it
receives and its simulated time do. The server sends each cohort the dense model once and the
devices' masks; the worker counts each device's download (``client_app.download_nbytes``) and
loads the dense model under the device's mask, which is what the packed download unpacks to
(``inprocess.device_download`` builds that packed download): both halves are also tested alone below.
"""

from uuid import uuid4

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import MessageType

from fogsim.core import Topology
from fogsim.models import build_model
from fogsim.sim import server_app
from fogsim.sim.client_app import download_nbytes
from fogsim.sim.device_state import DeviceState, DeviceStates, pack_masks, unpack_masks
from fogsim.sim.fog_grid import FogGrid
from fogsim.sim.messages import COHORT, MASKS, MODEL, read_cohort
from fogsim.sim.reports import WALL_COLUMNS
from inprocess import device_download, serve_in_process
from strategies import encoded_nbytes, pack_masked_state, unpack_masked_state

# Some devices sit out rounds (fraction 0.5), so later rounds mix devices with a mask and devices without.
SETS = ["rounds=4", "fraction=0.5", "fleet[0].count=2", "fleet[1].count=2", "fleet[2].count=2",
        "training.epochs=1", "evaluation.device_masks=false"]


pytestmark = pytest.mark.usefixtures("flower_task_identity")


def run_in_process(tmp_path, monkeypatch, name, sets, workers=2):
    """Run the scenario; return the grid, the run directory, the global arrays each round started
    from, and the prunable tensors' shapes."""
    globals_ = []
    end_of_round = server_app.RoundEnd.__call__

    def recording(self, flower_round, arrays):  # called before round 1 and after every round
        globals_.append({k: a.numpy() for k, a in arrays.items()})
        return end_of_round(self, flower_round, arrays)

    monkeypatch.setattr(server_app.RoundEnd, "__call__", recording)
    grid, prepared = serve_in_process(tmp_path / name, sets, workers)
    model = build_model(prepared.scenario.model, prepared.data.input_shape, prepared.data.num_classes)
    shapes = {n: tuple(model.get_parameter(n).shape) for n in Topology(model, prepared.data.input_shape).prunable}
    return grid, tmp_path / name, {round_: arrays for round_, arrays in enumerate(globals_, start=1)}, shapes


def test_a_pruned_device_downloads_the_global_model_packed_under_its_mask(tmp_path, monkeypatch):
    grid, out, global_of, shapes = run_in_process(tmp_path, monkeypatch, "sparse", SETS)
    clients = pd.read_csv(out / "clients.csv").dropna(subset=["download_bytes"])
    dense_nbytes = encoded_nbytes(global_of[1])
    mask_of = {(round_, device): None if sent is None else sent.mask for round_, device, _, sent, _ in grid.trace}
    pruned = unpruned = 0
    for row in clients.itertuples():
        mask, received = mask_of[row.round, row.client_id], grid.received[row.round, row.client_id]
        if mask is None:
            assert row.download_bytes == dense_nbytes, "a device with no mask yet downloads the dense model"
            assert not any("::" in k for k in received), "and it receives it dense"
            continue
        pruned += 1
        masks = unpack_masks(mask, shapes)
        expected = pack_masked_state(global_of[row.round], masks)
        if encoded_nbytes(expected) >= dense_nbytes:  # a mask that kept (nearly) everything: dense is cheaper
            assert row.download_bytes == dense_nbytes and received.keys() == global_of[row.round].keys()
            unpruned += 1
            continue
        assert row.download_bytes == encoded_nbytes(expected), \
            f"device {row.client_id} in round {row.round}: the bytes of the global model packed under its mask"
        assert received.keys() == expected.keys()
        assert all(np.array_equal(received[k], expected[k]) for k in expected)
        state, _ = unpack_masked_state(received)
        for name, tensor in global_of[row.round].items():  # the global weights it may use, zeros elsewhere
            assert np.array_equal(state[name], np.where(masks[name], tensor, 0) if name in masks else tensor)
    assert pruned >= 3, "the scenario must have devices that download under a mask"
    first = clients[clients["round"] == 1]
    assert len(first) and (first["download_bytes"] == dense_nbytes).all(), "round 1: no device has a mask yet"


@pytest.mark.parametrize("sets", [
    [],
    ["strategy.name=fedavg", "pruning.method=soft", "fleet[0].profile=nrf52840"],
    ["pruning.granularity=structured", "pruning.compression=4"],
], ids=["masked-fedavg", "fedavg-soft", "structured"])
def test_sparse_and_dense_downloads_train_the_same(tmp_path, monkeypatch, sets):
    """Each device applies its own mask to what it receives: only download bytes and simulated time differ."""
    _, sparse, _, _ = run_in_process(tmp_path, monkeypatch, "sparse", SETS + sets)
    _, dense, _, _ = run_in_process(tmp_path, monkeypatch, "dense", SETS + sets + ["strategy.download=dense"])
    traffic = ["download_bytes", "sim_time_s"]
    rounds = {name: pd.read_csv(out / "rounds.csv").drop(columns=WALL_COLUMNS) for name, out in
              (("sparse", sparse), ("dense", dense))}
    clients = {name: pd.read_csv(out / "clients.csv") for name, out in (("sparse", sparse), ("dense", dense))}
    wide = ["wan_download_bytes"]  # without fog nodes, the devices' downloads are what crosses the wide area
    pd.testing.assert_frame_equal(rounds["sparse"].drop(columns=traffic + wide),
                                  rounds["dense"].drop(columns=traffic + wide))
    pd.testing.assert_frame_equal(clients["sparse"].drop(columns=traffic), clients["dense"].drop(columns=traffic))
    assert (rounds["sparse"]["download_bytes"] <= rounds["dense"]["download_bytes"]).all()
    assert rounds["sparse"]["download_bytes"].sum() < rounds["dense"]["download_bytes"].sum()
    assert rounds["sparse"]["download_bytes"].iloc[0] == rounds["dense"]["download_bytes"].iloc[0], \
        "round 1: nobody has a mask yet"
    assert (rounds["sparse"]["sim_time_s"] <= rounds["dense"]["sim_time_s"]).all()
    assert rounds["sparse"]["sim_time_s"].sum() < rounds["dense"]["sim_time_s"].sum()
    ok = clients["sparse"]["failed"] == 0
    assert (clients["sparse"]["sim_time_s"][ok] <= clients["dense"]["sim_time_s"][ok]).all()


# --- what a device receives (inprocess.device_download) and its bytes (client_app.download_nbytes) ----
SHAPES = {"w": (4, 8), "v": (8, 2)}
GLOBAL = {"w": np.arange(32, dtype=np.float32).reshape(4, 8) + 1, "b": np.ones(4, dtype=np.float32),
          "v": np.arange(16, dtype=np.float32).reshape(8, 2) - 7.5}


def mask_bits(seed):
    rng = np.random.default_rng(seed)
    return pack_masks({n: rng.random(s) < 0.3 for n, s in SHAPES.items()}, list(SHAPES))


def kept_of(bits):
    return {n: int(m.sum()) for n, m in unpack_masks(bits, SHAPES).items()}


def test_a_device_with_no_mask_or_dense_downloads_receives_the_dense_model():
    assert device_download(GLOBAL, None, SHAPES, "sparse") is GLOBAL, "no mask yet: nothing to restrict to"
    assert device_download(GLOBAL, mask_bits(1), SHAPES, "dense") is GLOBAL, "strategy.download: dense"
    assert download_nbytes(GLOBAL, None, "sparse") == encoded_nbytes(GLOBAL)
    assert download_nbytes(GLOBAL, kept_of(mask_bits(1)), "dense") == encoded_nbytes(GLOBAL)


def test_a_masked_device_receives_the_global_model_packed_under_its_mask():
    for seed in (1, 2):
        bits = mask_bits(seed)
        masks = unpack_masks(bits, SHAPES)
        got = device_download(GLOBAL, bits, SHAPES, "sparse")
        expected = pack_masked_state(GLOBAL, masks)
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)
        assert encoded_nbytes(got) < encoded_nbytes(GLOBAL)
        assert download_nbytes(GLOBAL, kept_of(bits), "sparse") == encoded_nbytes(got), "counted without packing"
        state, _ = unpack_masked_state(got)
        for name, tensor in GLOBAL.items():  # the global weights its mask kept, zeros elsewhere; the rest whole
            assert np.array_equal(state[name], np.where(masks[name], tensor, 0) if name in masks else tensor)
    doubled = {k: v * 2 for k, v in GLOBAL.items()}
    assert device_download(doubled, bits, SHAPES, "sparse")["w::values"].sum() == \
        2 * device_download(GLOBAL, bits, SHAPES, "sparse")["w::values"].sum(), "each round packs its own model"


def test_a_mask_that_kept_everything_gets_the_dense_model():
    """Packed, a full mask costs its bitmap on top of every value: the dense model is smaller."""
    full = pack_masks({n: np.ones(s, dtype=bool) for n, s in SHAPES.items()}, list(SHAPES))
    assert encoded_nbytes(pack_masked_state(GLOBAL, unpack_masks(full, SHAPES))) > encoded_nbytes(GLOBAL)
    assert device_download(GLOBAL, full, SHAPES, "sparse") is GLOBAL
    assert download_nbytes(GLOBAL, kept_of(full), "sparse") == encoded_nbytes(GLOBAL)
