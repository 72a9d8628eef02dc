"""The fleet description and the dataset, sent to each Ray worker process once instead of with every message.

Flower's simulation engine pickles the ClientApp, closure included, with every message it
sends to a worker. A ClientApp that closed over the fleet description would ship the whole of
it (the scenario, every tier's plan, the split) each time. ``SharedSpec`` puts the description
in Ray's object store once, in the driver, and closes over only the reference: a worker fetches
the object the first time it needs it and keeps it for the rest of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogsim.sim.fleet import Fleet
from fogsim.sim.fog import FogLayer
from fogsim.sim.partition import Partitions
from fogsim.sim.scenario import Scenario


@dataclass(frozen=True)
class FleetSpec:
    """What every worker needs to know, sent to each once: the scenario, its fleet, the split and
    the fog nodes (None without a fog layer). Built by set-up (``run.prepare``)."""

    scenario: Scenario
    fleet: Fleet
    partitions: Partitions
    fog: FogLayer | None = None

    def link_profile(self, device: int):
        """The profile whose links time the device's transfers: its own, capped by its fog node's local link."""
        return self.fog.device_profile(device) if self.fog is not None else self.fleet[device].profile


_fetched: dict[str, Any] = {}  # per worker process: object id -> the object, for the current run


class SharedSpec:
    """A callable that returns the object ``ray.put`` stored; call it in the driver with Ray started."""

    def __init__(self, value: Any):
        import ray

        self.ref = ray.put(value)

    def __call__(self) -> Any:
        key = self.ref.hex()
        if key not in _fetched:
            import ray

            _fetched.clear()  # a worker serves one run; an older run's fleet is not needed again
            _fetched[key] = ray.get(self.ref)
        return _fetched[key]


@dataclass(frozen=True)
class SharedPart:
    """One item of the tuple a ``SharedSpec`` holds: a callable returning ``whole()[index]``."""

    whole: SharedSpec
    index: int

    def __call__(self) -> Any:
        return self.whole()[self.index]


def shared_run(spec: FleetSpec, data: Any) -> tuple[SharedPart, SharedPart]:
    """``make_client_app``'s ``spec`` and ``data``, put in Ray's object store together, once. The dataset's
    arrays (``Dataset.__reduce__``) are then shared by the workers of a machine, not copied into each, and
    a worker neither reads the data files nor calls the scenario's data loader again."""
    both = SharedSpec((spec, data))
    return SharedPart(both, 0), SharedPart(both, 1)
