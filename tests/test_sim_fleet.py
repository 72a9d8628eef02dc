"""The fleet: profiles with overrides, per-device plans, auto compression, infeasible budgets."""

from pathlib import Path

import pytest

from fogsim.errors import FogsimError
from fogsim.sim.fleet import build_fleet
from fogsim.sim.scenario import parse_scenario

DIGITS = ((1, 8, 8), 10)


def fleet(entries, **keys):
    return build_fleet(parse_scenario({"fleet": entries, **keys}), Path("."), *DIGITS)


def test_devices_are_numbered_in_fleet_order_with_their_profile():
    devices = fleet([{"profile": "samd21", "count": 2}, {"profile": "rpi4"}], training={"batch_min": 8})
    assert [(d.id, d.entry, d.profile_name) for d in devices] == [(0, 0, "samd21"), (1, 0, "samd21"), (2, 1, "rpi4")]
    tiny, big = devices[0].plan, devices[2].plan
    assert tiny.one_shot and tiny.start_density < 1, "24 KiB cannot hold the dense mlp-small"
    assert not big.one_shot
    assert tiny.target_bytes <= tiny.budget_bytes


def test_overrides_change_the_budget():
    devices = fleet([{"profile": "rpi4", "overrides": {"memory_budget": "64KiB"}}], training={"batch_min": 8})
    assert devices[0].plan.budget_bytes == 64 * 1024
    assert devices[0].profile.flops == 1e10


def test_auto_compression_is_the_densest_that_fits():
    roomy, tight = fleet([{"profile": "rpi4"}, {"profile": "samd21"}], pruning={"compression": "auto"},
                         training={"batch_min": 8})
    assert roomy.config.compression == 1.0
    assert 1 < tight.config.compression < 10
    assert tight.plan.target_bytes <= tight.plan.budget_bytes


def test_infeasible_budget_names_the_device_and_the_bytes():
    with pytest.raises(FogsimError, match=r"fleet\[1\] \(samd21\) cannot train dynhp: budget 2.00 KiB .* needed"):
        fleet([{"profile": "rpi4"}, {"profile": "samd21", "overrides": {"memory_budget": "2KiB"}}])


@pytest.mark.parametrize("entry, message", [
    ({"profile": "esp33"}, "fleet[0].profile: unknown profile 'esp33' (known: esp32-s3"),
    ({"profile": "rpi4", "overrides": {"flops": -1}}, "fleet[0].overrides.flops: Input should be greater than or equal to 1"),
    ({"profile": "rpi4", "overrides": {"ram": 1}}, "fleet[0].overrides.ram: unknown key"),
])
def test_bad_fleet_entries(entry, message):
    with pytest.raises(FogsimError) as error:
        fleet([entry])
    assert message in str(error.value)


def test_a_fleet_entry_may_set_its_own_compression():
    default, strong, auto = fleet([{"profile": "rpi4"}, {"profile": "rpi4", "compression": 20},
                                   {"profile": "samd21", "compression": "auto"}],
                                  pruning={"compression": 4}, training={"batch_min": 8})
    assert default.config.compression == 4.0
    assert strong.config.compression == 20.0
    assert 1 < auto.config.compression < 20 and auto.plan.target_bytes <= auto.plan.budget_bytes


def test_a_bad_entry_compression_names_its_key():
    with pytest.raises(FogsimError, match=r"fleet\[1\]\.compression: must be a number >= 1 or auto, got 0.5"):
        fleet([{"profile": "rpi4"}, {"profile": "rpi4", "compression": 0.5}])
