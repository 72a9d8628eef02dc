"""benchmarks/fog.py: every row is a valid scenario, the flat row has no fog nodes, and the table and
verdict read the summaries right."""

import pytest


@pytest.fixture(scope="module")
def fog(benchmarks_on_path):
    import fog

    return fog


def test_every_row_is_a_valid_scenario_and_flat_is_flat(fog):
    from fogsim.sim.scenario import load_scenario

    shipped = load_scenario(fog.SCENARIO)
    assert len(shipped.fleet) == fog.FLEET_ENTRIES
    for row, sets in fog.ROWS.items():
        scenario = load_scenario(fog.SCENARIO, sets)
        if row == fog.FLAT:
            assert scenario.fog is None and all(e.fog is None for e in scenario.fleet)
        else:
            assert scenario.fog.cloud_every == int(row.split(",")[0].split()[-1])
            assert scenario.fog.sync_while_pruning == ("sync while pruning" in row)
            assert [e.fog for e in scenario.fleet] == [e.fog for e in shipped.fleet]
    assert len({fog.directory(fog.Path("out"), row, 0) for row in fog.ROWS}) == len(fog.ROWS)


def _summary(accuracy, wan, local=1000):
    return {"accuracy": accuracy, "wan_upload_bytes": wan / 2, "wan_download_bytes": wan / 2,
            "upload_bytes": local / 2, "download_bytes": local / 2, "sim_time_s": 10.0, "global_density": 0.1}


def test_table_and_verdict(fog):
    results = {row: [_summary(0.80, 600), _summary(0.82, 600)] for row in fog.ROWS}
    results[fog.FLAT] = [_summary(0.85, 1200), _summary(0.87, 1200)]
    results["cloud_every 5"] = [_summary(0.855, 300), _summary(0.857, 300)]
    table = fog.table(results)
    assert table.count("\n") == len(fog.ROWS) + 2
    assert "| flat | 0.8600 ± 0.0141 | +0.0000 ± 0.0000 | 1.17 KiB | 1.00x fewer | 1000 B | 0.100 |" in table
    assert "| cloud_every 5 | 0.8560 ± 0.0014 | -0.0040 ± 0.0127 | 300 B | 4.00x fewer |" in table
    verdict = fog.verdict(results).splitlines()
    assert verdict[0] == ("cloud_every 5: 0.8560 vs flat 0.8600 (-0.0040, within 1 point) at 4.0x fewer "
                          "wide-area bytes (met: 3x or more)")
    assert verdict[1].startswith("cloud_every 5, sync while pruning: 0.8100 vs flat 0.8600 (-0.0500, NOT within 1 "
                                 "point) at 2.0x fewer wide-area bytes (NOT met")
