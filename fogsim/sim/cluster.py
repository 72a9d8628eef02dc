"""Where the simulation runs: Ray started on this machine, or an existing Ray cluster.

fogsim starts (or attaches to) Ray itself, before Flower's simulation engine, so that the
fleet description can be put in Ray's object store once (``shared.SharedSpec``); the engine
then finds Ray running and uses it as it is.

``simulation.address: auto`` is resolved here, explicitly: to the cluster the ``RAY_ADDRESS``
environment variable names, or refused. Ray's own ``auto`` would attach to whatever cluster
it finds on the machine, which on a shared host may be another user's.
"""

from __future__ import annotations

import os
import sys

from fogsim.errors import FogsimError
from fogsim.sim.scenario import Simulation


def resolve_address(address: str | None) -> str | None:
    """The cluster address to attach to, ``None`` to start Ray here; ``auto`` means ``RAY_ADDRESS``."""
    if address != "auto":
        return address
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if not named or named == "auto":
        raise FogsimError("simulation.address: auto needs the RAY_ADDRESS environment variable to name the cluster "
                          "(e.g. RAY_ADDRESS=10.0.0.5:6379); or write that address in simulation.address")
    return named


def init_args(simulation: Simulation, verbose: bool = False) -> dict:
    """``ray.init`` arguments for ``simulation`` (Flower's backend config ``init_args``)."""
    init = {"logging_level": "INFO" if verbose else "ERROR", "log_to_driver": verbose}
    address = resolve_address(simulation.address)
    init.update({"address": address} if address else {"num_cpus": simulation.num_cpus})
    return init


def start_ray(simulation: Simulation, verbose: bool = False) -> None:
    """Start Ray on this machine or attach to the cluster ``simulation.address`` names.

    Workers import fogsim from the same paths as this process (as Flower's own Ray start
    does); on a cluster of several machines those paths must hold the code on every node.
    """
    import ray

    pythonpath = os.pathsep.join(p for p in [*sys.path, os.environ.get("PYTHONPATH", "")] if p)
    try:
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, include_dashboard=False,
                 **init_args(simulation, verbose))
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = simulation.address or "this machine"
        raise FogsimError(f"simulation.address: cannot start or reach Ray at {where}: "
                          f"{' '.join(str(error).split())}") from None


def stop_ray() -> None:
    import ray

    ray.shutdown()
