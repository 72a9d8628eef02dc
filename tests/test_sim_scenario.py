"""Scenario files: defaults, --set, and a one-line error naming the key path for each bad input."""

import pytest

from fogsim.errors import FogsimError
from fogsim.sim.scenario import Scenario, apply_set, load_scenario, parse_scenario, reference, resolved_yaml

FLEET = [{"profile": "samd21", "count": 2}]


def test_every_key_has_a_description_and_a_default_except_the_fleet():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            if name != "fleet" and name != "profile":
                assert not field.is_required(), f"{prefix}{name} has no default"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Scenario.__mro__[1]):
                walk(annotation, f"{prefix}{name}.")
    walk(Scenario)


def test_minimal_scenario_gets_defaults_and_round_trips_through_yaml():
    scenario = parse_scenario({"fleet": FLEET})
    assert scenario.strategy.name == "masked-fedavg"
    assert scenario.data.partition.kind == "iid"
    again = parse_scenario(__import__("yaml").safe_load(resolved_yaml(scenario)))
    assert again == scenario


def test_set_changes_nested_keys_and_list_items():
    scenario = parse_scenario({"fleet": FLEET}, sets=["fleet[0].count=5", "strategy.name=fedavg",
                                                      "pruning.compression=auto", "data.partition.alpha=0.1"])
    assert scenario.fleet[0].count == 5
    assert scenario.strategy.name == "fedavg"
    assert scenario.pruning.compression == "auto"
    assert scenario.data.partition.alpha == 0.1


@pytest.mark.parametrize("assignment", ["rounds", "=3", "fleet[4].count=1"])
def test_bad_set_is_a_one_line_error(assignment):
    with pytest.raises(FogsimError, match="--set"):
        apply_set({"fleet": FLEET}, assignment)


@pytest.mark.parametrize("data, message", [
    ({"fleet": FLEET, "colour": 1}, "colour: unknown key"),
    ({"fleet": FLEET, "pruning": {"methd": "gmp"}}, "pruning.methd: unknown key"),
    ({"fleet": FLEET, "rounds": "many"}, "rounds: Input should be a valid integer"),
    ({"fleet": FLEET, "rounds": 0}, "rounds: Input should be greater than 0"),
    ({"fleet": FLEET, "fraction": 0}, "fraction: Input should be greater than 0"),
    ({"fleet": FLEET, "fraction": 1.5}, "fraction: Input should be less than or equal to 1"),
    ({"fleet": [{"profile": "samd21", "count": 0}]}, "fleet[0].count: Input should be greater than 0"),
    ({"fleet": [{"profile": "samd21"}, {"profile": "rpi4", "count": -1}]}, "fleet[1].count"),
    ({"fleet": []}, "fleet: List should have at least 1 item"),
    ({}, "fleet: required key is missing"),
    ({"fleet": FLEET, "pruning": {"compression": 0.5}}, "pruning.compression: must be a number >= 1 or auto"),
    ({"fleet": FLEET, "strategy": {"name": "fedprox"}}, "strategy.name: Input should be 'masked-fedavg', 'masked-fedavgm'"),
    ({"fleet": FLEET, "data": {"name": "imagenet"}}, "data.name: unknown dataset 'imagenet'"),
    ({"fleet": FLEET, "model": "resnet"}, "model: unknown model 'resnet'"),
    ({"fleet": FLEET, "pruning": {"prune_start": 0.5, "prune_end": 0.2}}, "prune_end (0.2) must not be before"),
    ({"fleet": FLEET, "simulation": {"engine": "local", "address": "10.0.0.5:6379"}},
     "simulation.engine is local (this one process); set simulation.engine: ray"),
    ({"fleet": FLEET, "simulation": {"engine": "spark"}}, "simulation.engine: Input should be 'ray' or 'local'"),
    ([1, 2], "a scenario is a mapping"),
])
def test_bad_values_name_the_key_path(data, message):
    with pytest.raises(FogsimError) as error:
        parse_scenario(data, "s.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("s.yaml: ")
    assert "\n" not in str(error.value)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nfleet:\n  - profile: samd21\n    count: [1, 2\n")
    with pytest.raises(FogsimError, match=r"bad.yaml: invalid YAML at line \d+, column \d+"):
        load_scenario(path)


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(FogsimError, match="cannot read scenario"):
        load_scenario(tmp_path / "nope.yaml")


def test_reference_lists_every_key_with_default_and_meaning():
    rows = {path: (default, meaning) for path, default, meaning in reference()}
    assert rows["rounds"][0] == "5"
    assert rows["data.partition.alpha"][0] == "0.5"
    assert rows["fleet[i].profile"][0] == "required"
    assert rows["pruning.compression"][0] == "10.0" and "auto" in rows["pruning.compression"][1]
    assert all(meaning for meaning in (m for _, m in rows.values()))
