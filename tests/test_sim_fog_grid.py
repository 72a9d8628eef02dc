"""``FogGrid``: replies reported as they arrive, returned sorted by device whatever their order."""

from types import SimpleNamespace

import pytest
from flwr.common import MessageType

from fogsim.sim import fog
from fogsim.sim.fog_grid import FogGrid


def message(kind, dst):
    return SimpleNamespace(metadata=SimpleNamespace(message_type=kind, dst_node_id=dst))


def reply(node, to, error=None):
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node, reply_to_message_id=to),
                           has_error=lambda: error is not None, error=error)


class FakeGrid:
    """Pushes get ids ``m<node>``; each pull hands out the next batch of replies (in a scrambled order)."""

    pull_interval = 0.0

    def __init__(self, batches):
        self.batches = list(batches)
        self.pulls = 0

    def push_messages(self, messages):
        return [f"m{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, ids):
        self.pulls += 1
        batch = self.batches.pop(0) if self.batches else []
        return [reply(node, f"m{node}") for node in batch if f"m{node}" in ids]


def grid_over(fake, on_reply=None):
    grid = FogGrid(fake, [None] * 4, 1.0, seed=0, on_reply=on_reply)
    grid.node_of = {d: 100 + d for d in range(4)}  # node 103 is device 3, ...
    grid.device_of = {100 + d: d for d in range(4)}
    grid.round = 3
    return grid


def test_training_replies_are_reported_as_they_arrive_and_returned_sorted():
    fake = FakeGrid([[], [103, 101], [], [100], [102]])
    calls = []
    grid = grid_over(fake, lambda done, total: calls.append((done, total)))
    out = grid.send_and_receive([message(MessageType.TRAIN, 100 + d) for d in (3, 1, 0, 2)])
    assert calls == [(0, 4), (2, 4), (3, 4), (4, 4)]
    assert [r.metadata.src_node_id for r in out] == [100, 101, 102, 103]
    assert [d for d, _ in grid.replies] == [0, 1, 2, 3]
    assert fake.pulls == 5, "it stops pulling once every reply is in"


def test_other_messages_are_not_reported_nor_kept():
    calls = []
    grid = grid_over(FakeGrid([[101], [100]]), lambda done, total: calls.append((done, total)))
    out = grid.send_and_receive([message(MessageType.EVALUATE, 100), message(MessageType.EVALUATE, 101)])
    assert [r.metadata.src_node_id for r in out] == [100, 101]
    assert calls == [] and grid.replies == []


def test_without_a_callback_and_with_a_timeout():
    grid = grid_over(FakeGrid([[101]]))
    out = grid.send_and_receive([message(MessageType.TRAIN, 100), message(MessageType.TRAIN, 101)], timeout=0.05)
    assert [d for d, _ in grid.replies] == [1], "replies missing at the timeout are left out, as in Flower"
    assert len(out) == 1


def test_a_crash_is_raised_but_a_simulated_failure_is_kept():
    class Crashing(FakeGrid):
        def pull_messages(self, ids):
            return [reply(100, "m100", SimpleNamespace(code=fog.FAILED, reason="failed")),
                    reply(101, "m101", SimpleNamespace(code=fog.FAILED + 1, reason="boom"))]
    with pytest.raises(RuntimeError, match="device 1 crashed in round 3: boom"):
        grid_over(Crashing([])).send_and_receive([message(MessageType.TRAIN, 100), message(MessageType.TRAIN, 101)])


@pytest.mark.slow
def test_a_run_reports_its_clients_and_gives_the_same_results(tmp_path):
    """Through Flower and Ray: every round counts its sampled clients up, and the callback changes nothing."""
    import pandas as pd

    from fogsim.sim.outputs import WALL_COLUMNS
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
