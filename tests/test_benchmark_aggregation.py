"""benchmarks/aggregation.py: every row is a valid scenario, and the table and verdict read the summaries right."""

import pytest



@pytest.fixture(scope="module")
def aggregation(benchmarks_on_path):
    import aggregation

    return aggregation


def test_every_row_fleet_and_size_is_a_valid_scenario(aggregation):
    from fogsim.sim.scenario import load_scenario

    for size, size_sets in aggregation.SIZES.items():
        for fleet, fleet_sets in aggregation.FLEETS.items():
            for row, row_sets in aggregation.ROWS.items():
                scenario = load_scenario(aggregation.SCENARIO, [*size_sets, *fleet_sets, *row_sets])
                assert scenario.strategy.name == row_sets[0].split("=")[1], (size, fleet, row)


def _summary(accuracy, upload=100, download=300):
    tier = {"accuracy": accuracy}
    return {"accuracy": accuracy, "accuracy_last3": accuracy, "upload_bytes": upload, "download_bytes": download,
            "sim_time_s": 10.0, "profiles": {"esp32-s3": tier, "rpi4": tier}}


def test_table_and_verdict(aggregation):
    results = {row: [_summary(0.80), _summary(0.82)] for row in aggregation.ROWS}
    results["masked-fedavg, delta"] = [_summary(0.85), _summary(0.87)]
    results[aggregation.DENSE] = [_summary(0.86, 1000, 1000), _summary(0.88, 1000, 1000)]
    table = aggregation.table(results)
    assert table.count("\n") == len(aggregation.ROWS) + 2
    assert "| masked-fedavg, delta | 0.8600 ± 0.0141 |" in table and "5.00x less" in table
    verdict = aggregation.verdict(results)
    assert verdict.startswith("best mask-aware: masked-fedavg, delta 0.8600") and "above the seeds' std" in verdict
    assert "vs dense 0.8700: -0.0100" in verdict and "traffic 5.00x below dense" in verdict
