"""The fleet: one ``Device`` per simulated node, its profile, its training config and its plan.

Planning happens here, before anything runs: every fleet entry is checked against its budget
with the core's ``plan`` (feasibility, one-shot start density, batch range), and ``auto``
compression is resolved to the densest model the budget allows at the minimum batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from fogsim.core import Plan, TrainConfig, Topology, plan
from fogsim.errors import FogsimError
from fogsim.models import build_model
from fogsim.sim.profiles import Profile, load_profiles
from fogsim.sim.scenario import Scenario
from fogsim.sim.yamlfile import describe

# ``auto`` asks the core for the one-shot density at this compression: the densest that fits.
AUTO_CEILING = 1000.0


@dataclass(frozen=True)
class Device:
    """One simulated device: node ``id`` of the simulation is partition ``id`` of the data."""

    id: int
    entry: int            # index of its fleet entry in the scenario
    profile_name: str
    profile: Profile
    config: TrainConfig
    plan: Plan

    @property
    def label(self) -> str:
        return f"fleet[{self.entry}] ({self.profile_name})"


def scenario_profiles(scenario: Scenario, base: Path) -> dict[str, Profile]:
    """Built-in profiles plus the scenario's profile files (paths relative to the scenario file)."""
    return load_profiles([p if Path(p).is_absolute() else base / p for p in scenario.profiles])


def entry_profile(scenario: Scenario, index: int, profiles: dict[str, Profile]) -> Profile:
    entry = scenario.fleet[index]
    if entry.profile not in profiles:
        raise FogsimError(f"fleet[{index}].profile: unknown profile {entry.profile!r} "
                          f"(known: {', '.join(sorted(profiles))})")
    try:
        return Profile(**{**profiles[entry.profile].model_dump(), **entry.overrides})
    except ValidationError as error:
        raise FogsimError(describe(error, f"fleet[{index}].overrides")) from None


def entry_config(scenario: Scenario, index: int, profile: Profile, model, topology: Topology,
                 num_classes: int) -> tuple[TrainConfig, Plan]:
    """The training config and plan of fleet entry ``index``; raises FogsimError when infeasible."""
    label = f"fleet[{index}] ({scenario.fleet[index].profile})"
    entry = scenario.fleet[index]
    compression = entry.compression if entry.compression is not None else scenario.pruning.compression
    try:
        if compression == "auto":
            config = scenario.train_config(AUTO_CEILING)
            if config.prunes:
                densest = plan(model, topology, config, profile.memory_budget, num_classes, label).start_density
                compression = 1.0 / densest
            else:
                compression = 1.0
        config = scenario.train_config(compression)
    except ValidationError as error:
        raise FogsimError(describe(error, "training")) from None
    return config, plan(model, topology, config, profile.memory_budget, num_classes, label)


def build_fleet(scenario: Scenario, base: Path, input_shape: tuple[int, ...], num_classes: int) -> list[Device]:
    """Every device of the scenario, planned; the first problem found is a one-line FogsimError."""
    profiles = scenario_profiles(scenario, base)
    model = build_model(scenario.model, input_shape, num_classes, seed=scenario.seed)
    topology = Topology(model, input_shape)
    devices: list[Device] = []
    for index, entry in enumerate(scenario.fleet):
        profile = entry_profile(scenario, index, profiles)
        config, device_plan = entry_config(scenario, index, profile, model, topology, num_classes)
        for _ in range(entry.count):
            devices.append(Device(len(devices), index, entry.profile, profile, config, device_plan))
    return devices
