"""One scenario from file to result files: prepare (all checks, no side effects), then run.

``prepare`` does every check a scenario can fail — the file, its keys, the profiles, the
dataset, every device's budget, the split — before anything is written, so a bad scenario
leaves no run directory behind. ``run`` then starts Flower's simulation engine on Ray.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from fogsim.data import Dataset, load_dataset
from fogsim.data_files import IdsError
from fogsim.models import build_model
from fogsim import signals
from fogsim.errors import FogsimError, shown_path
from fogsim.rundir import Claim
from fogsim.sim import checkpoint, draws, provenance
from fogsim.sim.client_app import make_client_app
from fogsim.sim.cluster import init_args, ray_cpus, resolve_address, start_ray, stop_ray
from fogsim.sim.device_state import DeviceStates
from fogsim.sim.fleet import Fleet, build_fleet
from fogsim.sim.fog import build_fog
from fogsim.sim.fog_grid import RunDiverged
from fogsim.sim.outputs import OutputFailed, RunFiles, read_rows, read_run, read_tiers, summarize
from fogsim.sim.partition import partition_indices
from fogsim.sim.scenario import MAX_NODES, Scenario, load_scenario, resolved_yaml
from fogsim.sim.shared import FleetSpec
from fogsim.telemetry import telemetry_off


@dataclass
class Prepared:
    """A scenario checked completely and ready to run."""

    scenario: Scenario
    data: Dataset
    fleet: Fleet
    spec: FleetSpec
    base: Path  # the directory the scenario's profile files are relative to
    resumed: tuple[checkpoint.Checkpoint, DeviceStates] | None = None  # set by prepare_resume
    held: Claim | None = None  # the run directory, held from prepare_resume on
    data_files: list[dict] = field(default_factory=list)  # the user's data files: path, bytes, sha256
    model_files: list[dict] = field(default_factory=list)  # the model builder's source file: path, bytes, sha256

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed by this scenario: its text and its fleet plan."""
        fleet = [[t.profile_name, t.profile.model_dump(), t.plan.as_dict(), t.count] for t in self.fleet.tiers]
        if self.spec.fog is not None:  # the fog nodes' resolved profiles (flat runs: as before fog nodes existed)
            fleet.append([[n.name, n.profile.model_dump()] for n in self.spec.fog.nodes])
        return {"scenario": checkpoint.digest(resolved_yaml(self.scenario)),
                "fleet": checkpoint.digest(json.dumps(fleet, sort_keys=True))}


def prepare(path: str | Path, sets: list[str] = (), base: Path | None = None) -> Prepared:
    """Check the scenario at ``path`` completely; its profile files are relative to ``base``
    (default: the scenario file's directory)."""
    base = Path(path).parent if base is None else base
    scenario = load_scenario(path, sets)
    # what the workers read: the user's data files and model builder named absolutely
    located = model_located(data_located(scenario, base), base)
    d = located.data
    key = ("data.loader" if d.loader is not None else "data.path" if d.path is not None
           else "data.hub" if d.hub is not None else "data.name")
    try:
        data = load_dataset(d.name, root=d.root, download=d.download, seed=scenario.seed, path=d.path,
                            loader=d.loader, hub=d.hub, features=d.features, label=d.label, ids=d.partition.by)
        files = provenance.data_files(d)
    except IdsError as error:
        raise FogsimError(f"data.partition.by: {error}") from None
    except FogsimError as error:
        raise FogsimError(f"{key}: {error}") from None
    except OSError as error:  # a data file that went away or became unreadable after it was read
        raise FogsimError(f"{key}: cannot read the data ({error.strerror or error}); check the file") from None
    fleet = build_fleet(located, base, data.input_shape, data.num_classes)
    models = provenance.model_files(located.model)
    fog = build_fog(scenario, fleet)
    check_resources(scenario)
    partitions = partition_indices(data.train_y.numpy(), d.partition, len(fleet), scenario.seed,
                                   ids=data.ids.get(d.partition.by) if d.partition.by is not None else None)
    return Prepared(scenario, data, fleet, FleetSpec(located, fleet, partitions, fog), base.resolve(),
                    data_files=files, model_files=models)


def model_located(scenario: Scenario, base: Path) -> Scenario:
    """``scenario`` with its model builder's file (``model: file.py:build``) named by an absolute path,
    a relative one taken from ``base`` (the scenario file's folder), as ``data_located`` names the loader."""
    from fogsim.models import builder_of, is_builder

    if not is_builder(scenario.model):
        return scenario
    builder, _ = builder_of(scenario.model)
    located = _absolute(builder, base, "model builder")
    if located == builder:
        return scenario
    model = located if isinstance(scenario.model, str) else scenario.model.model_copy(update={"builder": located})
    return scenario.model_copy(update={"model": model})


def _absolute(function: str, base: Path, what: str = "loader") -> str:
    """``file.py:function`` with the file named absolutely (relative to ``base``); ``package.module:function``
    as it is."""
    from fogsim.data_files import loader_parts

    target, name = loader_parts(function, what)
    return f"{os.path.abspath(os.path.join(base, target))}:{name}" if target.endswith(".py") else function


def data_located(scenario: Scenario, base: Path) -> Scenario:
    """``scenario`` with its data file (``data.path``) and loader file named by absolute paths, relative
    ones taken from ``base`` (the scenario file's folder), as Ray's workers, wherever they run, read them."""
    d, update = scenario.data, {}
    if d.path is not None:
        update["path"] = os.path.abspath(os.path.join(base, d.path))
    if d.loader is not None and _absolute(d.loader, base) != d.loader:
        update["loader"] = _absolute(d.loader, base)
    return scenario.model_copy(update={"data": d.model_copy(update=update)}) if update else scenario


def prepare_resume(out: Path) -> Prepared:
    """The scenario of the interrupted run in ``out``, from its own ``scenario.yaml``, with its newest
    checkpoint read and verified (``Prepared.resumed``) and the directory held (``Prepared.held``),
    so that no other command writes it meanwhile. Nothing in ``out`` is written here."""
    if (checkpoint.latest(out) if out.is_dir() else None) is None:
        raise FogsimError(f"--resume {shown_path(out)}: no checkpoint there (not a run directory fogsim run wrote); "
                          "give the directory of an interrupted run")
    held = Claim.existing(out, "run")  # a run still going on refuses here, before its checkpoint is read
    try:
        found = checkpoint.latest(out)
        if found is None:
            raise FogsimError(f"--resume {shown_path(out)}: its checkpoint went away while being read; try again")
        prepared = prepare(out / "scenario.yaml")  # its profile files are in the run directory (provenance)
        provenance.check_data(out, prepared.data_files)
        provenance.check_model(out, prepared.model_files)
        states = DeviceStates(len(prepared.fleet), prepared.scenario.simulation.state_memory)
        try:
            prepared.resumed = checkpoint.load(found, _expected(prepared, out), states), states
        except BaseException:
            states.close()
            raise
        if prepared.resumed[0].round >= prepared.scenario.rounds:
            states.close()
            raise FogsimError(f"--resume {shown_path(out)}: all {prepared.scenario.rounds} rounds finished already; "
                              "nothing to resume")
    except BaseException:
        held.release(True)  # nothing written, nothing to remove: only unlocked
        raise
    prepared.held = held
    return prepared


def _expected(prepared: Prepared, out: Path) -> checkpoint.Expected:
    """What a checkpoint of the run in ``out`` must hold (``checkpoint.load``)."""
    from fogsim.core.topology import Topology
    import strategies
    from fogsim.sim.server_app import make_strategy

    scenario, data = prepared.scenario, prepared.data
    model = build_model(prepared.spec.scenario.model, data.input_shape, data.num_classes, seed=scenario.seed)
    arrays = {k: (np.dtype(str(v.numpy().dtype)), tuple(v.shape)) for k, v in model.state_dict().items()}
    shapes = {k: shape for k, (_, shape) in arrays.items()}
    masked = sum(int(np.prod(shapes[n], dtype=np.int64)) for n in Topology(model, data.input_shape).prunable)
    try:
        finished = {int(row["round"]) for row in read_rows(out / "rounds.csv")}
    except (OSError, ValueError, KeyError) as error:
        raise FogsimError(f"--resume {shown_path(out)}: its rounds.csv cannot be read ({type(error).__name__}); "
                          "the run cannot be resumed") from None
    flower = logging.getLogger("flwr")
    level = flower.level
    flower.setLevel(logging.CRITICAL)  # building Flower's strategy logs what the run itself reports, if at all
    try:
        strategy = make_strategy(scenario.strategy)
    finally:
        flower.setLevel(level)
    if prepared.spec.fog is not None:
        fog = prepared.spec.fog
        strategy = strategies.Hierarchical(strategy, make_strategy(scenario.strategy, fog_level=True), fog.of, len(fog),
                                fog.cloud_every, scenario.rounds)
    return checkpoint.Expected(prepared.identity(), arrays, len(prepared.fleet), (masked + 7) // 8,
                               scenario.rounds, finished, lambda state: strategy.check_state_arrays(state, shapes))


def check_resources(scenario: Scenario) -> None:
    """Refuse a set-up in which no client could ever run (Flower's engine would wait forever)."""
    sim = scenario.simulation
    if resolve_address(sim.address) is None and sim.client_cpus > sim.num_cpus:
        raise FogsimError(f"simulation.client_cpus ({sim.client_cpus:g}) is more than simulation.num_cpus "
                          f"({sim.num_cpus}): no client could run; lower client_cpus or raise num_cpus")


def backend_config(scenario: Scenario, verbose: bool = False) -> dict:
    return {"client_resources": {"num_cpus": scenario.simulation.client_cpus},
            "init_args": init_args(scenario.simulation, verbose)}


COHORT_DEVICES = 256  # devices in a cohort, at most, when simulation.nodes is not set


def nodes_for(scenario: Scenario, devices: int, cpus: float) -> int:
    """Flower nodes to start: ``simulation.nodes``, or as many as Ray can run side by side on
    ``cpus`` CPUs at ``client_cpus`` each, and more where a round samples more than
    ``COHORT_DEVICES`` per node; never more than a round can sample (each node gets a cohort of
    the round's devices, so a node beyond that would idle).

    A node is a queue of work, not a process: Ray's workers take the cohorts of all nodes as they
    come free. Cohorts of a bounded size let the workers share a round's work evenly and bound a
    reply for a strategy that reads every client (its uploads are held until the reply is sent);
    for the built-in strategies a reply is a few models' worth of sums whatever the cohort's size,
    and each cohort adds a few blocks of sums to a round's traffic, so cohorts are not small.
    """
    sampled = draws.most_sampled(devices, scenario.fraction)
    side_by_side = max(1, int(cpus / scenario.simulation.client_cpus + 1e-9))
    default = max(side_by_side, -(-sampled // COHORT_DEVICES))
    return min(scenario.simulation.nodes or default, sampled, MAX_NODES)


ENGINE_POLL_S = 0.01  # how often Flower's engine looks for the server's messages (Flower: 0.1 s)


class _BriskStop:
    """Flower's stop event, as its engine's message feeder sees it: the same event, waited on for at
    most ``ENGINE_POLL_S`` at a time. The feeder looks for new messages between two waits; with
    Flower's 0.1 s a worker started a round 50-70 ms after the server sent it (speed benchmark)."""

    def __init__(self, event: threading.Event):
        self._event = event

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(ENGINE_POLL_S if timeout is None else min(timeout, ENGINE_POLL_S))


def brisk_engine() -> Callable[[], None]:
    """Let Flower's simulation engine hand the server's messages to the workers every
    ``ENGINE_POLL_S`` (wrapping its feeder's stop event, nothing else); return what undoes it. Where
    this Flower has no such feeder, nothing changes."""
    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError:
        return lambda: None
    feeder = getattr(vce_api, "add_messages_to_queue", None)
    if feeder is None:
        return lambda: None

    def brisk(state, queue, nodes_mapping, f_stop):
        return feeder(state, queue, nodes_mapping, _BriskStop(f_stop))

    vce_api.add_messages_to_queue = brisk
    return lambda: setattr(vce_api, "add_messages_to_queue", feeder)


def quiet_flower(verbose: bool = False) -> None:
    """No telemetry (``fogsim.telemetry``); Flower's own log only when ``verbose``: without it a
    failure Flower logs (a worker that died, with Ray's traceback) is fogsim's one line alone."""
    telemetry_off()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.CRITICAL)


def run(prepared: Prepared, out: Path, on_round: Callable[[dict], None] | None = None,
        verbose: bool = False, on_client: Callable[[int, int, int], None] | None = None,
        resume: bool = False, tracks: list = ()) -> dict:
    """Run the simulation, writing the run directory ``out`` as rounds complete; return the summary.

    After every round a checkpoint is written (``checkpoint``); with ``resume`` the run goes on
    from the newest checkpoint in ``out`` and ends with the files an uninterrupted run writes.
    ``on_client(round, replies, sampled)`` is called as the clients of a round reply.
    ``verbose`` lets Flower's and Ray's own logs through (quiet by default). ``tracks``
    (``tracking.parse_tracks``) also log every round to TensorBoard or MLflow.
    """
    quiet_flower(verbose)
    from flwr.app import Array, ArrayRecord

    from fogsim.plots import plot_run
    from fogsim.sim.server_app import ServerJob, make_server_app
    from fogsim.sim.shared import shared_run

    if resume and prepared.resumed is None:
        raise ValueError("resume needs a scenario prepared by prepare_resume")
    held = (prepared.held or Claim.existing(out, "run")) if resume else Claim(out, "run")
    resumed, states = prepared.resumed if resume else \
        (None, DeviceStates(len(prepared.fleet), prepared.scenario.simulation.state_memory))
    start = time.perf_counter()
    record: dict | None = None
    trackers = None
    try:
        try:
            record = provenance.resumed(out, provenance.command_line()) if resume else \
                provenance.start(prepared.base, provenance.command_line())
            if not resume:  # the run directory keeps the user's profile files, named relative to itself
                copied = provenance.copy_profiles(prepared.scenario.profiles, prepared.base, out)
                if copied:
                    prepared = replace(prepared, scenario=prepared.scenario.model_copy(update={"profiles": copied}),
                                       base=out.resolve())
                # and its loader file; data files are named absolutely, with their size and hash in run.json
                data, files = provenance.copy_data(prepared.spec.scenario.data, prepared.data_files, out)
                if files:
                    record["data"] = files
                if data != prepared.scenario.data:
                    prepared = replace(prepared, scenario=prepared.scenario.model_copy(update={"data": data}))
                # and the model builder's file, in models/, with its size and hash
                model, files = provenance.copy_model(prepared.spec.scenario.model, prepared.model_files, out)
                if files:
                    record["model"] = files
                if model != prepared.scenario.model:
                    prepared = replace(prepared, scenario=prepared.scenario.model_copy(update={"model": model}))
            provenance.write(out, record)
        except OSError as error:
            raise OutputFailed(f"{out}: cannot write the run directory ({error.strerror or error})") from None
        scenario = prepared.scenario
        identity = prepared.identity()
        if resume:
            files = RunFiles.resume(out, resumed.round, fog=scenario.fog is not None)
            first_round = resumed.round + 1
            # np.require keeps a 0-d array 0-d (a batch norm's step count); ascontiguousarray makes it (1,)
            initial = ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in resumed.arrays.items()})
            strategy_state = resumed.strategy
        else:
            files, first_round, initial, strategy_state = RunFiles(
                out, resolved_yaml(scenario), fog=scenario.fog is not None), 1, None, None
        job = ServerJob(prepared.spec, prepared.data, files, 1, states,  # 1 node: the local engine's; Ray's below
                        first_round, initial, checkpoint_meta=identity,
                        strategy_state=strategy_state,
                        on_round=on_round, on_client=on_client, stop=threading.Event())
        if tracks:
            import yaml

            from fogsim.tracking import Trackers

            text = resolved_yaml(scenario)
            trackers = Trackers(tracks, out.name + (" (resumed)" if resume else ""), scenario.name,
                                yaml.safe_load(text), text)
            job.on_record = trackers.round
        local = scenario.simulation.engine == "local"
        forget_stop = signals.on_interrupt(job.stop.set)  # the server leaves its wait at the signal itself
        try:
            if local:
                from fogsim.sim.local import run_local

                run_local(job)
            else:
                from flwr.simulation import run_simulation

                start_ray(scenario.simulation, verbose)
                job.nodes = nodes_for(scenario, len(prepared.fleet), ray_cpus())
                undo = brisk_engine()
                try:
                    run_simulation(server_app=make_server_app(job),
                                   client_app=make_client_app(*shared_run(prepared.spec, prepared.data)),
                                   num_supernodes=job.nodes, backend_config=backend_config(scenario, verbose))
                finally:
                    undo()
        except KeyboardInterrupt:
            raise
        except Exception as error:  # the engine, a worker or the server failed: one line, not a hang
            diverged = _in_chain(error, RunDiverged)  # as the server raised it, or wrapped by Flower's engine
            if diverged is not None:
                raise SimulationFailed(f"{diverged}; {_kept(out)}") from None
            if isinstance(error, FogsimError):
                raise
            raise SimulationFailed(f"the simulation failed: {_reason(error)}; "
                                   f"{_kept(out)}{'' if verbose or local else ' (--verbose shows the engine log)'}") \
                from None
        finally:
            forget_stop()
            job.stop.set()  # the server thread leaves its wait for replies instead of waiting forever
            job.files.close()
            if not local:
                stop_ray()
        rounds, clients = read_run(out)
        if len(rounds) != scenario.rounds:
            raise SimulationFailed(f"the simulation ended after {len(rounds)} of {scenario.rounds} rounds; "
                                   f"{_kept(out)}")
        summary = summarize(scenario.name, rounds, clients, prepared.fleet, time.perf_counter() - start,
                            read_tiers(out))
        job.files.write_summary(summary)
        plot_run(out, scenario.name)
        provenance.write(out, provenance.ended(record, "finished"))
        if trackers is not None:
            trackers.finish(summary)
    except BaseException as error:
        # An interrupt keeps a run that has a checkpoint, round 0's included, so --resume goes on.
        interrupted = isinstance(error, KeyboardInterrupt) and checkpoint.latest(out) is not None
        keep = resume or interrupted or _finished(out) > 0
        if keep and record is not None:
            try:
                provenance.write(out, provenance.ended(record, "interrupted" if interrupted else "failed"))
            except OSError:
                pass  # a full disk: the run's own files say what finished
        if trackers is not None:
            trackers.abandon("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        held.release(False, keep=keep)
        if interrupted:
            signals.kept(f"what finished is kept in {out}; go on with: fogsim run --resume {out}")
        raise
    finally:
        states.close()
    held.release(True)
    return summary


class SimulationFailed(FogsimError):
    """The simulation could not finish; the rounds it finished are kept."""

    exit_code = 1


def _in_chain(error: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``error``'s chain of causes, ``error`` included."""
    while error is not None and not isinstance(error, kind):
        error = error.__cause__ or error.__context__
    return error


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def _reason(error: BaseException) -> str:
    """The innermost cause's first line: Flower wraps what went wrong in its own RuntimeErrors."""
    error = _innermost(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _finished(out: Path) -> int:
    """Rounds a run directory holds (0 when its files are missing or unreadable)."""
    try:
        return len(read_run(out)[0])
    except (OSError, ValueError):
        return 0


def _kept(out: Path) -> str:
    finished = _finished(out)
    if not finished:
        return "no round finished, nothing kept"
    return f"the {finished} finished rounds are in {out}" if finished > 1 else f"the finished round is in {out}"
