"""One device of the fleet driven round by round in-process (no Ray): mask, schedule, uploads, failures."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity

from fogsim.models import build_model
from fogsim.sim import fog
from fogsim.sim.client_app import FleetSpec, dataset_of, train_device
from fogsim.sim.fleet import build_fleet
from fogsim.sim.partition import partition_indices
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


def instruction(arrays, round_, packed=True):
    config = ConfigRecord({"server-round": round_})
    if packed:
        config[UPLOAD_ENCODING_KEY] = "packed"
    return Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=1, message_type=MessageType.TRAIN)


def test_mask_only_shrinks_and_target_is_reached_in_the_last_round():
    spec, data = make_spec()
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    arrays = ArrayRecord(build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict())
    previous, densities = None, []
    for round_ in (1, 3, 4):  # the device sits out round 2
        reply = train_device(spec, 0, instruction(arrays, round_), context)
        metrics = reply.content["metrics"]
        assert metrics["peak-memory-bytes"] <= metrics["budget-bytes"]
        assert metrics["unit-weight"] == 1, "strategy.weighting: uniform weights by this key"
        assert metrics["progress"] == round_ * len(spec.partitions[0])
        state, masks = unpack_masked_state({k: a.numpy() for k, a in reply.content["arrays"].items()})
        if previous is not None:
            assert all(not (masks[k] & ~previous[k]).any() for k in masks), "a pruned entry came back"
        previous = masks
        densities.append(metrics["density"])
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})  # a server of one
    assert densities == sorted(densities, reverse=True)
    assert densities[-1] == pytest.approx(0.1, abs=0.002)
    assert 0.3 < reply.content["metrics"]["accuracy"] <= 1, "the last round reports the device's own accuracy"


def test_fedavg_gets_a_dense_upload_with_zeros():
    spec, data = make_spec()
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    arrays = ArrayRecord(build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict())
    reply = train_device(spec, 1, instruction(arrays, 1, packed=False), context)
    weights = reply.content["arrays"]["1.weight"].numpy()
    assert weights.shape == (64, 64)
    assert np.count_nonzero(weights) < weights.size
    assert reply.content["metrics"]["upload-bytes"] == sum(a.numpy().nbytes for a in reply.content["arrays"].values())


def test_a_failing_device_answers_with_an_error_and_keeps_its_state():
    spec, data = make_spec(failure_rate=0.99)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    arrays = ArrayRecord(build_model("mlp-small", data.input_shape, data.num_classes, seed=0).state_dict())
    reply = train_device(spec, 0, instruction(arrays, 1), context)
    assert reply.has_error() and reply.error.code == fog.FAILED
    assert len(context.state) == 0
