"""``FogGrid``: one cohort message per worker node, one reply per device back to the strategy,
reported as cohorts arrive and returned sorted by device whatever their order."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity

from fogsim.sim.device_state import DeviceState, DeviceStates
from fogsim.sim.fog_grid import FogGrid
from fogsim.sim.messages import COHORT, WARM_UP, Outcome, cohort_reply, read_cohort

WORKERS = [501, 502]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Building a Message needs the run identity a Flower app has (see test_masked_fedavg)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


ARRAYS, CONFIG = ArrayRecord(), ConfigRecord({"server-round": 1})


def message(kind, device):
    """A strategy's message: addressed to a device, as FogGrid.get_node_ids told it."""
    return Message(RecordDict({"arrays": ARRAYS, "config": CONFIG}), dst_node_id=device, message_type=kind)


class FakeGrid:
    """Two worker nodes; each pull hands out the cohort replies of the next batch of nodes.

    A device's new state is (10 x pulls so far + device) steps; ``failed`` devices drop out,
    ``crash`` = (device, reason) ends its cohort there, ``error`` makes a node's whole reply an error.
    """

    pull_interval = 0.0

    def __init__(self, batches, failed=(), crash=None, error=None):
        self.batches = list(batches)
        self.failed, self.crash, self.error = set(failed), crash, error
        self.pulls = 0
        self.pushed = []  # (worker node, device, steps the message carried or None)
        self.cohorts = {}  # message id -> (node, the cohort message)
        self.warm_ups = []  # warm-up messages not answered yet

    def get_node_ids(self):
        return list(WORKERS)

    def push_messages(self, messages):
        ids = []
        for m in messages:
            if WARM_UP in m.content:
                m.metadata.__dict__["_message_id"] = f"w{m.metadata.dst_node_id}"
                self.warm_ups.append(m)
                ids.append(m.metadata.message_id)
                continue
            assignments, _ = read_cohort(m.content)
            for a in assignments:
                self.pushed.append((m.metadata.dst_node_id, a.device, a.state.steps if a.state else None))
            m.metadata.__dict__["_message_id"] = f"n{m.metadata.dst_node_id}"  # as Flower's InMemoryGrid does
            self.cohorts[m.metadata.message_id] = m
            ids.append(m.metadata.message_id)
        return ids

    def reply(self, m):
        from flwr.app import Error

        if self.error is not None and m.metadata.dst_node_id == self.error[0]:
            return Message(Error(code=1, reason=self.error[1]), reply_to=m)
        outcomes = []
        for a in read_cohort(m.content)[0]:
            if self.crash is not None and a.device == self.crash[0]:
                return Message(cohort_reply(outcomes, self.crash), reply_to=m)
            steps = 10 * self.pulls + a.device
            outcomes.append(Outcome(a.device, failed=True) if a.device in self.failed else Outcome(
                a.device, state=DeviceState(steps, 0.5, np.array([steps], dtype=np.uint8)), upload=ArrayRecord(),
                metrics=MetricRecord({"steps": steps})))
        return Message(cohort_reply(outcomes), reply_to=m)

    def pull_messages(self, ids):
        warm = [m for m in self.warm_ups if m.metadata.message_id in ids]
        if warm:  # answered at once, not counted as a pull
            self.warm_ups = [m for m in self.warm_ups if m not in warm]
            return [Message(RecordDict(), reply_to=m) for m in warm]
        self.pulls += 1
        batch = self.batches.pop(0) if self.batches else []
        return [self.reply(self.cohorts.pop(f"n{WORKERS[slot]}")) for slot in batch if f"n{WORKERS[slot]}" in ids]


def grid_over(fake, on_reply=None):
    grid = FogGrid(fake, np.ones(4), 1.0, seed=0, states=DeviceStates(4, 1024), nodes=2, on_reply=on_reply)
    grid.connect()
    grid.round = 3
    return grid


def test_training_replies_are_reported_as_cohorts_arrive_and_returned_sorted():
    fake = FakeGrid([[], [1], [], [0]])
    calls = []
    grid = grid_over(fake, lambda done, total: calls.append((done, total)))
    out = grid.send_and_receive([message(MessageType.TRAIN, d) for d in (3, 1, 0, 2)])
    assert calls == [(0, 4), (2, 4), (4, 4)], "devices done, counted a cohort at a time"
    assert [r.metadata.src_node_id for r in out] == [0, 1, 2, 3], "one reply per device, from the device"
    assert [d for d, _ in grid.replies] == [0, 1, 2, 3]
    assert [grid.device_of(r) for r in out] == [0, 1, 2, 3]
    assert [r.content["metrics"]["steps"] for r in out] == [40, 21, 42, 23], "each device's own reply"
    assert fake.pulls == 4, "it stops pulling once every cohort is in"
    assert list(grid.states.mask_keys()) == [0, 1, 2, 3], \
        "states are kept in device order, not in the order the workers answered (tiers.csv sums in it)"


def test_each_node_gets_one_cohort_and_the_states_travel():
    fake = FakeGrid([[0, 1]])
    grid = grid_over(fake)
    assert grid.get_node_ids() == [] and grid.nodes == WORKERS
    grid.start_round(1)
    assert grid.get_node_ids() == [0, 1, 2, 3], "the strategy addresses the sampled devices"
    out = grid.send_and_receive([message(MessageType.TRAIN, d) for d in grid.get_node_ids()])
    assert [(node, device) for node, device, _ in fake.pushed] == [(501, 0), (501, 2), (502, 1), (502, 3)]
    assert len(fake.cohorts) == 0 and fake.pulls == 1, "two cohort messages, one per node"
    assert all(steps is None for _, _, steps in fake.pushed), "a device that never trained has no state"
    assert all(set(r.content.keys()) == {"arrays", "metrics"} for r in out), "the strategy sees Flower's records"
    kept = grid.states.get(2)
    assert (kept.steps, kept.next_prune, kept.mask.tolist()) == (12, 0.5, [12])
    fake.batches, fake.pushed = [[0]], []
    grid.send_and_receive([message(MessageType.TRAIN, 1)])
    assert fake.pushed == [(501, 1, 11)], "the next message of a device carries the state of its last reply"


def test_one_model_and_config_per_cohort_with_the_fogs_round():
    fake = FakeGrid([[0, 1]])
    grid = grid_over(fake)
    other = ArrayRecord()
    messages = [message(MessageType.TRAIN, d) for d in range(4)]
    messages[3] = Message(RecordDict({"arrays": other, "config": CONFIG}), dst_node_id=3,
                          message_type=MessageType.TRAIN)
    sent = []
    push = fake.push_messages
    fake.push_messages = lambda ms: sent.extend(ms) or push(ms)
    grid.send_and_receive(messages)
    keys = [sorted(k for k in m.content.keys() if k.startswith("fogsim-model")) for m in sent]
    assert keys == [["fogsim-model-0"], ["fogsim-model-0", "fogsim-model-1"]], "each distinct model once"
    assert all(m.content["fogsim-config-0"]["server-round"] == 3 for m in sent), "the fog's round, not Flower's"
    assert all(m.content[COHORT]["download"] == "dense" for m in sent)


def test_every_worker_is_warmed_up_before_the_first_round():
    fake = FakeGrid([])
    grid = grid_over(fake)
    assert sorted(m.metadata.dst_node_id for m in fake.warm_ups) == WORKERS, "one warm-up per worker node"
    grid.start_round(1)
    assert fake.warm_ups == [] and not grid._warming, "the first round waits for every warm-up reply"


def test_without_a_callback_and_with_a_timeout():
    grid = grid_over(FakeGrid([[1]]))
    out = grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)], timeout=0.05)
    assert [d for d, _ in grid.replies] == [1], "cohorts missing at the timeout are left out, as in Flower"
    assert len(out) == 1


def test_a_crash_is_raised_but_a_simulated_failure_keeps_the_old_state():
    grid = grid_over(FakeGrid([[0]]))
    grid.send_and_receive([message(MessageType.TRAIN, 0)])
    before = grid.states.get(0)
    grid.grid = FakeGrid([[0, 1]], failed={0})
    grid.connect()
    out = grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)])
    assert out[0].has_error() and not out[1].has_error(), "a dropped device's reply is an error for the strategy"
    assert grid.states.get(0).steps == before.steps == 10, "a dropped device keeps its state"
    assert grid.states.get(1).steps == 11
    grid.grid = FakeGrid([[0, 1]], crash=(1, "ValueError: boom"))
    grid.connect()
    with pytest.raises(RuntimeError, match="device 1 crashed in round 3: ValueError: boom"):
        grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)])
    grid.grid = FakeGrid([[0, 1]], error=(502, "the worker died"))
    grid.connect()
    with pytest.raises(RuntimeError, match="a worker crashed in round 3: the worker died"):
        grid.send_and_receive([message(MessageType.TRAIN, 0), message(MessageType.TRAIN, 1)])


def test_a_run_reports_its_clients_and_gives_the_same_results(tmp_path):
    """Every round counts its sampled clients up, and the callback changes nothing. On the local engine:
    the counting is the grid's (FogGrid._pull), the same for either engine; Ray's replies as they come
    are the progress line's, which test_terminal_widths reads through a terminal."""
    import pandas as pd

    from fogsim.sim.reports import WALL_COLUMNS
    from fogsim.sim.run import prepare, run

    short = ["rounds=2", "simulation.engine=local", "simulation.nodes=2"]
    calls = []
    run(prepare("scenarios/quickstart.yaml", short), tmp_path / "a", on_client=lambda *call: calls.append(call))
    run(prepare("scenarios/quickstart.yaml", ["rounds=2"]), tmp_path / "b")  # no callback
    rounds = pd.read_csv(tmp_path / "a" / "rounds.csv")
    for row in rounds.itertuples():
        counts = [(done, total) for r, done, total in calls if r == row.round]
        assert counts[0] == (0, row.clients_sampled) and counts[-1] == (row.clients_sampled, row.clients_sampled)
        assert [done for done, _ in counts] == sorted({done for done, _ in counts})
    assert {r for r, _, _ in calls} == {1, 2}
    a, b = (pd.read_csv(tmp_path / out / "rounds.csv").drop(columns=WALL_COLUMNS) for out in "ab")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "clients.csv"), pd.read_csv(tmp_path / "b" / "clients.csv"))
