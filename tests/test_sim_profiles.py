"""Device profiles: the built-in library, user files, and what a bad profile says."""

import pytest
import yaml

from fogsim.errors import FogsimError
from fogsim.sim.profiles import load_library, load_profiles, parse_profiles


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
    ({"memory_budget": "1KiB", "flops": 0, "uplink": 1, "downlink": 1}, "board.flops: Input should be greater than or equal to 1"),
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


def write_profiles(tmp_path, text, name="mine.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_derived_profile_changes_only_its_fields(tmp_path):
    path = write_profiles(tmp_path, "samd21-256k:\n  base: samd21\n  memory_budget: 256KiB\n")
    library = load_library([path])
    derived, builtin = library["samd21-256k"], library["samd21"]
    assert derived.profile.memory_budget == 256 * 1024
    assert derived.profile.model_dump(exclude={"memory_budget"}) == builtin.profile.model_dump(exclude={"memory_budget"})
    assert derived.source == str(path) and builtin.source.endswith("builtin.yaml")
    assert [e.name for e in derived.chain] == ["samd21"] and builtin.chain == ()
    assert derived.set_by("memory_budget") is derived and derived.set_by("flops") is builtin


def test_chain_inside_one_file_in_any_order(tmp_path):
    path = write_profiles(tmp_path, "a:\n  base: b\n  uplink: 1e6\nb:\n  base: samd21\n  memory_budget: 64KiB\n"
                                    "  description: more RAM\n")
    library = load_library([path])
    a = library["a"]
    assert (a.profile.uplink, a.profile.memory_budget, a.profile.flops) == (1e6, 64 * 1024, 2e6)
    assert a.profile.description == "more RAM"
    assert [(e.name, e.source) for e in a.chain] == [("b", str(path)), ("samd21", library["samd21"].source)]


def test_base_from_an_earlier_file_and_a_later_redefinition(tmp_path):
    first = write_profiles(tmp_path, "board:\n  memory_budget: 1MiB\n  flops: 1e8\n  uplink: 1e6\n  downlink: 1e6\n",
                           "first.yaml")
    second = write_profiles(tmp_path, "small-board:\n  base: board\n  memory_budget: 512KiB\n", "second.yaml")
    library = load_library([first, second])
    assert library["small-board"].profile.flops == 1e8
    assert library["small-board"].chain[0].source == str(first)
    assert "description" not in first.read_text() and library["board"].profile.description == ""


def test_a_profile_may_change_a_builtin_in_place(tmp_path):
    path = write_profiles(tmp_path, "samd21:\n  base: samd21\n  memory_budget: 28KiB\n"
                                    "derived:\n  base: samd21\n  flops: 4e6\n")
    library = load_library([path])
    assert library["samd21"].profile.memory_budget == 28 * 1024
    assert library["samd21"].chain[0].source.endswith("builtin.yaml")
    assert library["samd21"].profile.availability == 0.7
    # a sibling deriving from samd21 gets the changed one from the same file
    assert library["derived"].profile.memory_budget == 28 * 1024


@pytest.mark.parametrize("text, message", [
    ("a:\n  base: b\nb:\n  base: a\n", "b.base: profiles derive from each other in a cycle: a -> b -> a"),
    ("a:\n  base: b\nb:\n  base: c\nc:\n  base: a\n", "c.base: profiles derive from each other in a cycle: a -> b -> c -> a"),
    ("a:\n  base: a\n", "a.base: a profile derives from itself only to change an earlier file's 'a'"),
    ("a:\n  base: esp33\n", "a.base: unknown profile 'esp33' (known: esp32-s3, "),
    ("a:\n  base: [samd21]\n", "a.base: the name of a profile to derive from, got a list"),
    ("a:\n  base: samd21\n  flops: 0\n", "a.flops: Input should be greater than or equal to 1"),
    ("a:\n  base: samd21\n  ram: 3\n", "a.ram: unknown key"),
    ("a:\n  base: b\nb:\n  base: samd21\n  memory_budget: 12XB\n", "b.memory_budget: invalid memory budget"),
])
def test_bad_base_is_one_line_with_file_and_key(tmp_path, text, message):
    path = write_profiles(tmp_path, text)
    with pytest.raises(FogsimError) as error:
        load_library([path])
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_parse_profiles_resolves_bases_against_the_builtins():
    loaded = parse_profiles({"big": {"base": "rpi4", "memory_budget": "2GiB"}}, "README")
    assert loaded["big"].memory_budget == 2 * 1024**3 and loaded["big"].flops == 1e10


def test_scenario_with_a_derived_profile_prepares(tmp_path):
    from fogsim.sim.run import prepare

    write_profiles(tmp_path, "samd21-256k:\n  base: samd21\n  memory_budget: 256KiB\n", "fleet-profiles.yaml")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "t", "data": {"name": "digits"}, "model": "mlp-small", "rounds": 1, "training": {"batch_min": 8},
        "profiles": ["fleet-profiles.yaml"], "fleet": [{"profile": "samd21-256k", "count": 2}]}))
    prepared = prepare(scenario)
    assert len(prepared.fleet) == 2
    assert all(d.profile.memory_budget == 256 * 1024 and d.profile.flops == 2e6 for d in prepared.fleet)
    assert prepared.fleet[0].plan.budget_bytes == 256 * 1024
