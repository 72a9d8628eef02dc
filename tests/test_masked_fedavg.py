"""MaskedFedAvg driven with hand-built Flower messages, and once through a real simulation."""

import logging

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.exception import AggregationError, InconsistentMessageReplies
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM
from flwr.supercore import telemetry

from strategies import STRATEGIES, UPLOAD_ENCODING_KEY, MaskedFedAvg
from strategies.encoding import dense_masked_state, pack_masked_state

PREVIOUS = {"fc.weight": np.full((2, 3), 9.0, np.float32), "fc.bias": np.zeros(2, np.float32)}
CLIENTS = [
    # (weights, mask of fc.weight, examples)
    (
        {
            "fc.weight": np.array([[1, 2, 0], [0, 0, 0]], np.float32),
            "fc.bias": np.ones(2, np.float32),
        },
        np.array([[1, 1, 0], [0, 0, 0]], bool),
        1,
    ),
    (
        {
            "fc.weight": np.array([[3, 0, 6], [0, 0, 0]], np.float32),
            "fc.bias": np.full(2, 5, np.float32),
        },
        np.array([[1, 0, 1], [0, 0, 0]], bool),
        3,
    ),
]
# Entry by entry: (1*1 + 3*3)/4, only client 0 kept [0,1], only client 1 kept [0,2],
# nobody kept row 1, which keeps its previous 9.
EXPECTED_WEIGHT = np.array([[2.5, 2.0, 6.0], [9.0, 9.0, 9.0]], np.float32)
EXPECTED_BIAS = np.full(2, 4.0, np.float32)


pytestmark = pytest.mark.usefixtures("flower_task_identity")


class _Grid:
    """Just enough of a Flower Grid for FedAvg's node sampling."""

    def get_node_ids(self):
        return [11, 12]


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def _configured(strategy):
    config = ConfigRecord()
    instructions = list(strategy.configure_train(1, _record(PREVIOUS), config, _Grid()))
    return instructions, config


def _reply(instruction, upload, examples, loss=0.5):
    content = RecordDict(
        {
            "arrays": _record(upload),
            "metrics": MetricRecord({"num-examples": examples, "train-loss": loss}),
        }
    )
    return Message(content, reply_to=instruction)


def _packed_replies(instructions):
    return [
        _reply(instr, pack_masked_state(weights, {"fc.weight": mask}), n, loss=float(n))
        for instr, (weights, mask, n) in zip(instructions, CLIENTS)
    ]


def test_configure_train_asks_for_packed_uploads():
    instructions, config = _configured(MaskedFedAvg())
    assert len(instructions) == 2
    assert config[UPLOAD_ENCODING_KEY] == "packed"
    assert instructions[0].content["config"][UPLOAD_ENCODING_KEY] == "packed"


def test_aggregate_train_gives_the_masked_average():
    strategy = MaskedFedAvg()
    instructions, _ = _configured(strategy)
    arrays, metrics = strategy.aggregate_train(1, _packed_replies(instructions))
    np.testing.assert_array_equal(arrays["fc.weight"].numpy(), EXPECTED_WEIGHT)
    np.testing.assert_array_equal(arrays["fc.bias"].numpy(), EXPECTED_BIAS)
    assert list(arrays) == ["fc.weight", "fc.bias"]
    assert metrics["train-loss"] == pytest.approx((1 * 1 + 3 * 3) / 4)


def test_uniform_weighting_counts_every_client_once():
    """``strategy.weighting: uniform`` weights by a key every fogsim client sets to 1."""
    strategy = MaskedFedAvg(weighted_by_key="unit-weight")
    instructions, _ = _configured(strategy)
    replies = []
    for instr, (weights, mask, n) in zip(instructions, CLIENTS):
        content = RecordDict({"arrays": _record(pack_masked_state(weights, {"fc.weight": mask})),
                              "metrics": MetricRecord({"num-examples": n, "unit-weight": 1})})
        replies.append(Message(content, reply_to=instr))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays["fc.weight"].numpy()[0, 0] == pytest.approx((1 + 3) / 2)
    np.testing.assert_array_equal(arrays["fc.bias"].numpy(), np.full(2, 3.0, np.float32))


def test_plain_fedavg_dilutes_the_same_uploads():
    strategy = FedAvg()
    instructions, config = _configured(strategy)
    assert UPLOAD_ENCODING_KEY not in config
    replies = [
        _reply(instr, dense_masked_state(weights, {"fc.weight": mask}), n)
        for instr, (weights, mask, n) in zip(instructions, CLIENTS)
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    # Client 1's pruned zero pulls client 0's 2.0 down to 0.5.
    assert arrays["fc.weight"].numpy()[0, 1] == pytest.approx(0.5)


def test_error_replies_are_dropped():
    strategy = MaskedFedAvg()
    instructions, _ = _configured(strategy)
    good = _packed_replies(instructions)[1]
    failed = Message(Error(code=0, reason="device dropped out"), reply_to=instructions[0])
    arrays, _ = strategy.aggregate_train(1, [failed, good])
    weights, mask, _ = CLIENTS[1]
    expected = np.where(mask, weights["fc.weight"], PREVIOUS["fc.weight"])
    np.testing.assert_array_equal(arrays["fc.weight"].numpy(), expected)


def test_no_valid_reply_gives_no_update():
    strategy = MaskedFedAvg()
    instructions, _ = _configured(strategy)
    failed = Message(Error(code=0, reason="offline"), reply_to=instructions[0])
    assert strategy.aggregate_train(1, [failed]) == (None, None)


def test_inconsistent_replies_abort_as_in_fedavg():
    strategy = MaskedFedAvg()
    instructions, _ = _configured(strategy)
    weights, mask, n = CLIENTS[0]
    replies = [
        _reply(instructions[0], pack_masked_state(weights, {"fc.weight": mask}), n),
        _reply(instructions[1], weights, n),  # dense: other keys
    ]
    with pytest.raises(InconsistentMessageReplies):
        strategy.aggregate_train(1, replies)


def test_mismatched_shapes_raise_an_aggregation_error():
    strategy = MaskedFedAvg()
    instructions, _ = _configured(strategy)
    wrong = {"fc.weight": np.zeros((3, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
    replies = [_reply(instr, wrong, 1) for instr in instructions]
    with pytest.raises(AggregationError, match="weights have shape"):
        strategy.aggregate_train(1, replies)


def test_aggregate_before_configure_is_an_aggregation_error():
    instructions, _ = _configured(MaskedFedAvg())
    with pytest.raises(AggregationError, match="configure_train"):
        MaskedFedAvg().aggregate_train(1, _packed_replies(instructions))


def test_registry_names_mask_aware_and_flower_strategies():
    assert set(STRATEGIES) == {"masked-fedavg", "masked-fedavgm", "masked-fedadam", "fedavg", "fedavgm", "fedadam"}
    assert STRATEGIES["masked-fedavg"] is MaskedFedAvg
    for name, flower in (("fedavg", FedAvg), ("fedavgm", FedAvgM), ("fedadam", FedAdam)):
        assert issubclass(STRATEGIES[name], flower)
        assert issubclass(STRATEGIES[f"masked-{name}"], flower)
        assert issubclass(STRATEGIES[f"masked-{name}"], MaskedFedAvg)


@pytest.fixture
def _quiet_flower(monkeypatch):
    """Silence a simulation and keep it offline.

    Flower logs its rounds and a deprecation notice through the ``flwr`` logger, and reads
    FLWR_LOG_LEVEL and FLWR_TELEMETRY_ENABLED once, at import - too late here, so the
    logger and the telemetry switch are set directly (the environment variable still
    reaches the Ray workers started later). Ray's own log level and log forwarding go in
    ``init_args``; the variable below turns off a FutureWarning tip of Ray's.
    """
    monkeypatch.setattr(telemetry, "FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.mark.slow
def test_one_round_of_a_real_simulation(_quiet_flower):
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    final: dict[str, np.ndarray] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = MaskedFedAvg(fraction_evaluate=0.0)
        result = strategy.start(grid=grid, initial_arrays=_record(PREVIOUS), num_rounds=1)
        # run_simulation returns nothing: the ServerApp runs in a thread of this
        # process, so the final arrays leave through this closure.
        final.update({k: a.numpy() for k, a in result.arrays.items()})

    client = ClientApp()

    @client.train()
    def _train(msg: Message, context: Context) -> Message:
        assert msg.content["config"][UPLOAD_ENCODING_KEY] == "packed"
        weights, mask, n = CLIENTS[int(context.node_config["partition-id"])]
        return _reply(msg, pack_masked_state(weights, {"fc.weight": mask}), n)

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=2,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"num_cpus": 2, "logging_level": "ERROR", "log_to_driver": False},
        },
    )
    np.testing.assert_array_equal(final["fc.weight"], EXPECTED_WEIGHT)
    np.testing.assert_array_equal(final["fc.bias"], EXPECTED_BIAS)
