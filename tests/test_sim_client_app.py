"""Devices of the fleet driven round by round in-process (no Ray): a worker simulates them one
after another, with their state (mask, schedule) in the cohort message and back in its reply;
mask, schedule, uploads, failures and crashes."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.common import MessageType

from fogsim.models import build_model
from fogsim.sim.client_app import Worker, dataset_of, train_cohort
from fogsim.sim.device_state import unpack_masks
from fogsim.sim.fleet import build_fleet
from fogsim.sim.messages import CRASHED, Assignment, cohort_message, read_reply
from fogsim.sim.partition import partition_indices
from fogsim.sim.reports import DeviceReport
from fogsim.sim.scenario import parse_scenario
from fogsim.sim.shared import FleetSpec
from strategies import UPLOAD_ENCODING_KEY, encoded_nbytes, unpack_masked_state

ROUNDS = 4

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def make_spec(failure_rate=0.0, count=2, failing=0):
    """``count`` samd21 devices failing at ``failure_rate``, then ``failing`` more that nearly always fail."""
    fleet = [{"profile": "samd21", "count": count, "overrides": {"failure_rate": failure_rate}}]
    if failing:
        fleet.append({"profile": "samd21", "count": failing, "overrides": {"failure_rate": 0.99}})
    scenario = parse_scenario({
        "rounds": ROUNDS, "training": {"batch_size": 16, "batch_min": 8, "batch_max": 32}, "fleet": fleet})
    data = dataset_of(scenario)
    devices = build_fleet(scenario, Path("."), data.input_shape, data.num_classes)
    parts = partition_indices(data.train_y.numpy(), scenario.data.partition, len(devices), scenario.seed)
    return FleetSpec(scenario, devices, parts), data


def initial(data) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in build_model("mlp-small", data.input_shape, data.num_classes, seed=0)
            .state_dict().items()}


def train_config(round_, packed=True):
    """A train config as FogGrid forwards it: the strategy's, with the fog's round."""
    config = ConfigRecord({"server-round": round_})
    if packed:
        config[UPLOAD_ENCODING_KEY] = "packed"
    return config


def numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def send(worker, assignments, models, configs, download="dense"):
    """A cohort message through the worker's real entry point; ``(outcomes, crashed)`` of its reply."""
    msg = Message(cohort_message(assignments, [record(m) for m in models], configs, download),
                  dst_node_id=1, message_type=MessageType.TRAIN)
    return read_reply(train_cohort(worker, msg).content)[:2]


def test_mask_only_shrinks_and_target_is_reached_in_the_last_round():
    """One device on a warm worker, sitting out a round: its schedule and mask carry over in its state."""
    spec, data = make_spec()
    worker = Worker(spec)
    weights, previous, densities, state, steps = initial(data), None, [], None, 0
    for round_ in (1, 3, 4):  # the device sits out round 2
        outcome = worker.simulate(Assignment(0, 0, 0, state), weights, train_config(round_), "dense")
        assert not outcome.failed and outcome.device == 0
        metrics = outcome.metrics
        report = DeviceReport.from_metrics(metrics)
        assert report.peak_memory_bytes <= spec.fleet.tier_of(0).plan.budget_bytes
        assert metrics["unit-weight"] == 1, "strategy.weighting: uniform weights by this key"
        assert report.progress == round_ * len(spec.partitions[0])
        upload, masks = unpack_masked_state(numpy(outcome.upload))
        assert not any(k.startswith("fogsim") for k in [*outcome.upload.keys(), *metrics.keys()]), \
            "the state travels beside Flower's records, not in them"
        state = outcome.state
        assert state.steps > steps, "the schedule position carries over: steps count on from the last round"
        steps = state.steps
        carried = unpack_masks(state.mask, {k: m.shape for k, m in masks.items()})
        assert all((carried[k] == masks[k]).all() for k in masks), "the state's mask is the one uploaded"
        if previous is not None:
            assert all(not (masks[k] & ~previous[k]).any() for k in masks), "a pruned entry came back"
        previous = masks
        densities.append(metrics["density"])
        weights = upload  # a server of one
    assert densities == sorted(densities, reverse=True)
    assert densities[-1] == pytest.approx(0.1, abs=0.002)
    assert 0.3 < metrics["accuracy"] <= 1, "the last round reports the device's own accuracy"


def test_the_mask_a_message_carries_is_applied_to_the_global_weights():
    """A device receives dense global weights and, in the cohort message, its own mask; it never
    trains what its mask pruned, even where the global weights are largest (magnitude pruning
    alone would keep those). Without its state it starts its schedule over."""
    spec, data = make_spec()
    worker, dense = Worker(spec), initial(data)
    (first,), crashed = send(worker, [Assignment(1, 0, 0, None)], [dense], [train_config(1)])
    assert crashed is None and first.device == 1
    _, kept = unpack_masked_state(numpy(first.upload))
    before = unpack_masks(first.state.mask, {k: m.shape for k, m in kept.items()})
    # the global model a server might send: large exactly where this device pruned
    skewed = {k: np.where(before[k], v * 0.01, 1.0).astype(v.dtype) if k in before else v for k, v in dense.items()}
    (second, fresh), _ = send(worker, [Assignment(1, 0, 0, first.state), Assignment(0, 0, 0, None)], [skewed],
                              [train_config(2)])
    _, masks = unpack_masked_state(numpy(second.upload))
    assert all(not (masks[k] & ~before[k]).any() for k in masks), "dense weights in, but the old mask holds"
    assert any((masks[k] != before[k]).any() for k in masks), "it pruned further in round 2"
    _, unmasked = unpack_masked_state(numpy(fresh.upload))
    assert any((unmasked[k] & ~before[k]).any() for k in masks), "without the mask those weights would be kept"
    assert fresh.state.steps < second.state.steps, "without its state a device starts its schedule over"


def test_fedavg_gets_a_dense_upload_with_zeros():
    """``fedavg`` uploads the dense model, pruned entries zero; the bytes are those of what the device
    sent and received, never of the cohort message that carried its state."""
    spec, data = make_spec()
    worker, dense = Worker(spec), initial(data)
    (first,), _ = send(worker, [Assignment(1, 0, 0, None)], [dense], [train_config(1, packed=False)])
    (outcome,), _ = send(worker, [Assignment(1, 0, 0, first.state)], [dense], [train_config(2, packed=False)])
    weights = outcome.upload["1.weight"].numpy()
    assert weights.shape == (64, 64) and not any("::" in k for k in outcome.upload.keys())
    assert np.count_nonzero(weights) < weights.size
    assert outcome.metrics["upload-bytes"] == sum(a.numpy().nbytes for a in outcome.upload.values())
    assert outcome.metrics["download-bytes"] == encoded_nbytes(dense), \
        "the state a message carries is the simulator's bookkeeping, not traffic"


def test_a_failing_device_answers_as_failed():
    """A device that drops out (``draws.fails``) sends nothing: no state, upload or report."""
    spec, data = make_spec(failure_rate=0.99)
    outcome = Worker(spec).simulate(Assignment(0, 0, 0, None), initial(data), train_config(1), "dense")
    assert outcome.failed and (outcome.state, outcome.upload, outcome.metrics) == (None, None, None)


def test_a_cohort_on_the_wire_is_what_its_devices_compute_alone():
    """States, masks, uploads and reports survive the cohort message and its reply: a warm worker
    answering one cohort (two models, two configs, sparse downloads, a device that drops out)
    gives each device what a fresh worker simulating it alone computes."""
    spec, data = make_spec(failing=1)  # devices 0 and 1 train; device 2 nearly always drops out
    dense = initial(data)
    (start,), _ = send(Worker(spec), [Assignment(0, 0, 0, None)], [dense], [train_config(1)])
    other = {k: v * 0.5 for k, v in dense.items()}
    cohort = [Assignment(1, 1, 1, None), Assignment(2, 0, 0, None), Assignment(0, 0, 1, start.state)]
    configs = [train_config(2), train_config(2, packed=False)]
    outcomes, crashed = send(Worker(spec), cohort, [dense, other], configs, download="sparse")
    assert crashed is None
    assert [o.device for o in outcomes] == [1, 2, 0], "one outcome per device, in the cohort's order"
    assert outcomes[1].failed and outcomes[1].state is None and outcomes[1].upload is None, \
        "a device that dropped out sends nothing, and the cohort goes on"
    assert outcomes[2].metrics["download-bytes"] < encoded_nbytes(dense), "the download mode travels in the cohort"
    for a, got in zip(cohort, outcomes):
        alone = Worker(spec).simulate(a, [dense, other][a.model], configs[a.config], "sparse")
        assert got.failed == alone.failed
        if alone.failed:
            continue
        assert (got.state.steps, got.state.next_prune) == (alone.state.steps, alone.state.next_prune)
        assert np.array_equal(got.state.mask, alone.state.mask)
        assert got.upload.keys() == alone.upload.keys()
        assert all(np.array_equal(got.upload[k].numpy(), alone.upload[k].numpy()) for k in alone.upload.keys())
        assert dict(got.metrics) == pytest.approx(dict(alone.metrics), rel=0, abs=0, nan_ok=True)


def test_a_device_that_raises_ends_the_cohort_and_is_named():
    """A device's exception is a bug, not a dropout: the reply carries the outcomes of the devices
    before it and names it with the reason on one line; the devices after it are not simulated."""
    spec, data = make_spec(count=3)
    dense = initial(data)
    broken = {k: v for k, v in dense.items() if k != "1.weight"}  # the model cannot load it
    worker = Worker(spec)
    simulated = []
    real = worker.simulate
    worker.simulate = lambda a, *rest: simulated.append(a.device) or real(a, *rest)
    cohort = [Assignment(0, 0, 0, None), Assignment(2, 1, 0, None), Assignment(1, 0, 0, None)]
    msg = Message(cohort_message(cohort, [record(m) for m in (dense, broken)],
                                 [train_config(1)], "sparse"), dst_node_id=1, message_type=MessageType.TRAIN)
    reply = train_cohort(worker, msg)
    assert not reply.has_error() and CRASHED in reply.content
    outcomes, crashed, _ = read_reply(reply.content)
    assert [o.device for o in outcomes] == [0] and not outcomes[0].failed and outcomes[0].upload is not None
    device, reason, diverged = crashed
    assert not diverged
    assert device == 2
    assert reason.startswith("RuntimeError: ") and "1.weight" in reason and "\n" not in reason
    assert simulated == [0, 2], "the cohort ends at the crash"

