"""strategies.Hierarchical driven with hand-built Flower messages: fog nodes every round, the cloud every few.

Random clients with random masks on a two-tensor model; the reference is written out here in plain
numpy (the formulas of HierFAVG with the keepers and delta rules), not with ``strategies``' code.
"""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

import strategies
from strategies import Hierarchical
from strategies.encoding import dense_masked_state, pack_masked_state

pytestmark = pytest.mark.usefixtures("flower_task_identity")

SHAPES = {"fc.weight": (4, 6), "fc.bias": (4,)}
MASKED = "fc.weight"


class _Grid:
    def __init__(self, devices):
        self.devices = list(devices)

    def get_node_ids(self):
        return list(self.devices)


def _record(arrays):
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _numpy(record):
    return {k: a.numpy() for k, a in record.items()}


def _build(name, rule="delta", **options):
    return strategies.build(name, rule=rule, fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=0,
                            min_evaluate_nodes=0, min_available_nodes=0, **options)


def _fog_level(name, rule):
    return _build("masked-fedavg" if name.startswith("masked-") else "fedavg", rule)


class Clients:
    """Random devices: each round each trains to random values under a fixed random mask."""

    def __init__(self, devices, seed):
        self.rng = np.random.default_rng(seed)
        self.devices = list(devices)
        self.masks = {d: self.rng.random(SHAPES[MASKED]) < 0.6 for d in self.devices}
        self.examples = {d: int(self.rng.integers(1, 50)) for d in self.devices}

    def replies(self, messages, packed=True, failing=()):
        out = []
        for message in sorted(messages, key=lambda m: m.metadata.dst_node_id):
            device = int(message.metadata.dst_node_id)
            if device in failing:
                out.append(Message(Error(code=1, reason="dropped"), reply_to=message))
                continue
            weights = {k: self.rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
            masks = {MASKED: self.masks[device]}
            upload = pack_masked_state(weights, masks) if packed else dense_masked_state(weights, masks)
            content = RecordDict({"arrays": _record(upload), "metrics": MetricRecord(
                {"num-examples": self.examples[device], "train-loss": 0.5})})
            out.append(Message(content, reply_to=message))
        return out


def _initial(seed=0):
    rng = np.random.default_rng(seed)
    return _record({k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()})


def _rounds(strategy, clients, rounds, packed=True, failing=()):
    """Drive ``strategy`` as Flower's loop does; return the global arrays after each round."""
    arrays, out = _initial(), []
    for server_round in range(1, rounds + 1):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), _Grid(clients.devices)))
        result, _ = strategy.aggregate_train(server_round, clients.replies(messages, packed, failing))
        arrays = result if result is not None else arrays
        out.append(_numpy(arrays))
    return out


@pytest.mark.parametrize("name, rule", [("masked-fedavg", "keepers"), ("masked-fedavg", "delta"),
                                        ("masked-fedavg", "consensus"), ("masked-fedadam", "delta"),
                                        ("masked-fedavgm", "keepers"), ("fedavg", "delta"), ("fedadam", "delta")])
def test_one_fog_node_syncing_every_round_is_the_flat_strategy(name, rule):
    devices = [3, 5, 8, 13]
    flat = _rounds(_build(name, rule), Clients(devices, 1), 4, packed=name.startswith("masked-"))
    tree = Hierarchical(_build(name, rule), _fog_level(name, rule), lambda ids: [0] * len(ids), 1, 1, 4)
    hierarchical = _rounds(tree, Clients(devices, 1), 4, packed=name.startswith("masked-"))
    for a, b in zip(flat, hierarchical):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _by_hand(rule, n, m, w, previous):
    """keepers: each entry averaged over who kept it (else previous); delta: previous plus the mean
    update over everyone, a client that did not keep the entry adding zero."""
    previous = previous.astype(float)
    if rule == "keepers":
        kept = np.tensordot(n, m, 1)
        merged = np.where(kept > 0, np.tensordot(n, m * w, 1) / np.where(kept > 0, kept, 1), previous)
    else:
        merged = previous + np.tensordot(n, m * (w - previous), 1) / n.sum()
    return merged.astype(np.float32)


def _reference(rule, rounds, devices, node_of, cloud_every, seed):
    """HierFAVG by hand: the clients' values regenerated with the same random stream as ``Clients``."""
    clients = Clients(devices, seed)
    cloud = _numpy(_initial())
    nodes = sorted(set(node_of(devices)))
    models = {j: None for j in nodes}
    period = {j: (0.0, np.zeros(SHAPES[MASKED], bool)) for j in nodes}
    history = []
    for server_round in range(1, rounds + 1):
        uploads = {d: {k: clients.rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
                   for d in sorted(devices)}
        for j in nodes:
            mine = [d for d in sorted(devices) if node_of([d])[0] == j]
            previous = models[j] if models[j] is not None else cloud
            n = np.array([clients.examples[d] for d in mine], float)
            m = np.array([clients.masks[d] for d in mine], float)
            w = np.array([uploads[d][MASKED] for d in mine], float)
            b = np.array([uploads[d]["fc.bias"] for d in mine], float)
            models[j] = {MASKED: _by_hand(rule, n, m, w, previous[MASKED]),
                         "fc.bias": (np.tensordot(n, b, 1) / n.sum()).astype(np.float32)}
            total, union = period[j]
            period[j] = (total + n.sum(), union | (m.sum(0) > 0))
        if server_round % cloud_every == 0 or server_round == rounds:
            n = np.array([period[j][0] for j in nodes])
            m = np.array([period[j][1] for j in nodes], float)
            w = np.array([models[j][MASKED] for j in nodes], float)
            b = np.array([models[j]["fc.bias"] for j in nodes], float)
            cloud = {MASKED: _by_hand(rule, n, m, w, cloud[MASKED]),
                     "fc.bias": (np.tensordot(n, b, 1) / n.sum()).astype(np.float32)}
            models = {j: None for j in nodes}
            period = {j: (0.0, np.zeros(SHAPES[MASKED], bool)) for j in nodes}
        history.append((cloud, dict(models)))
    return history


@pytest.mark.parametrize("rule", ["keepers", "delta"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_level_aggregation_equals_the_reference_on_random_masked_clients(rule, seed):
    devices = list(range(10, 22))
    assign = {d: (d * 7 + seed) % 3 for d in devices}

    def node_of(ids):
        return [assign[int(d)] for d in ids]

    rounds, cloud_every = 5, 2
    tree = Hierarchical(_build("masked-fedavg", rule), _fog_level("masked-fedavg", rule), node_of, 3, cloud_every,
                        rounds)
    got = _rounds(tree, Clients(devices, seed), rounds)
    expected = _reference(rule, rounds, devices, node_of, cloud_every, seed)
    for server_round, (arrays, (cloud, _)) in enumerate(zip(got, expected), start=1):
        for key in SHAPES:
            np.testing.assert_allclose(arrays[key], cloud[key], rtol=1e-5, atol=1e-6,
                                       err_msg=f"round {server_round}, {key}")
    # Between cloud rounds the cloud's model stands still and each node holds its own aggregate.
    assert all(np.array_equal(got[0][k], _numpy(_initial())[k]) for k in SHAPES)
    assert not tree.last_was_cloud or rounds % cloud_every != 0


def test_devices_receive_their_fog_nodes_model_between_cloud_rounds():
    devices = [1, 2, 3, 4]
    tree = Hierarchical(_build("masked-fedavg"), _fog_level("masked-fedavg", "delta"),
                        lambda ids: [int(d) % 2 for d in ids], 2, 3, 6)
    clients = Clients(devices, 4)
    arrays = _initial()
    messages = list(tree.configure_train(1, arrays, ConfigRecord(), _Grid(devices)))
    tree.aggregate_train(1, clients.replies(messages))
    assert not tree.last_was_cloud and [r.replies for r in tree.last_round] == [2, 2]
    messages = list(tree.configure_train(2, arrays, ConfigRecord(), _Grid(devices)))
    for message in messages:
        node = int(message.metadata.dst_node_id) % 2
        sent = message.content["arrays"]
        assert sent is tree.models[node] and sent is not arrays
        assert message.content["config"]["server-round"] == 2


def test_failed_clients_are_dropped_and_a_node_without_replies_keeps_its_model():
    devices = [1, 2, 3, 4]
    tree = Hierarchical(_build("masked-fedavg"), _fog_level("masked-fedavg", "delta"),
                        lambda ids: [0 if int(d) < 3 else 1 for d in ids], 2, 1, 3)
    clients = Clients(devices, 5)
    got = _rounds(tree, clients, 1, failing=(3, 4))
    # Node 1 had no reply: the cloud aggregated node 0 alone, with node 0's weight only.
    assert tree.last_round[1].replies == 0 and tree.last_round[1].wan_upload is None
    assert tree.last_round[0].replies == 2 and tree.last_round[0].wan_upload is not None
    assert np.isfinite(got[0]["fc.bias"]).all()


def test_a_checkpoint_between_cloud_rounds_resumes_to_the_same_models():
    devices = list(range(8))

    def make():
        return Hierarchical(_build("masked-fedadam"), _fog_level("masked-fedadam", "delta"),
                            lambda ids: [int(d) % 3 for d in ids], 3, 3, 6)

    whole = make()
    clients = Clients(devices, 6)
    expected = _rounds(whole, clients, 6)

    first = make()
    clients = Clients(devices, 6)
    arrays, got = _initial(), []
    for server_round in range(1, 3):
        messages = list(first.configure_train(server_round, arrays, ConfigRecord(), _Grid(devices)))
        arrays, _ = first.aggregate_train(server_round, clients.replies(messages))
        got.append(_numpy(arrays))
    state = first.state_arrays()
    assert any(k.startswith("hier::model::") for k in state) and any(k.startswith("hier::weight::") for k in state)
    second = make()
    second.round_offset = 2
    second.load_state_arrays(state)
    for server_round in range(1, 5):  # Flower's loop counts from 1 again
        messages = list(second.configure_train(server_round, arrays, ConfigRecord(), _Grid(devices)))
        arrays, _ = second.aggregate_train(server_round, clients.replies(messages))
        got.append(_numpy(arrays))
    for a, b in zip(expected, got):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_state_of_another_hierarchy_is_refused():
    tree = Hierarchical(_build("masked-fedavg"), _fog_level("masked-fedavg", "delta"), lambda ids: [0] * len(ids),
                        2, 2, 4)
    with pytest.raises(ValueError, match="does not belong to a hierarchy of 2 fog nodes"):
        tree.load_state_arrays({"hier::weight::5": np.ones(1)})
    with pytest.raises(ValueError, match="does not belong"):
        tree.load_state_arrays({"m_t::fc.weight": np.ones(1)})


@pytest.mark.parametrize("nodes, every, message", [(0, 1, "at least one fog node"), (1, 0, "at least 1")])
def test_bad_hierarchy_is_refused(nodes, every, message):
    with pytest.raises(ValueError, match=message):
        Hierarchical(_build("masked-fedavg"), _build("masked-fedavg"), lambda ids: ids, nodes, every, 3)


def test_cloud_rounds_every_n_every_round_through_sync_through_and_the_last():
    tree = Hierarchical(_build("masked-fedavg"), _build("masked-fedavg"), lambda ids: ids, 2, 4, 11, sync_through=3)
    assert [r for r in range(1, 12) if tree.cloud_round(r)] == [1, 2, 3, 4, 8, 11]
    tree.sync_through = 0
    assert [r for r in range(1, 12) if tree.cloud_round(r)] == [4, 8, 11]
