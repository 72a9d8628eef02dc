"""The server's rounds in-process, with the real client on a Grid that runs it directly (no Ray).

What a device carries between rounds travels with its messages; these tests follow every device
through a run in which each is sampled rarely and check that its state comes back exactly as
it left, that its mask never regrows and that its schedule goes on where it stopped.
"""

from pathlib import Path
from uuid import uuid4

import numpy as np
import pandas as pd
import pytest
import yaml
from flwr.app import Array, ArrayRecord, Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fogsim.sim.client_app import make_client_app
from fogsim.sim.device_state import DeviceStates, read_state
from fogsim.sim.outputs import RunFiles, WALL_COLUMNS, read_run
from fogsim.sim.run import prepare, prepare_resume
from fogsim.sim.scenario import resolved_yaml
from fogsim.sim.server_app import ServerJob, serve


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Building a Message needs the run identity a Flower app has (see test_masked_fedavg)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class InProcessGrid:
    """Flower's Grid with ``workers`` nodes whose ClientApp runs inside ``push_messages``.

    It records, per device, the state each message brought and the state each reply took back.
    """

    pull_interval = 0.0

    def __init__(self, spec, workers: int):
        self.app = make_client_app(lambda: spec)
        self.workers = list(range(100, 100 + workers))
        self.replies = {}
        self.trace = []  # (round, device, worker node, state sent, state returned or None if it failed)

    def get_node_ids(self):
        return list(self.workers)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's InMemoryGrid does
            node = message.metadata.dst_node_id
            reply = self.app(message, Context(run_id=1, node_id=node, node_config={}, state=RecordDict(),
                                              run_config={}))
            device, sent = read_state(message.content)
            returned = None if reply.has_error() else read_state(reply.content)[1]
            self.trace.append((int(message.content["config"]["server-round"]), device, node, sent, returned))
            self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]


def run_in_process(tmp_path, name, sets, workers=2):
    prepared = prepare("scenarios/quickstart.yaml", sets)
    grid = InProcessGrid(prepared.spec, workers)
    out = tmp_path / name
    out.mkdir()
    files = RunFiles(out, resolved_yaml(prepared.scenario))
    states = DeviceStates(len(prepared.fleet), prepared.scenario.simulation.state_memory)
    try:
        serve(grid, ServerJob(prepared.spec, prepared.data, files, workers, states))
    finally:
        files.close()
        states.close()
    return grid, out


RARE = ["rounds=8", "fraction=0.25", "fleet[0].count=4", "fleet[1].count=4", "fleet[2].count=4",
        "fleet[0].overrides.failure_rate=0.5", "fleet[1].overrides.availability=1.0"]


def test_a_rarely_sampled_device_gets_back_exactly_the_state_it_left(tmp_path):
    grid, out = run_in_process(tmp_path, "rare", RARE)
    last: dict[int, object] = {}
    gaps = 0
    rounds_of: dict[int, list[int]] = {}
    for round_, device, _, sent, returned in grid.trace:
        before = last.get(device)
        if before is None:
            assert sent is None, f"device {device} had never trained, yet round {round_} sent it a state"
        else:
            prev_round, state = before
            gaps += round_ - prev_round > 1
            assert sent.steps == state.steps and sent.next_prune == state.next_prune, \
                f"device {device}'s schedule position was not carried from round {prev_round} to {round_}"
            assert np.array_equal(sent.mask, state.mask), f"device {device}'s mask changed while it sat out"
        if returned is None:
            continue  # it dropped out: the server keeps what it had
        if sent is not None:
            old = np.unpackbits(sent.mask).astype(bool)
            new = np.unpackbits(returned.mask).astype(bool)
            assert not (new & ~old).any(), f"a pruned entry of device {device} came back in round {round_}"
            assert returned.steps > sent.steps
        last[device] = (round_, returned)
        rounds_of.setdefault(device, []).append(round_)
    assert gaps >= 5, "the scenario must have devices that sit out rounds between two they train in"
    failed = sum(1 for *_, returned in grid.trace if returned is None)
    assert failed >= 1, "the scenario must have a device that dropped out mid-round"
    rounds, clients = read_run(out)
    assert len(rounds) == 8
    densities = pd.DataFrame(clients).dropna(subset=["density"]).groupby("client_id")["density"]
    assert all(d.is_monotonic_decreasing for _, d in densities), "a device's density never rises"


def test_results_do_not_depend_on_the_number_of_worker_nodes(tmp_path):
    """Any node simulates any device: one node or many, the same rounds and clients."""
    sets = RARE[:5]
    _, one = run_in_process(tmp_path, "one", sets, workers=1)
    _, five = run_in_process(tmp_path, "five", sets, workers=5)
    a, b = (pd.read_csv(out / "rounds.csv").drop(columns=WALL_COLUMNS) for out in (one, five))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(one / "clients.csv"), pd.read_csv(five / "clients.csv"))


def test_messages_are_spread_over_the_worker_nodes(tmp_path):
    grid, _ = run_in_process(tmp_path, "spread", ["rounds=2", "fleet[0].count=4", "fleet[1].count=4",
                                                  "fleet[2].count=4", "fraction=0.5"], workers=3)
    first = [node for round_, _, node, _, _ in grid.trace if round_ == 1]
    assert sorted(set(first)) == [100, 101, 102] and len(first) > 3, "devices share the nodes round-robin"


class _Cut(Exception):
    pass


def test_a_server_optimizer_run_cut_short_resumes_to_the_same_files(tmp_path):
    """masked-fedadam carries its moments from round to round: a run that dies after writing round 3's
    rows (before that round's checkpoint) and is resumed from round 2's checkpoint — global arrays,
    device states and the optimizer's state — ends with the files of the uninterrupted run."""
    sets = ["rounds=4", "strategy.name=masked-fedadam", "strategy.rule=delta", "strategy.server_lr=0.01"]

    def serve_from(prepared, out, files, states, resumed=None, on_round=None):
        job = ServerJob(prepared.spec, prepared.data, files, 2, states,
                        first_round=resumed.round + 1 if resumed else 1,
                        initial=ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in resumed.arrays.items()})
                        if resumed else None,
                        checkpoint_meta={**prepared.identity(), "base": str(prepared.base)},
                        strategy_state=resumed.strategy if resumed else None, on_round=on_round)
        try:
            serve(InProcessGrid(prepared.spec, 2), job)
        finally:
            files.close()
            states.close()

    def fresh(name, on_round=None):
        prepared = prepare("scenarios/quickstart.yaml", sets)
        out = tmp_path / name
        out.mkdir()
        serve_from(prepared, out, RunFiles(out, resolved_yaml(prepared.scenario)),
                   DeviceStates(len(prepared.fleet), prepared.scenario.simulation.state_memory), on_round=on_round)
        return out

    def cut(row):
        if row["round"] == 3:
            raise _Cut

    whole = fresh("whole")
    with pytest.raises(_Cut):
        fresh("cut", on_round=cut)
    out = tmp_path / "cut"
    prepared = prepare_resume(out)
    resumed, states = prepared.resumed
    assert resumed.round == 2 and resumed.strategy, "round 2's checkpoint, with the optimizer's moments"
    serve_from(prepared, out, RunFiles.resume(out, resumed.round), states, resumed)
    for name in ("rounds.csv", "clients.csv", "tiers.csv"):
        a, b = (pd.read_csv(d / name) for d in (whole, out))
        if name == "rounds.csv":
            a, b = a.drop(columns=WALL_COLUMNS), b.drop(columns=WALL_COLUMNS)
        pd.testing.assert_frame_equal(a, b)
