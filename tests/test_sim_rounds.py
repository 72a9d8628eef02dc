"""The server's rounds in-process, with the real client on a Grid that runs it directly (no Ray).

What a device carries between rounds travels with its messages; these tests follow every device
through a run in which each is sampled rarely and check that its state comes back exactly as
it left, that its mask never regrows and that its schedule goes on where it stopped.
"""

import numpy as np
import pandas as pd
import pytest

from fogsim.sim.outputs import read_run
from fogsim.sim.reports import WALL_COLUMNS
from inprocess import serve_in_process

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def run_in_process(tmp_path, name, sets, workers=2):
    grid, _ = serve_in_process(tmp_path / name, sets, workers)
    return grid, tmp_path / name


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


def frames(out):
    return [pd.read_csv(out / "rounds.csv").drop(columns=WALL_COLUMNS), pd.read_csv(out / "clients.csv"),
            pd.read_csv(out / "tiers.csv")]


def test_results_do_not_depend_on_the_number_of_worker_nodes_nor_the_cohorts(tmp_path):
    """Any node simulates any device: one node or many, cohorts of every size, devices dropping out
    mid-cohort — the same rounds, clients and tiers."""
    one, three, twelve = (run_in_process(tmp_path, name, RARE, workers=n)[1]
                          for name, n in (("one", 1), ("three", 3), ("twelve", 12)))
    for out in (three, twelve):
        for a, b in zip(frames(one), frames(out)):
            pd.testing.assert_frame_equal(a, b)


def test_a_warm_worker_trains_each_device_as_a_new_one_would(tmp_path, monkeypatch):
    """A worker reuses one model and trainer for every device of a kind; a worker built anew for
    every device (as before workers were warm) gives the same files."""
    from fogsim.sim import client_app

    warm = run_in_process(tmp_path, "warm", RARE, workers=1)[1]
    monkeypatch.setattr(client_app, "worker_for", lambda spec, data=None: client_app.Worker(spec, data))
    cold = run_in_process(tmp_path, "cold", RARE, workers=12)[1]  # one device per cohort, a new worker each
    for a, b in zip(frames(warm), frames(cold)):
        pd.testing.assert_frame_equal(a, b)


def test_each_worker_node_gets_one_cohort_a_round(tmp_path):
    grid, out = run_in_process(tmp_path, "spread", ["rounds=2", "fleet[0].count=4", "fleet[1].count=4",
                                                    "fleet[2].count=4", "fraction=0.5"], workers=3)
    clients = pd.read_csv(out / "clients.csv")
    for round_ in (1, 2):
        cohorts = [(node, devices) for r, node, devices in grid.cohorts if r == round_]
        assert sorted(node for node, _ in cohorts) == [1, 2, 3], "one message per worker node"
        sampled = sorted(d for _, devices in cohorts for d in devices)
        assert sampled == sorted(clients[clients["round"] == round_]["client_id"]), \
            "the round's devices, each in exactly one cohort"
        sizes = [len(devices) for _, devices in cohorts]
        assert len(sampled) > 3 and max(sizes) - min(sizes) <= 1, "dealt evenly"


def test_a_server_optimizer_run_stopped_resumes_to_the_same_files(tmp_path):
    """masked-fedadam carries its moments from round to round: a run stopped after round 2 and resumed
    from its checkpoint (global arrays, device states and the optimizer's state) ends with the files
    of the uninterrupted run."""
    sets = ["rounds=4", "strategy.name=masked-fedadam", "strategy.rule=delta", "strategy.server_lr=0.01"]
    serve_in_process(tmp_path / "whole", sets)
    out = tmp_path / "cut"
    serve_in_process(out, sets, stop_after=2)
    assert len(read_run(out)[0]) == 2
    serve_in_process(out, sets, resume=True)
    for name in ("rounds.csv", "clients.csv", "tiers.csv"):
        a, b = (pd.read_csv(d / name) for d in (tmp_path / "whole", out))
        if name == "rounds.csv":
            a, b = a.drop(columns=WALL_COLUMNS), b.drop(columns=WALL_COLUMNS)
        pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("fog", [False, True])
def test_a_strategy_that_reads_every_client_gets_every_upload_and_the_same_results(tmp_path, monkeypatch, fog):
    """The built-in rules read a round through its sums, added up in the workers (strategies.sums); a
    rule of the user's own gets every device's upload. The same rule either way gives the same files
    (the sums are float64, added in another order: the digits agree), with fog nodes too."""
    import strategies
    from fogsim.sim import fog_grid

    sets = [*RARE, "strategy.rule=delta"] + (
        ["fog.nodes=[{name: a, profile: mec-server}, {name: b, profile: mec-server}]", "fog.cloud_every=2"]
        if fog else [])
    summed = run_in_process(tmp_path, "summed", sets, workers=3)[1]
    delta = strategies.RULES["delta"]
    monkeypatch.setitem(strategies.RULES, "delta", lambda *args, **kwargs: delta(*args, **kwargs))
    monkeypatch.setattr(fog_grid, "tree_total", lambda *a: pytest.fail("a rule of the user's own got sums"))
    each = run_in_process(tmp_path, "each", sets, workers=3)[1]
    for a, b in zip(frames(summed), frames(each)):
        pd.testing.assert_frame_equal(a, b)
