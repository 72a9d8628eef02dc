"""Every scenario shipped in scenarios/ validates, and its fleet can train within its budgets."""

from pathlib import Path

import pytest

from fogsim.sim.run import prepare
from fogsim.sim.scenario import load_scenario

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml"))
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_is_valid_and_feasible(path):
    scenario = load_scenario(path)
    if scenario.data.name == "fashion-mnist" and not FASHION.exists():
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    prepared = prepare(path)
    assert len(prepared.fleet) == sum(entry.count for entry in scenario.fleet)
    assert all(d.plan.target_bytes <= d.plan.budget_bytes for d in prepared.fleet)
