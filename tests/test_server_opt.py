"""Mask-aware server optimizers against Flower's own, and the strategies' state across a resume."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvgM

from strategies import STRATEGIES, MaskedFedAdam, MaskedFedAvg, MaskedFedAvgM, build, delta, keepers
from strategies.encoding import dense_masked_state, pack_masked_state

pytestmark = pytest.mark.usefixtures("flower_task_identity")

SHAPES = {"fc.weight": (3, 4), "fc.bias": (3,)}
NODES = [11, 12, 13]


class _Grid:
    def get_node_ids(self):
        return NODES


def _record(arrays):
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def _numpy(record):
    return {k: a.numpy() for k, a in record.items()}


def _round(rng, masks):
    """Each client's trained model and examples; ``masks[k]`` its fc.weight mask (None: all kept)."""
    return [({k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}, mask, int(rng.integers(1, 20)))
            for mask in masks]


def _step(strategy, server_round, arrays, clients, packed):
    """One configure/aggregate cycle of ``strategy`` on the clients' uploads; the new global arrays."""
    instructions = list(strategy.configure_train(server_round, _record(arrays), ConfigRecord(), _Grid()))
    replies = []
    for instruction, (weights, mask, n) in zip(instructions, clients):
        full = mask if mask is not None else np.ones(SHAPES["fc.weight"], bool)
        upload = pack_masked_state(weights, {"fc.weight": full}) if packed else \
            dense_masked_state(weights, {"fc.weight": full})
        replies.append(Message(RecordDict({"arrays": _record(upload),
                                           "metrics": MetricRecord({"num-examples": n})}), reply_to=instruction))
    new, _ = strategy.aggregate_train(server_round, replies)
    return _numpy(new)


def _initial(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


@pytest.mark.parametrize("rule", ["keepers", "delta", "consensus"])
@pytest.mark.parametrize("masked, flower, options", [
    (MaskedFedAvgM, FedAvgM, {"server_learning_rate": 0.7, "server_momentum": 0.9}),
    (MaskedFedAdam, FedAdam, {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
])
def test_on_full_masks_the_masked_optimizers_are_flowers(rule, masked, flower, options):
    ours, theirs = masked(rule=rule, **options), flower(**options)
    a = b = _initial()
    rng = np.random.default_rng(1)
    for server_round in (1, 2, 3):
        clients = _round(rng, [None] * 3)
        a = _step(ours, server_round, a, clients, packed=True)
        b = _step(theirs, server_round, b, clients, packed=False)
        for k in SHAPES:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", [MaskedFedAvgM(rule="delta", server_momentum=0.9),
                                      MaskedFedAdam(rule="delta", eta=0.1)])
def test_the_optimizer_steps_on_the_rules_pseudo_gradient_and_leaves_unkept_entries(strategy):
    rng = np.random.default_rng(2)
    masks = [rng.random(SHAPES["fc.weight"]) < 0.5 for _ in NODES]
    masks[0][0, 0] = masks[1][0, 0] = masks[2][0, 0] = False  # nobody keeps entry (0, 0)
    previous = _initial()
    arrays = previous
    for server_round in (1, 2):
        clients = _round(rng, masks)
        before = arrays
        arrays = _step(strategy, server_round, arrays, clients, packed=True)
        # What the rule gives, computed independently; the optimizer must have stepped from it.
        rule = delta([w["fc.weight"] for w, _, _ in clients], masks, [n for *_, n in clients], before["fc.weight"])
        assert arrays["fc.weight"][0, 0] == before["fc.weight"][0, 0] == previous["fc.weight"][0, 0]
        if server_round == 2:  # with momentum from round 1 the step is not the rule's own
            assert not np.allclose(np.delete(arrays["fc.weight"], 0), np.delete(rule, 0))


@pytest.mark.parametrize("name, kind", [("masked-fedavgm", FedAvgM), ("masked-fedadam", FedAdam),
                                        ("fedavgm", FedAvgM), ("fedadam", FedAdam)])
def test_a_resumed_optimizer_continues_exactly(name, kind):
    """Round 3 from a state written after round 2 equals round 3 of the uninterrupted strategy."""
    options = {"rule": "delta", "server_lr": 0.3}
    rng = np.random.default_rng(3)
    rounds = [_round(rng, [rng.random(SHAPES["fc.weight"]) < 0.6 for _ in NODES]) for _ in range(3)]
    packed = name.startswith("masked-")
    whole = build(name, **options)
    arrays = _initial()
    for r, clients in enumerate(rounds[:2], start=1):
        arrays = _step(whole, r, arrays, clients, packed)
    saved = {k: v.copy() for k, v in whole.state_arrays().items()}
    assert saved, "an optimizer strategy has state to keep"
    expected = _step(whole, 3, arrays, rounds[2], packed)

    resumed = build(name, **options)
    resumed.round_offset = 2
    resumed.load_state_arrays(saved)
    got = _step(resumed, 1, arrays, rounds[2], packed)  # Flower's loop counts from 1 again
    for k in SHAPES:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
    if kind is FedAdam:  # the bias correction depends on the round: without the offset it differs
        fresh = build(name, **options)
        fresh.load_state_arrays(saved)
        assert not np.allclose(_step(fresh, 1, arrays, rounds[2], packed)["fc.weight"], expected["fc.weight"])


def test_averaging_strategies_have_no_optimizer_state():
    assert build("masked-fedavg").state_arrays() == {}
    assert build("fedavg").state_arrays() == {}


def test_state_of_another_strategy_is_refused():
    with pytest.raises(ValueError, match="does not belong"):
        build("fedavg").load_state_arrays({"m_t::fc.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="does not belong"):
        build("masked-fedadam").load_state_arrays({"velocity::0": np.zeros(2)})


def test_build_routes_each_option_to_the_strategies_that_take_it():
    m = build("masked-fedavgm", rule="consensus", quorum=0.7, server_lr=0.5, server_momentum=0.3)
    assert (m.rule, m.quorum, m.server_learning_rate, m.server_momentum) == ("consensus", 0.7, 0.5, 0.3)
    a = build("masked-fedadam", rule="delta", beta_1=0.8, beta_2=0.95, tau=0.01)
    assert (a.rule, a.eta, a.beta_1, a.beta_2, a.tau) == ("delta", 0.1, 0.8, 0.95, 0.01)
    assert build("fedavgm").server_learning_rate == 1.0
    assert isinstance(build("masked-fedavg", rule="delta"), MaskedFedAvg)
    assert not hasattr(build("fedadam"), "rule")
    with pytest.raises(ValueError, match="unknown strategy"):
        build("fedprox")
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        build("masked-fedavg", rule="median")
    assert set(STRATEGIES) >= {"masked-fedavg", "fedavg"}


def test_keepers_masked_fedavg_is_unchanged_by_the_rule_option():
    rng = np.random.default_rng(5)
    masks = [rng.random(SHAPES["fc.weight"]) < 0.5 for _ in NODES]
    clients = _round(rng, masks)
    previous = _initial()
    got = _step(MaskedFedAvg(), 1, previous, clients, packed=True)
    expected = keepers([w["fc.weight"] for w, _, _ in clients], masks, [n for *_, n in clients],
                       previous["fc.weight"])
    np.testing.assert_allclose(got["fc.weight"], expected, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_the_global_model_keeps_the_dtype_it_was_sent_in(name):
    """Flower's FedAdam steps a float32 model into float64 under numpy 2; that would double every
    download. Every strategy fogsim builds returns the dtypes it sent."""
    rng = np.random.default_rng(4)
    strategy = build(name, rule="delta", server_lr=0.03)
    arrays = _initial()
    for server_round in (1, 2, 3):
        clients = _round(rng, [rng.random(SHAPES["fc.weight"]) < 0.6 for _ in NODES])
        arrays = _step(strategy, server_round, arrays, clients, packed=name.startswith("masked-"))
        assert {k: v.dtype for k, v in arrays.items()} == {k: np.dtype(np.float32) for k in SHAPES}, server_round
