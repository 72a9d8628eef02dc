"""The fleet description, sent to each Ray worker process once instead of with every message.

Flower's simulation engine pickles the ClientApp, closure included, with every message it
sends to a worker. A ClientApp that closed over the fleet description would ship the whole of
it (the scenario, every tier's plan, the split) each time. ``SharedSpec`` puts the description
in Ray's object store once, in the driver, and closes over only the reference: a worker fetches
the object the first time it needs it and keeps it for the rest of the run.
"""

from __future__ import annotations

from typing import Any

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
