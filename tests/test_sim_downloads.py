"""Sparse downloads: a device receives the global model restricted to its mask, packed like the uploads.

The rounds run in-process, with the real client on a Grid that calls it directly (no Ray), on
``inprocess``'s grid. What a device trains must not depend on the download: only the bytes it
receives and its simulated time do.
"""

from types import SimpleNamespace
from uuid import uuid4

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.common import MessageType

from fogsim.core import Topology
from fogsim.models import build_model
from fogsim.sim import fog_grid as fog_grid_module
from fogsim.sim import server_app
from fogsim.sim.device_state import DeviceState, DeviceStates, pack_masks, read_state, unpack_masks
from fogsim.sim.fog_grid import FogGrid
from fogsim.sim.reports import WALL_COLUMNS
from inprocess import serve_in_process
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


# --- FogGrid alone, on a fake Grid --------------------------------------------------------------------
SHAPES = {"w": (4, 8), "v": (8, 2)}
GLOBAL = {"w": np.arange(32, dtype=np.float32).reshape(4, 8) + 1, "b": np.ones(4, dtype=np.float32),
          "v": np.arange(16, dtype=np.float32).reshape(8, 2) - 7.5}


class RecordingGrid:
    """Two worker nodes; it keeps the messages pushed and never answers (the calls time out at once)."""

    pull_interval = 0.0

    def __init__(self):
        self.pushed = []

    def get_node_ids(self):
        return [501, 502]

    def push_messages(self, messages):
        self.pushed.extend(messages)
        for m in messages:
            m.metadata.__dict__["_message_id"] = str(uuid4())
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, ids):
        return []


def mask_bits(seed):
    rng = np.random.default_rng(seed)
    return pack_masks({n: rng.random(s) < 0.3 for n, s in SHAPES.items()}, list(SHAPES))


def train_message(device, arrays):
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return SimpleNamespace(metadata=SimpleNamespace(message_type=MessageType.TRAIN, dst_node_id=device),
                           content=content)


def fog_over(download):
    states = DeviceStates(5, 1 << 20)
    a, b = mask_bits(1), mask_bits(2)
    for device, bits in ((0, a), (1, b), (2, a), (3, a)):  # device 4 never trained: no state
        states.put(device, DeviceState(3, 0.5, bits))
    grid = FogGrid(RecordingGrid(), np.ones(5), 1.0, seed=0, states=states, nodes=2, download=download,
                   shapes=SHAPES)
    grid.connect()
    return grid, {0: a, 1: b, 2: a, 3: a}


def received(grid):
    return {read_state(m.content)[0]: m.content["arrays"] for m in grid.grid.pushed}


def test_the_global_model_is_packed_once_per_distinct_mask(monkeypatch):
    calls = []
    real = fog_grid_module.pack_masked_state
    monkeypatch.setattr(fog_grid_module, "pack_masked_state", lambda *a: calls.append(1) or real(*a))
    grid, bits = fog_over("sparse")
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    grid.send_and_receive([train_message(d, arrays) for d in range(5)], timeout=0)
    assert len(calls) == 2, "four devices with two distinct masks: two packings"
    got = received(grid)
    assert got[4] is arrays, "a device with no mask yet receives the dense arrays"
    assert got[0] is got[2] is got[3] and got[1] is not got[0], "devices with one mask share one packed record"
    for device, mask in bits.items():
        masks = unpack_masks(mask, SHAPES)
        packed = {k: a.numpy() for k, a in got[device].items()}
        expected = pack_masked_state(GLOBAL, masks)
        assert packed.keys() == expected.keys() and all(np.array_equal(packed[k], expected[k]) for k in expected)
        assert encoded_nbytes(packed) < encoded_nbytes(GLOBAL)
    doubled = ArrayRecord({k: Array(v * 2) for k, v in GLOBAL.items()})
    grid.send_and_receive([train_message(d, doubled) for d in range(5)], timeout=0)
    assert len(calls) == 4, "the next round packs its own global model"
    assert received(grid)[0]["w::values"].numpy().sum() == 2 * got[0]["w::values"].numpy().sum()


def test_dense_downloads_and_other_messages_are_left_whole(monkeypatch):
    calls = []
    monkeypatch.setattr(fog_grid_module, "pack_masked_state", lambda *a: calls.append(1))
    grid, _ = fog_over("dense")
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    grid.send_and_receive([train_message(d, arrays) for d in range(5)], timeout=0)
    assert all(a is arrays for a in received(grid).values())
    grid, _ = fog_over("sparse")
    evaluate = [train_message(d, arrays) for d in range(5)]
    for m in evaluate:
        m.metadata.message_type = MessageType.EVALUATE
    grid.send_and_receive(evaluate, timeout=0)
    assert all(a is arrays for a in received(grid).values()) and not calls


def test_sparse_downloads_need_the_shapes():
    with pytest.raises(ValueError, match="shapes"):
        FogGrid(RecordingGrid(), np.ones(2), 1.0, seed=0, states=DeviceStates(2, 1024), nodes=2, download="sparse")


def test_a_mask_that_kept_everything_gets_the_dense_model():
    """Packed, a full mask costs its bitmap on top of every value: the dense model is smaller."""
    grid, _ = fog_over("sparse")
    full = pack_masks({n: np.ones(s, dtype=bool) for n, s in SHAPES.items()}, list(SHAPES))
    grid.states.put(4, DeviceState(3, 0.5, full))
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    grid.send_and_receive([train_message(d, arrays) for d in range(5)], timeout=0)
    got = received(grid)
    assert got[4] is arrays and got[0] is not arrays
