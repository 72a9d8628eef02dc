"""A fleet far larger than the data and than the rounds' samples, end to end through Flower and Ray."""

import pandas as pd
import pytest

from fogsim.sim import draws
from fogsim.sim.run import nodes_for, prepare, run

pytestmark = pytest.mark.slow

TEN_THOUSAND = ["rounds=2", "fleet[0].count=3334", "fleet[1].count=3333", "fleet[2].count=3333",
                "data.partition.per_device=20", "fraction=0.002", "evaluation.device_masks=false",
                "simulation.engine=ray"]


def test_ten_thousand_devices_on_the_digits_run_to_the_end(tmp_path):
    prepared = prepare("scenarios/quickstart.yaml", TEN_THOUSAND)
    assert len(prepared.fleet) == 10_000 > len(prepared.data.train_x), "more devices than training samples"
    assert draws.most_sampled(10_000, 0.002) == 20
    assert nodes_for(prepared.scenario, len(prepared.fleet), cpus=2) == 2, "one worker per CPU, a cohort each"
    assert nodes_for(prepared.scenario, 1000, cpus=64) == 2, "never more workers than a round samples"
    assert nodes_for(prepared.scenario, 500_000, cpus=2) == 4, "1,000 devices a round: cohorts of at most 256"
    summary = run(prepared, tmp_path / "run")
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    clients = pd.read_csv(tmp_path / "run" / "clients.csv")
    assert list(rounds["round"]) == [1, 2]
    assert (rounds["clients_available"] > 7_000).all() and (rounds["clients_sampled"] <= 20).all()
    assert len(clients) == rounds["clients_sampled"].sum() and clients["client_id"].max() < 10_000
    ok = clients[clients["failed"] == 0]
    assert (ok["num_examples"] == 20).all() and (ok["peak_memory_bytes"] <= ok["budget_bytes"]).all()
    assert summary["rounds"] == 2 and {t["devices"] for t in summary["profiles"].values()} == {3334, 3333}
