"""``FogGrid``: replies reported as they arrive, returned sorted by device whatever their order."""

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity

from fogsim.sim import draws
from fogsim.sim.device_state import DEVICE_KEY, DeviceState, DeviceStates, read_state, state_records
from fogsim.sim.fog_grid import FogGrid

WORKERS = [501, 502]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Building a Message needs the run identity a Flower app has (see test_masked_fedavg)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def message(kind, device):
    """A strategy's message: addressed to a device, as FogGrid.get_node_ids told it."""
    return SimpleNamespace(metadata=SimpleNamespace(message_type=kind, dst_node_id=device), content=RecordDict())


def reply(to, steps, error=None):
    content = RecordDict(state_records(None, DeviceState(steps, 0.5, np.array([steps], dtype=np.uint8))))
    return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=to), content=content,
                           has_error=lambda: error is not None, error=error)


class FakeGrid:
    """Two worker nodes; each pull hands out the replies of the next batch of devices (scrambled order)."""

    pull_interval = 0.0

    def __init__(self, batches, errors=None):
        self.batches = list(batches)
        self.errors = errors or {}
        self.pulls = 0
        self.pushed = []  # (worker node, device, steps the message carried or None)

    def get_node_ids(self):
        return list(WORKERS)

    def push_messages(self, messages):
        ids = []
        for m in messages:
            device, state = read_state(m.content)
            self.pushed.append((m.metadata.dst_node_id, device, state.steps if state else None))
            m.metadata.__dict__["_message_id"] = f"m{device}"  # as Flower's InMemoryGrid does
            ids.append(m.metadata.message_id)
        return ids

    def pull_messages(self, ids):
        self.pulls += 1
        batch = self.batches.pop(0) if self.batches else []
        return [reply(f"m{d}", 10 * self.pulls + d, self.errors.get(d)) for d in batch if f"m{d}" in ids]


def grid_over(fake, on_reply=None):
    grid = FogGrid(fake, np.ones(4), 1.0, seed=0, states=DeviceStates(4, 1024), nodes=2, on_reply=on_reply)
    grid.connect()
    grid.round = 3
    return grid


def test_training_replies_are_reported_as_they_arrive_and_returned_sorted():
    fake = FakeGrid([[], [3, 1], [], [0], [2]])
    calls = []
    grid = grid_over(fake, lambda done, total: calls.append((done, total)))
    out = grid.send_and_receive([message(MessageType.TRAIN, d) for d in (3, 1, 0, 2)])
    assert calls == [(0, 4), (2, 4), (3, 4), (4, 4)]
    assert [r.metadata.reply_to_message_id for r in out] == ["m0", "m1", "m2", "m3"]
    assert [d for d, _ in grid.replies] == [0, 1, 2, 3]
    assert fake.pulls == 5, "it stops pulling once every reply is in"


def test_devices_are_spread_over_the_worker_nodes_and_their_state_travels():
    fake = FakeGrid([[0, 1, 2, 3]])
    grid = grid_over(fake)
    assert grid.get_node_ids() == [] and grid.nodes == WORKERS
    grid.start_round(1)
    assert grid.get_node_ids() == [0, 1, 2, 3], "the strategy addresses the sampled devices"
    out = grid.send_and_receive([message(MessageType.TRAIN, d) for d in grid.get_node_ids()])
    assert [(node, device) for node, device, _ in fake.pushed] == [(501, 0), (502, 1), (501, 2), (502, 3)]
    assert all(steps is None for _, _, steps in fake.pushed), "a device that never trained has no state"
    assert all(DEVICE_KEY not in r.content for r in out), "the state is taken out before the strategy sees it"
    kept = grid.states.get(2)
    assert (kept.steps, kept.next_prune, kept.mask.tolist()) == (12, 0.5, [12])
    fake.batches, fake.pushed = [[1]], []
    grid.send_and_receive([message(MessageType.TRAIN, 1)])
    assert fake.pushed == [(501, 1, 11)], "the next message of a device carries the state of its last reply"


def test_other_messages_are_not_reported_nor_kept():
    calls = []
    grid = grid_over(FakeGrid([[1], [0]]), lambda done, total: calls.append((done, total)))
    out = grid.send_and_receive([message(MessageType.EVALUATE, 0), message(MessageType.EVALUATE, 1)])
    assert [r.metadata.reply_to_message_id for r in out] == ["m0", "m1"]
    assert calls == [] and grid.replies == []


def test_without_a_callback_and_with_a_timeout():
    grid = grid_over(FakeGrid([[1]]))
    out = grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)], timeout=0.05)
    assert [d for d, _ in grid.replies] == [1], "replies missing at the timeout are left out, as in Flower"
    assert len(out) == 1


def test_a_crash_is_raised_but_a_simulated_failure_keeps_the_old_state():
    failed = SimpleNamespace(code=draws.FAILED, reason="failed")
    grid = grid_over(FakeGrid([[0]]))
    grid.send_and_receive([message(MessageType.TRAIN, 0)])
    before = grid.states.get(0)
    grid.grid = FakeGrid([[0, 1]], errors={0: failed})
    grid.connect()
    grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)])
    assert grid.states.get(0).steps == before.steps == 10, "a dropped device keeps its state"
    assert grid.states.get(1).steps == 11
    grid.grid = FakeGrid([[0, 1]], errors={1: SimpleNamespace(code=draws.FAILED + 1, reason="boom")})
    with pytest.raises(RuntimeError, match="device 1 crashed in round 3: boom"):
        grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)])


@pytest.mark.slow
def test_a_run_reports_its_clients_and_gives_the_same_results(tmp_path):
    """Through Flower and Ray: every round counts its sampled clients up, and the callback changes nothing."""
    import pandas as pd

    from fogsim.sim.reports import WALL_COLUMNS
    from fogsim.sim.run import prepare, run

    short = ["rounds=2"]
    calls = []
    run(prepare("scenarios/quickstart.yaml", short), tmp_path / "a", on_client=lambda *call: calls.append(call))
    run(prepare("scenarios/quickstart.yaml", short), tmp_path / "b")
    rounds = pd.read_csv(tmp_path / "a" / "rounds.csv")
    for row in rounds.itertuples():
        counts = [(done, total) for r, done, total in calls if r == row.round]
        assert counts[0] == (0, row.clients_sampled) and counts[-1] == (row.clients_sampled, row.clients_sampled)
        assert [done for done, _ in counts] == sorted({done for done, _ in counts})
    assert {r for r, _, _ in calls} == {1, 2}
    a, b = (pd.read_csv(tmp_path / out / "rounds.csv").drop(columns=WALL_COLUMNS) for out in "ab")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "clients.csv"), pd.read_csv(tmp_path / "b" / "clients.csv"))
