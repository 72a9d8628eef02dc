"""The fleet: its tiers (one per fleet entry: profile, training config, plan) and the devices in them.

Planning happens here, before anything runs: every fleet entry is checked against its budget
with the core's ``plan`` (feasibility, one-shot start density, batch range), and ``auto``
compression is resolved to the densest model the budget allows at the minimum batch. A plan is
computed once per distinct (profile, target compression), however many entries or devices share it.

A fleet of 100,000 devices is held as its tiers plus where each tier's devices start: devices
of one entry are numbered consecutively, in fleet order, so nothing is stored per device.
``fleet[i]`` gives a light ``Device`` view when one is needed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from fogsim.core import Plan, TrainConfig, Topology, plan
from fogsim.errors import FogsimError, describe, did_you_mean, shown
from fogsim.models import build_model
from fogsim.sim.profiles import Profile, known_names, load_profiles
from fogsim.sim.scenario import Scenario

# ``auto`` asks the core for the one-shot density at this compression: the densest that fits.
AUTO_CEILING = 1000.0


@dataclass(frozen=True)
class Tier:
    """One fleet entry, planned: ``count`` devices sharing a profile, a training config and a plan."""

    entry: int            # index of its fleet entry in the scenario
    profile_name: str
    profile: Profile
    config: TrainConfig
    plan: Plan
    first: int            # id of its first device
    count: int

    @property
    def label(self) -> str:
        return f"fleet[{self.entry}] ({self.profile_name})"

    @property
    def ids(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(frozen=True)
class Device:
    """One simulated device: device ``id`` trains on partition ``id`` of the data."""

    id: int
    tier: Tier

    entry = property(lambda self: self.tier.entry)
    profile_name = property(lambda self: self.tier.profile_name)
    profile = property(lambda self: self.tier.profile)
    config = property(lambda self: self.tier.config)
    plan = property(lambda self: self.tier.plan)
    label = property(lambda self: self.tier.label)


class Fleet:
    """Every device of a scenario, as tiers; a sequence of ``Device`` views."""

    def __init__(self, tiers: list[Tier]):
        self.tiers = tiers
        self._firsts = [t.first for t in tiers]

    def __len__(self) -> int:
        return self.tiers[-1].first + self.tiers[-1].count if self.tiers else 0

    def __getitem__(self, device: int) -> Device:
        if not 0 <= device < len(self):
            raise IndexError(f"device {device} is not in a fleet of {len(self)}")
        return Device(device, self.tier_of(device))

    def __iter__(self):
        return (Device(i, tier) for tier in self.tiers for i in tier.ids)

    def tier_of(self, device: int) -> Tier:
        return self.tiers[bisect.bisect_right(self._firsts, device) - 1]

    def per_device(self, values: list) -> np.ndarray:
        """One value per tier spread over its devices, e.g. every device's availability."""
        return np.repeat(np.asarray(values), [t.count for t in self.tiers])


def scenario_profiles(scenario: Scenario, base: Path) -> dict[str, Profile]:
    """Built-in profiles plus the scenario's profile files (paths relative to the scenario file)."""
    return load_profiles([p if Path(p).is_absolute() else base / p for p in scenario.profiles])


def entry_profile(scenario: Scenario, index: int, profiles: dict[str, Profile]) -> Profile:
    entry = scenario.fleet[index]
    if entry.profile not in profiles:
        raise FogsimError(f"fleet[{index}].profile: unknown profile {shown(entry.profile)} "
                          f"(known: {known_names(profiles)}){did_you_mean(entry.profile, profiles)}")
    try:
        return Profile(**{**profiles[entry.profile].model_dump(), **entry.overrides})
    except ValidationError as error:
        raise FogsimError(describe(error, f"fleet[{index}].overrides", model=Profile)) from None


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


def build_fleet(scenario: Scenario, base: Path, input_shape: tuple[int, ...], num_classes: int) -> Fleet:
    """Every device of the scenario, planned; the first problem found is a one-line FogsimError."""
    profiles = scenario_profiles(scenario, base)
    model = build_model(scenario.model, input_shape, num_classes, seed=scenario.seed)
    topology = Topology(model, input_shape)
    refusal = topology.structured_refusal()
    if refusal is not None and scenario.pruning.granularity == "structured" and scenario.pruning.method != "dense":
        raise FogsimError(f"pruning.granularity: {refusal}")
    planned: dict[tuple, tuple[TrainConfig, Plan]] = {}
    tiers: list[Tier] = []
    first = 0
    for index, entry in enumerate(scenario.fleet):
        profile = entry_profile(scenario, index, profiles)
        key = (profile, entry.compression)
        if key not in planned:
            planned[key] = entry_config(scenario, index, profile, model, topology, num_classes)
        config, device_plan = planned[key]
        tiers.append(Tier(index, entry.profile, profile, config, device_plan, first, entry.count))
        first += entry.count
    return Fleet(tiers)
