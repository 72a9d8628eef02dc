"""The bare-Flower side of benchmarks/flower_overhead.py runs and learns (digits, 4 devices, 2 rounds)."""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flower_overhead(benchmarks_on_path):
    import flower_overhead

    return flower_overhead


def test_bare_flower_samples_clients_from_one_node_per_device_and_trains_them(flower_overhead):
    """One run (each is a Ray start): Flower's own FedAvg samples 2 of 4 nodes and the model learns."""
    prepared = flower_overhead.prepare_fleet(dataset="digits", devices=4, rounds=2)
    assert len(prepared.fleet) == 4 and not any(d.config.prunes for d in prepared.fleet)
    outcome: dict = {}
    result = flower_overhead.run_bare(prepared, clients=2, outcome=outcome)
    assert result.run == "bare" and result.rounds == 2 and outcome["replies"] == [2, 2], \
        "Flower's FedAvg trained 2 of the 4 nodes a round (which 2 is Flower's unseeded draw)"
    assert outcome["start"] < outcome["round0"] < outcome["first_push"] < outcome["marks"][0]
    assert 0.3 < result.accuracy <= 1.0, "two rounds of FedAvg on digits are well above chance (0.1)"
    assert 0 < result.to_last_round_s <= result.wall_s


def _row(devices, key, **values):
    row = {"devices": devices, "key": key, "run": key, "pruning": "", "repetition": 1, "status": "ok",
           "timeout_s": None, "startup_s": 10.0, "imports_s": 1.0, "prepare_s": 1.0, "run_to_round1_s": 1.0,
           "round1_s": 5.0, "median_round_s": 2.0, "round_wall_s": "5.00 / 2.00 / 2.00", "to_last_round_s": 20.0,
           "total_s": 25.0, "driver_peak_rss": 1e9, "ray_workers_peak_rss": 2e9, "ray_all_peak_rss": 3e9,
           "driver_plus_ray_rss": 4e9, "peak_pss_total": 3e9, "accuracy": 0.5, "ray_processes": "{}"}
    return {**row, **values}


def test_fleet_scale_targets_read_the_table(flower_overhead):
    import fleet_scale

    rows = [_row(100, "fogsim-off"), _row(100, "fogsim-on", median_round_s=3.0),
            _row(1000, "fogsim-off"), _row(1000, "bare", to_last_round_s=30.0),
            _row(10_000, "fogsim-off"),
            _row(10_000, "bare", status="timeout", timeout_s=600.0, to_last_round_s=None, median_round_s=None),
            _row(100_000, "fogsim-off", median_round_s=2.3, startup_s=70.0),
            _row(100_000, "fogsim-on", median_round_s=3.3, ray_all_peak_rss=5.5e9)]
    lines = fleet_scale.targets(rows, clients=100)
    assert lines[0].startswith("target start-up of 100,000 devices <= 60 s") and ": not met (" in lines[0]
    assert ": not met (" in lines[1] and "driver 1.00 + all Ray 5.50 = 6.50 GB" in lines[1]
    assert ": met (" in lines[2] and "2.30 s vs 2.00 s = 1.15x" in lines[2] and "3.30 s vs 3.00 s = 1.10x" in lines[2]
    assert lines[3].endswith("met (fogsim 20.0 s, bare Flower 30.0 s, ratio 0.667x)") and "1,000 devices" in lines[3]
    assert "10,000 devices" in lines[4] and lines[4].endswith("met (fogsim 20.0 s, bare Flower > 600 s (stopped))")
    table = fleet_scale.table(rows)
    assert "| 10,000 | bare (timeout) |" in table and "> 600" in table
    assert "< 0.033x" in fleet_scale.pairs_table(rows)
