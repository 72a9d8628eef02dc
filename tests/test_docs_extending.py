"""docs/extending.md: each worked example (a model, a criterion, a strategy) runs as written."""

import re
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

DOC = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()


def example(heading: str) -> str:
    """The one ```python block of the ``## heading`` section."""
    section = DOC.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"section {heading!r} should hold exactly one python example"
    return blocks[0]


def run(heading: str) -> dict:
    namespace: dict = {"__name__": f"docs_extending_{heading.split()[-1]}"}
    exec(compile(example(heading), f"docs/extending.md ({heading})", "exec"), namespace)
    return namespace


def test_every_example_is_short():
    for heading in ("A model", "An importance criterion", "An aggregation rule", "A strategy"):
        assert len(example(heading).splitlines()) < 40, heading


def test_a_custom_model_trains_within_its_budget():
    ns = run("A model")
    assert all(row["memory_bytes"] <= row["budget_bytes"] for row in ns["rows"])


def test_a_custom_criterion_is_the_one_used():
    ns = run("An importance criterion")
    assert isinstance(ns["trainer"].criterion, ns["NormalisedMagnitude"])


@pytest.fixture
def _task_identity(monkeypatch):
    """Give this process the run identity a ServerApp has, which Message() requires (as in
    tests/test_masked_fedavg.py); monkeypatch restores the private attributes afterwards."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def _registry(monkeypatch):
    """The example registers its strategy; take it out again afterwards."""
    import strategies

    monkeypatch.setattr(strategies, "STRATEGIES", dict(strategies.STRATEGIES))
    yield strategies
    strategies.STRATEGIES.pop("trimmed-masked-fedavg", None)


def test_a_custom_strategy_registers_and_aggregates(_task_identity, _registry):
    ns = run("A strategy")
    assert _registry.STRATEGIES["trimmed-masked-fedavg"] is ns["TrimmedMaskedFedAvg"]


def test_the_doc_names_where_scenarios_must_be_extended():
    from fogsim.sim.scenario import Strategy

    assert "Strategy.name" in DOC and "fogsim/sim/scenario.py" in DOC
    assert "trimmed-masked-fedavg" not in Strategy.model_fields["name"].annotation.__args__


def test_a_criterion_is_named_in_one_place():
    """The scenario and the train command take their criterion choices from the one Literal."""
    from typing import get_args

    from fogsim.core.config import CriterionName, TrainConfig
    from fogsim.sim.scenario import Pruning

    assert "CriterionName" in DOC and "fogsim/core/config.py" in DOC
    assert Pruning.model_fields["criterion"].annotation is CriterionName
    assert TrainConfig.model_fields["criterion"].annotation is CriterionName
    assert get_args(CriterionName) == ("magnitude",)


def test_a_custom_rule_is_found_by_name():
    from strategies import RULES

    try:
        ns = run("An aggregation rule")
        assert RULES["median"] is ns["median_of_keepers"]
    finally:
        RULES.pop("median", None)  # other tests see the built-in rules only
