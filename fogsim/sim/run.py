"""One scenario from file to result files: prepare (all checks, no side effects), then run.

``prepare`` does every check a scenario can fail — the file, its keys, the profiles, the
dataset, every device's budget, the split — before anything is written, so a bad scenario
leaves no run directory behind. ``run`` then starts Flower's simulation engine on Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fogsim.data import Dataset, load_dataset
from fogsim.errors import FogsimError
from fogsim.sim import fog
from fogsim.sim.client_app import FleetSpec, make_client_app
from fogsim.sim.cluster import init_args, resolve_address, start_ray, stop_ray
from fogsim.sim.fleet import Fleet, build_fleet
from fogsim.sim.outputs import RunFiles, read_run, summarize
from fogsim.sim.partition import partition_indices
from fogsim.rundir import Claim
from fogsim.sim.scenario import Scenario, load_scenario, resolved_yaml


@dataclass
class Prepared:
    """A scenario checked completely and ready to run."""

    scenario: Scenario
    data: Dataset
    fleet: Fleet
    spec: FleetSpec


def prepare(path: str | Path, sets: list[str] = ()) -> Prepared:
    scenario = load_scenario(path, sets)
    d = scenario.data
    try:
        data = load_dataset(d.name, root=d.root, download=d.download, seed=scenario.seed)
    except FogsimError as error:
        raise FogsimError(f"data.name: {error}") from None
    fleet = build_fleet(scenario, Path(path).parent, data.input_shape, data.num_classes)
    check_resources(scenario)
    partitions = partition_indices(data.train_y.numpy(), d.partition, len(fleet), scenario.seed)
    return Prepared(scenario, data, fleet, FleetSpec(scenario, fleet, partitions))


def check_resources(scenario: Scenario) -> None:
    """Refuse a set-up in which no client could ever run (Flower's engine would wait forever)."""
    sim = scenario.simulation
    if resolve_address(sim.address) is None and sim.client_cpus > sim.num_cpus:
        raise FogsimError(f"simulation.client_cpus ({sim.client_cpus:g}) is more than simulation.num_cpus "
                          f"({sim.num_cpus}): no client could run; lower client_cpus or raise num_cpus")


def backend_config(scenario: Scenario, verbose: bool = False) -> dict:
    return {"client_resources": {"num_cpus": scenario.simulation.client_cpus},
            "init_args": init_args(scenario.simulation, verbose)}


def nodes_for(scenario: Scenario, devices: int) -> int:
    """Flower nodes to start: ``simulation.nodes``, or one per device a round can sample."""
    return scenario.simulation.nodes or fog.most_sampled(devices, scenario.fraction)


def quiet_flower(verbose: bool = False) -> None:
    """No telemetry (no machine fogsim runs on may phone home); Flower's own log only when ``verbose``."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.supercore import telemetry

    telemetry.FLWR_TELEMETRY_ENABLED = "0"
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.ERROR)


def files_kept(out: Path) -> bool:
    """Whether a failed run finished a round: then its directory is kept, else it is removed."""
    try:
        return len(read_run(out)[0]) > 0
    except (OSError, ValueError):
        return False


def run(prepared: Prepared, out: Path, on_round: Callable[[dict], None] | None = None,
        verbose: bool = False, on_client: Callable[[int, int, int], None] | None = None) -> dict:
    """Run the simulation, writing the run directory ``out`` as rounds complete; return the summary.

    ``on_client(round, replies, sampled)`` is called as the clients of a round reply.
    ``verbose`` lets Flower's and Ray's own logs through (quiet by default).
    """
    quiet_flower(verbose)
    from flwr.simulation import run_simulation

    from fogsim.sim.plots import plot_run
    from fogsim.sim.server_app import make_server_app
    from fogsim.sim.shared import SharedSpec

    scenario = prepared.scenario
    nodes = nodes_for(scenario, len(prepared.fleet))
    held = Claim(out, "run")
    start = time.perf_counter()
    try:
        files = RunFiles(out, resolved_yaml(scenario))
        stop = threading.Event()
        try:
            start_ray(scenario.simulation, verbose)
            server = make_server_app(prepared.spec, prepared.data, files, nodes, scenario.simulation.state_memory,
                                     on_round, on_client, stop)
            run_simulation(server_app=server, client_app=make_client_app(SharedSpec(prepared.spec)),
                           num_supernodes=nodes, backend_config=backend_config(scenario, verbose))
        except (FogsimError, KeyboardInterrupt):
            raise
        except Exception as error:  # the engine, a worker or the server failed: one line, not a hang
            raise SimulationFailed(f"the simulation failed: {_reason(error)}; "
                                   f"{_kept(out)}{'' if verbose else ' (--verbose shows the engine log)'}") from None
        finally:
            stop.set()  # the server thread leaves its wait for replies instead of waiting forever
            files.close()
            stop_ray()
        rounds, clients = read_run(out)
        if len(rounds) != scenario.rounds:
            raise SimulationFailed(f"the simulation ended after {len(rounds)} of {scenario.rounds} rounds; "
                                   f"{_kept(out)}")
        summary = summarize(scenario.name, rounds, clients, prepared.fleet, time.perf_counter() - start)
        files.write_summary(summary)
        plot_run(out)
    except BaseException:
        held.release(False, keep=files_kept(out))
        raise
    held.release(True)
    return summary


class SimulationFailed(FogsimError):
    """The simulation could not finish; the rounds it finished are kept."""

    exit_code = 1


def _reason(error: BaseException) -> str:
    """The innermost cause's first line: Flower wraps what went wrong in its own RuntimeErrors."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _kept(out: Path) -> str:
    finished = len(read_run(out)[0]) if files_kept(out) else 0
    return f"the {finished} finished rounds are in {out}" if finished else "no round finished, nothing kept"
