"""The bare-Flower side of benchmarks/flower_overhead.py runs and learns (digits, 2 devices, 1 round)."""

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def flower_overhead():
    # Imported by name from a directory on sys.path: Flower hands the driver's sys.path to the Ray
    # workers, which then import the module to run the benchmark's ClientApp.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import flower_overhead
        yield flower_overhead
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_bare_flower_fedavg_trains_the_fleet(flower_overhead):
    prepared = flower_overhead.prepare_fleet(dataset="digits", devices=2, rounds=1)
    assert len(prepared.fleet) == 2 and not any(d.config.prunes for d in prepared.fleet)
    result = flower_overhead.run_bare(prepared)
    assert result.run == "bare" and result.rounds == 1
    assert 0.5 < result.accuracy <= 1.0, "one round of FedAvg on digits is well above chance (0.1)"
    assert 0 < result.to_last_round_s <= result.wall_s
