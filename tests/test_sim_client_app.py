"""One device of the fleet driven round by round in-process (no Ray): state in messages, mask, schedule, uploads, failures."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity

from fogsim.models import build_model
from fogsim.sim import draws
from fogsim.sim.client_app import FleetSpec, dataset_of, train_device
from fogsim.sim.device_state import DEVICE_KEY, MASK_KEY, pop_state, state_records, unpack_masks
from fogsim.sim.fleet import build_fleet
from fogsim.sim.partition import partition_indices
from fogsim.sim.reports import DeviceReport
from fogsim.sim.scenario import parse_scenario
from strategies import UPLOAD_ENCODING_KEY, unpack_masked_state

ROUNDS = 4


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Building a Message needs the run identity a Flower app has (see test_masked_fedavg)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def make_spec(failure_rate=0.0):
    scenario = parse_scenario({
        "rounds": ROUNDS, "training": {"batch_size": 16, "batch_min": 8, "batch_max": 32},
        "fleet": [{"profile": "samd21", "count": 2, "overrides": {"failure_rate": failure_rate}}]})
    data = dataset_of(scenario)
    devices = build_fleet(scenario, Path("."), data.input_shape, data.num_classes)
    parts = partition_indices(data.train_y.numpy(), scenario.data.partition, len(devices), scenario.seed)
    return FleetSpec(scenario, devices, parts), data


def instruction(arrays, round_, device, state=None, packed=True):
    """What the server's FogGrid sends: Flower's records plus the device and its state."""
    config = ConfigRecord({"server-round": round_})
    if packed:
        config[UPLOAD_ENCODING_KEY] = "packed"
    return Message(RecordDict({"arrays": arrays, "config": config, **state_records(device, state)}),
                   dst_node_id=1, message_type=MessageType.TRAIN)


def test_mask_only_shrinks_and_target_is_reached_in_the_last_round():
    spec, data = make_spec()
    arrays = ArrayRecord(build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict())
    previous, densities, state, steps = None, [], None, 0
    for round_ in (1, 3, 4):  # the device sits out round 2
        reply = train_device(spec, instruction(arrays, round_, 0, state))
        metrics = reply.content["metrics"]
        report = DeviceReport.from_metrics(metrics)
        assert report.peak_memory_bytes <= spec.fleet.tier_of(0).plan.budget_bytes
        assert metrics["unit-weight"] == 1, "strategy.weighting: uniform weights by this key"
        assert report.progress == round_ * len(spec.partitions[0])
        upload, masks = unpack_masked_state({k: a.numpy() for k, a in reply.content["arrays"].items()})
        state = pop_state(reply.content)
        assert DEVICE_KEY not in reply.content and MASK_KEY not in reply.content, "the strategy sees Flower's records"
        assert state.steps > steps, "the schedule position carries over: steps count on from the last round"
        steps = state.steps
        carried = unpack_masks(state.mask, {k: m.shape for k, m in masks.items()})
        assert all((carried[k] == masks[k]).all() for k in masks), "the state's mask is the one uploaded"
        if previous is not None:
            assert all(not (masks[k] & ~previous[k]).any() for k in masks), "a pruned entry came back"
        previous = masks
        densities.append(metrics["density"])
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in upload.items()})  # a server of one
    assert densities == sorted(densities, reverse=True)
    assert densities[-1] == pytest.approx(0.1, abs=0.002)
    assert 0.3 < reply.content["metrics"]["accuracy"] <= 1, "the last round reports the device's own accuracy"


def test_the_mask_a_message_carries_is_applied_to_the_global_weights():
    """A device receives dense global weights and its own mask; it never trains what its mask pruned."""
    spec, data = make_spec()
    dense = build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict()
    first = pop_state(train_device(spec, instruction(ArrayRecord(dense), 1, 1)).content)
    reply = train_device(spec, instruction(ArrayRecord(dense), 2, 1, first))
    _, masks = unpack_masked_state({k: a.numpy() for k, a in reply.content["arrays"].items()})
    before = unpack_masks(first.mask, {k: m.shape for k, m in masks.items()})
    assert all(not (masks[k] & ~before[k]).any() for k in masks), "dense weights in, but the old mask holds"
    fresh = pop_state(train_device(spec, instruction(ArrayRecord(dense), 2, 1)).content)
    assert fresh.steps < pop_state(reply.content).steps, "without its state a device starts its schedule over"


def test_fedavg_gets_a_dense_upload_with_zeros():
    spec, data = make_spec()
    arrays = ArrayRecord(build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict())
    reply = train_device(spec, instruction(arrays, 1, 1, packed=False))
    weights = reply.content["arrays"]["1.weight"].numpy()
    assert weights.shape == (64, 64)
    assert np.count_nonzero(weights) < weights.size
    assert reply.content["metrics"]["upload-bytes"] == sum(a.numpy().nbytes for a in reply.content["arrays"].values())
    assert reply.content["metrics"]["download-bytes"] == sum(a.numpy().nbytes for a in arrays.values()), \
        "the state a message carries is the simulator's bookkeeping, not traffic"


def test_a_failing_device_answers_with_an_error():
    spec, data = make_spec(failure_rate=0.99)
    arrays = ArrayRecord(build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict())
    reply = train_device(spec, instruction(arrays, 1, 0))
    assert reply.has_error() and reply.error.code == draws.FAILED
