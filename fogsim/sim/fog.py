"""The fog layer's topology: which fog node every device reaches the cloud through, and the nodes' links.

A scenario's optional ``fog`` section lists fog nodes, each with a fog-node profile (built-in ones
in ``fogsim/profiles/fog/``: compute, wide-area ``uplink``/``downlink`` to the cloud, and the
``local_uplink``/``local_downlink`` its devices use). A fleet entry names its node under
``fleet[i].fog``; the devices of entries that name none are placed by ``fog.assign``. Like the
fleet, the topology stores nothing per device: a device's node follows from its tier.

A device talks to its fog node over the local link, so its transfers run at the slower of its
own radio and the node's local link (``device_profile``); the devices sharing a node's link do
not slow each other down (contention is not modelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydantic import ConfigDict, Field, ValidationError

from fogsim.core.config import NumbersAreNotBooleans
from fogsim.errors import FogsimError, describe, shown
from fogsim.sim.fleet import Fleet
from fogsim.sim.profiles import BUILTIN_DIR, Profile
from fogsim.sim.safe_yaml import read_yaml
from fogsim.sim.scenario import Scenario, fog_device_counts, fog_placement

FOG_PROFILE_DIR = BUILTIN_DIR / "fog"


class FogProfile(NumbersAreNotBooleans):
    """One class of fog node."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = Field("", max_length=1000, description="what the node is")
    flops: float = Field(ge=1, description="sustained compute speed of the node, FLOP/s (its aggregation)")
    uplink: float = Field(ge=1, description="wide-area upload bandwidth to the cloud, bit/s")
    downlink: float = Field(ge=1, description="wide-area download bandwidth from the cloud, bit/s")
    local_uplink: float = Field(ge=1, description="local link, device to node, bit/s per device")
    local_downlink: float = Field(ge=1, description="local link, node to device, bit/s per device")


@lru_cache(maxsize=1)
def builtin_fog_profiles() -> dict[str, FogProfile]:
    """The fog-node profiles shipped in ``fogsim/profiles/fog/*.yaml``."""
    profiles = {}
    for path in sorted(FOG_PROFILE_DIR.glob("*.yaml")):
        for name, fields in (read_yaml(path, "fog profile file") or {}).items():
            try:
                profiles[name] = FogProfile(**fields)
            except (TypeError, ValidationError) as error:  # a shipped file: a bug, but say where
                detail = describe(error, name) if isinstance(error, ValidationError) else str(error)
                raise FogsimError(f"{path}: {detail}") from None
    return profiles


@dataclass(frozen=True)
class FogNodeInfo:
    """One fog node of a scenario, resolved."""

    index: int
    name: str
    profile_name: str
    profile: FogProfile


class FogLayer:
    """The fog nodes of a scenario and the node of every device.

    ``of(devices)`` maps device ids to node indices (positions in ``nodes``). Which rounds end
    with an aggregation at the cloud is ``strategies.Hierarchical.cloud_round``'s to say.
    """

    def __init__(self, nodes: list[FogNodeInfo], cloud_every: int, fleet: Fleet,
                 placement: list[tuple[int | None, int]], devices: list[int], evaluate: bool = True,
                 sync_through: int = 0):
        self.nodes = nodes
        self.devices = devices  # how many devices each node serves
        self.sync_through = sync_through  # every round through this one ends at the cloud (fog.sync_while_pruning)
        self.evaluate = evaluate  # each node's aggregate on the test set every round (fog.evaluate)
        self.cloud_every = cloud_every
        self.fleet = fleet
        self._placement = placement  # per tier (= fleet entry): scenario.fog_placement
        self._firsts = np.array([t.first for t in fleet.tiers], dtype=np.int64)
        self._capped: dict[tuple[int, int], Profile] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def of(self, devices) -> np.ndarray:
        """The fog node (index into ``nodes``) of each device id in ``devices``."""
        devices = np.asarray(devices, dtype=np.int64)
        tiers = np.searchsorted(self._firsts, devices, side="right") - 1
        out = np.empty(len(devices), dtype=np.int64)
        for t in np.unique(tiers):
            here = tiers == t
            node, offset = self._placement[t]
            out[here] = node if node is not None else (offset + devices[here] - self._firsts[t]) % len(self.nodes)
        return out

    def nodes_of_tier(self, index: int) -> list[int]:
        """The fog nodes that devices of the fleet's ``index``-th tier belong to."""
        node, offset = self._placement[index]
        if node is not None:
            return [node]
        count = min(self.fleet.tiers[index].count, len(self.nodes))
        return sorted({(offset + i) % len(self.nodes) for i in range(count)})

    def node_of(self, device: int) -> int:
        return int(self.of([device])[0])

    def device_profile(self, device: int) -> Profile:
        """The device's profile with its links capped by its fog node's local link."""
        tier = self.fleet.tier_of(device)
        node = self.node_of(device)
        key = (tier.entry, node)
        if key not in self._capped:
            fog = self.nodes[node].profile
            self._capped[key] = tier.profile.model_copy(update={
                "uplink": min(tier.profile.uplink, fog.local_uplink),
                "downlink": min(tier.profile.downlink, fog.local_downlink)})
        return self._capped[key]


def node_profile(scenario: Scenario, index: int) -> tuple[str, FogProfile]:
    node = scenario.fog.nodes[index]
    known = builtin_fog_profiles()
    if node.profile not in known:
        raise FogsimError(f"fog.nodes[{index}].profile: unknown fog-node profile {shown(node.profile)} "
                          f"(known: {', '.join(sorted(known))})")
    try:
        return node.profile, FogProfile(**{**known[node.profile].model_dump(), **node.overrides})
    except ValidationError as error:
        raise FogsimError(describe(error, f"fog.nodes[{index}].overrides", model=FogProfile)) from None


def build_fog(scenario: Scenario, fleet: Fleet) -> FogLayer | None:
    """The scenario's fog layer (None without a ``fog`` section); problems are one-line FogsimErrors.

    The scenario's validation has checked the names and that every node serves a device."""
    if scenario.fog is None:
        return None
    nodes = [FogNodeInfo(j, node.name, *node_profile(scenario, j)) for j, node in enumerate(scenario.fog.nodes)]
    return FogLayer(nodes, scenario.fog.cloud_every, fleet, fog_placement(scenario), fog_device_counts(scenario),
                    scenario.fog.evaluate, pruning_rounds(scenario) if scenario.fog.sync_while_pruning else 0)


def pruning_rounds(scenario: Scenario) -> int:
    """The last round whose end a device's next pruning step still follows: devices prune at the
    start of the rounds their schedule's window covers (``pruning.prune_end`` of the rounds)."""
    if scenario.pruning.method == "dense":
        return 0
    return math.ceil(scenario.pruning.prune_end * scenario.rounds)
