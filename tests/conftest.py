"""Shared fixtures: small real models and data, and quiet, offline Flower."""

from fogsim.telemetry import telemetry_off

telemetry_off()  # before any test imports Flower

import pytest  # noqa: E402
import torch  # noqa: E402

from fogsim.models import build_model  # noqa: E402


@pytest.fixture
def mlp():
    """LeNet-300-100 on 28x28 inputs, seeded."""
    return build_model("mlp", (1, 28, 28), 10, seed=0), (1, 28, 28)


@pytest.fixture
def cnn():
    """LeNet-5 on 28x28 inputs, seeded."""
    return build_model("lenet5", (1, 28, 28), 10, seed=0), (1, 28, 28)


def batch(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture
def flower_task_identity(monkeypatch):
    """Give this process the run identity a ServerApp has, which Message() requires.

    Flower sets it when it starts an app; outside one, building a Message raises
    ``RuntimeError: TaskIdentity.run_id is not set``. Flower ships no public helper, so
    the private attributes are set, and monkeypatch restores them afterwards.
    """
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture(scope="module")
def benchmarks_on_path():
    """``benchmarks/`` on ``sys.path`` for a test module that imports a benchmark script by name.

    It stays there for the module's tests: Flower hands the driver's sys.path to the Ray workers,
    which import the module to run a benchmark's own ClientApp.
    """
    import sys
    from pathlib import Path

    where = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, where)
    yield
    sys.path.remove(where)
