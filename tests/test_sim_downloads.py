"""Sparse downloads: a device receives the global model restricted to its mask, packed like the uploads.

The rounds run in-process, with the real client on a Grid that calls it directly (no Ray), on
``inprocess``'s grid. What a device trains must not depend on the download: only the bytes it
receives and its simulated time do. The server sends each cohort the dense model once and the
devices' masks; the worker derives each device's download (``client_app.device_download``):
both halves are also tested alone below.
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
from fogsim.sim.client_app import device_download
from fogsim.sim.device_state import DeviceState, DeviceStates, pack_masks, unpack_masks
from fogsim.sim.fog_grid import FogGrid
from fogsim.sim.messages import COHORT, MASKS, MODEL, read_cohort
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


# --- what a device receives: client_app.device_download ---------------------------------------------
SHAPES = {"w": (4, 8), "v": (8, 2)}
GLOBAL = {"w": np.arange(32, dtype=np.float32).reshape(4, 8) + 1, "b": np.ones(4, dtype=np.float32),
          "v": np.arange(16, dtype=np.float32).reshape(8, 2) - 7.5}


def mask_bits(seed):
    rng = np.random.default_rng(seed)
    return pack_masks({n: rng.random(s) < 0.3 for n, s in SHAPES.items()}, list(SHAPES))


def test_a_device_with_no_mask_or_dense_downloads_receives_the_dense_model():
    assert device_download(GLOBAL, None, SHAPES, "sparse") is GLOBAL, "no mask yet: nothing to restrict to"
    assert device_download(GLOBAL, mask_bits(1), SHAPES, "dense") is GLOBAL, "strategy.download: dense"


def test_a_masked_device_receives_the_global_model_packed_under_its_mask():
    for seed in (1, 2):
        bits = mask_bits(seed)
        masks = unpack_masks(bits, SHAPES)
        got = device_download(GLOBAL, bits, SHAPES, "sparse")
        expected = pack_masked_state(GLOBAL, masks)
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)
        assert encoded_nbytes(got) < encoded_nbytes(GLOBAL)
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


# --- what FogGrid sends: each model once per cohort, dense, with the masks ------------------------------
class RecordingGrid:
    """Two worker nodes; it keeps the cohort messages pushed and never answers (the calls time out at once)."""

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


def strategy_message(device, arrays, kind=MessageType.TRAIN):
    return Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}), dst_node_id=device,
                   message_type=kind)


def fog_over(download):
    """Five devices on two worker nodes; devices 0, 2, 3 share a mask, device 1 has its own, device 4 none."""
    states = DeviceStates(5, 1 << 20)
    a, b = mask_bits(1), mask_bits(2)
    for device, bits in ((0, a), (1, b), (2, a), (3, a)):  # device 4 never trained: no state
        states.put(device, DeviceState(3, 0.5, bits))
    grid = FogGrid(RecordingGrid(), np.ones(5), 1.0, seed=0, states=states, nodes=2, download=download)
    grid.connect()
    grid.grid.pushed = []  # the warm-up messages
    return grid, {0: a, 1: b, 2: a, 3: a}


@pytest.mark.parametrize("download", ["sparse", "dense"])
@pytest.mark.parametrize("kind", [MessageType.TRAIN, MessageType.EVALUATE])
def test_each_distinct_model_goes_once_per_cohort_dense_with_the_masks(download, kind):
    """The server packs nothing: each cohort carries every distinct model the strategy sends its
    devices once, as the strategy's own dense record, the devices' masks beside it, and the
    download mode, from which the worker derives each device's download."""
    grid, bits = fog_over(download)
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    other = ArrayRecord({k: Array(v * 2) for k, v in GLOBAL.items()})  # e.g. another fog node's model
    model_of = {0: arrays, 1: arrays, 2: arrays, 3: other, 4: arrays}
    messages = [strategy_message(d, model_of[d], kind) for d in range(5)]
    grid.send_and_receive(messages, timeout=0)
    pushed = grid.grid.pushed
    assert len(pushed) == 2, "one cohort message per worker node"
    seen = set()
    for cohort in pushed:
        assignments, mode = read_cohort(cohort.content)
        assert mode == download == cohort.content[COHORT]["download"]
        models = [cohort.content[key] for key in cohort.content.keys() if key.startswith(MODEL)]
        distinct = {id(model_of[a.device]) for a in assignments}
        assert len(models) == len(distinct), "each distinct model once, however many devices receive it"
        assert {id(m) for m in models} == distinct, "the strategy's own dense records, not packed copies"
        for a in assignments:
            seen.add(a.device)
            assert cohort.content[MODEL + str(a.model)] is model_of[a.device], "each device points at its model"
            if a.device in bits:
                assert np.array_equal(a.state.mask, bits[a.device])
                assert np.array_equal(cohort.content[MASKS][str(a.device)].numpy(), bits[a.device])
            else:
                assert a.state is None and str(a.device) not in cohort.content[MASKS], "no mask yet"
    assert seen == set(range(5))
    assert sorted(len(read_cohort(c.content)[0]) for c in pushed) == [2, 3]
    assert any(sum(k.startswith(MODEL) for k in c.content.keys()) == 2 for c in pushed), \
        "the scenario must have a cohort with two distinct models"
    assert any(sum(k.startswith(MODEL) for k in c.content.keys()) == 1 and len(read_cohort(c.content)[0]) > 1
               for c in pushed), "and one whose devices share one model"
