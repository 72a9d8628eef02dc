"""Device profiles: the built-in library, user files, and what a bad profile says."""

import pytest

from fogsim.errors import FogsimError
from fogsim.sim.profiles import load_profiles, parse_profiles


def test_builtin_library_spans_microcontrollers_to_boards():
    profiles = load_profiles()
    assert {"samd21", "nrf52840", "esp32-s3", "rpi-zero-2w", "rpi4", "jetson-nano"} <= set(profiles)
    assert profiles["samd21"].memory_budget == 24 * 1024
    budgets = [p.memory_budget for p in profiles.values()]
    assert min(budgets) < 64 * 1024 < 1024**3 <= max(budgets)
    for p in profiles.values():
        assert 0 < p.availability <= 1 and 0 <= p.failure_rate < 1


def test_user_file_adds_and_replaces_profiles(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("my-board:\n  memory_budget: 96KiB\n  flops: 1e8\n  uplink: 1e6\n  downlink: 1e6\n"
                    "samd21:\n  memory_budget: 30KiB\n  flops: 2e6\n  uplink: 2.5e5\n  downlink: 2.5e5\n")
    profiles = load_profiles([path])
    assert profiles["my-board"].memory_budget == 96 * 1024
    assert profiles["my-board"].availability == 1.0
    assert profiles["samd21"].memory_budget == 30 * 1024


@pytest.mark.parametrize("fields, message", [
    ({"memory_budget": "12XB", "flops": 1, "uplink": 1, "downlink": 1}, "board.memory_budget: invalid memory budget"),
    ({"memory_budget": "1KiB", "flops": 0, "uplink": 1, "downlink": 1}, "board.flops: Input should be greater than 0"),
    ({"memory_budget": "1KiB", "flops": 1, "uplink": 1, "downlink": 1, "availability": 0}, "board.availability"),
    ({"memory_budget": "1KiB", "flops": 1, "uplink": 1, "downlink": 1, "failure_rate": 1}, "board.failure_rate"),
    ({"flops": 1, "uplink": 1, "downlink": 1}, "board.memory_budget: required key is missing"),
    ({"memory_budget": "1KiB", "flops": 1, "uplink": 1, "downlink": 1, "ram": 3}, "board.ram: unknown key"),
])
def test_bad_profile_names_file_and_key(fields, message):
    with pytest.raises(FogsimError) as error:
        parse_profiles({"board": fields}, "mine.yaml")
    assert str(error.value).startswith("mine.yaml: ")
    assert message in str(error.value)
