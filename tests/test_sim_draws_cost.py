"""The simulated fog: seeded availability, sampling and failures; simulated time from the profile."""

from types import SimpleNamespace

import numpy as np
import pytest

from fogsim.core import MaskSet, Topology
from fogsim.models import build_model
from fogsim.sim import cost, draws


def profile(availability=1.0, failure_rate=0.0):
    return SimpleNamespace(availability=availability, failure_rate=failure_rate, flops=1e6, uplink=8e3, downlink=16e3)


def test_participants_are_seeded_and_only_available_devices_are_sampled():
    availability = np.full(40, 0.5)
    available, sampled = draws.participants(availability, 0.5, seed=1, round_=3)
    again = draws.participants(availability, 0.5, seed=1, round_=3)
    assert available.tolist() == again[0].tolist() and sampled == again[1]
    assert set(sampled) <= set(available.tolist()) and 5 < len(available) < 35
    assert len(sampled) == int(0.5 * len(available)) <= draws.most_sampled(40, 0.5)
    assert draws.participants(availability, 0.5, seed=1, round_=4)[1] != sampled


def test_always_available_full_fraction_samples_everyone():
    available, sampled = draws.participants(np.ones(5), 1.0, seed=0, round_=1)
    assert available.tolist() == sampled == [0, 1, 2, 3, 4]


def test_nobody_available_samples_nobody():
    available, sampled = draws.participants(np.zeros(5), 1.0, seed=0, round_=1)
    assert len(available) == 0 and sampled == []


def test_sampling_a_big_fleet_costs_one_vectorised_draw():
    """A round of a 100,000-device fleet samples its 100 devices without a Python loop over the fleet."""
    availability = np.full(100_000, 0.9)
    available, sampled = draws.participants(availability, 100 / 90_000, seed=0, round_=1)
    assert 89_000 < len(available) < 91_000 and 98 <= len(sampled) <= draws.most_sampled(100_000, 100 / 90_000)


def test_failures_follow_the_rate():
    failed = [draws.fails(0.2, seed=0, round_=r, device=d) for r in range(1, 21) for d in range(50)]
    assert 0.15 < sum(failed) / len(failed) < 0.25
    assert not any(draws.fails(0.0, 0, r, 0) for r in range(100))


def test_device_time_is_compute_plus_transfers():
    assert cost.device_seconds(profile(), flops=2e6, download_bytes=2000, upload_bytes=1000) == \
        pytest.approx(2000 * 8 / 16e3 + 2 + 1000 * 8 / 8e3)


def test_forward_flops_count_kept_weights_only():
    model = build_model("mlp-small", (1, 8, 8), 10, seed=0)
    topology = Topology(model, (1, 8, 8))
    dense = cost.forward_flops(topology, None)
    assert dense == 2 * (64 * 64 + 64 * 32 + 32 * 10)
    masks = MaskSet(model, topology)
    masks.update({name: mask & False for name, mask in masks.masks.items()})
    assert cost.forward_flops(topology, masks) == 0
