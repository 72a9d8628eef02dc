"""``fogsim sweep``: one scenario run once per value of one key (and per seed), then compared.

The whole sweep is planned before anything runs: every value's scenario is prepared (parsed,
profiles resolved, budgets checked), so a bad key, a bad value or an infeasible budget for any
value fails at once, naming the value, and leaves no directory behind. Then each value runs into
``OUT/<key>=<value>/`` (with ``--seeds``, once per seed into ``OUT/<key>=<value>,seed=<seed>/``)
and the comparison of all of them (``fogsim compare``'s files, with the table by value and
``sweep.png``) is written into ``OUT`` itself. A run that crashes stops the sweep; the runs
already finished are kept.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from fogsim.errors import FogsimError, brief, shown, shown_path
from fogsim.rundir import Claim
from fogsim.sim.scenario import MAX_SEED


class SweepStopped(FogsimError):
    """A run of the sweep failed after others had finished; they are kept."""

    exit_code = 1


MAX_RUN_NAME = 100  # characters of a run directory's name; a longer one is cut and tagged with a hash


@dataclass
class Point:
    """One value (and seed) of the sweep: its prepared scenario and its run directory's name."""

    value: str
    prepared: object
    name: str
    seed: int | None = None


def split_values(text: str) -> list[str]:
    """``"5,10,20"`` -> ``["5", "10", "20"]``; each value is read as YAML, like ``--set``."""
    values = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in values):
        raise FogsimError(f"--values {shown(text)}: give a comma-separated list, e.g. --values 5,10,20")
    return values


def split_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None (no ``--seeds``): each run keeps the scenario's own seed."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(re.fullmatch(r"[0-9]+", p) and int(p) <= MAX_SEED for p in parts):
        raise FogsimError(f"--seeds {shown(text)}: give comma-separated whole numbers from 0 to {MAX_SEED}, "
                          "e.g. --seeds 0,1,2")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        twice = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        raise FogsimError(f"--seeds: {', '.join(twice)} given more than once")
    return seeds


def slug(text: str) -> str:
    """A file-name-safe form: ``fleet[0].overrides.memory_budget`` -> ``fleet0.overrides.memory_budget``."""
    text = re.sub(r"\[(\d+)\]", r"\1", text.strip())
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")


def run_name(key: str, value: str) -> str:
    """``<key>=<value>`` made file-name-safe; one longer than ``MAX_RUN_NAME`` is cut and ends in a hash of
    the whole, so that values differing only at their ends keep their own directories."""
    name = f"{slug(key)}={slug(value) or 'empty'}"
    if len(name) <= MAX_RUN_NAME:
        return name
    tag = hashlib.sha256(f"{key}={value}".encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{name[:MAX_RUN_NAME - len(tag) - 1].rstrip('-.')}-{tag}"


def _listed(values: list[str], limit: int = 5) -> str:
    """A few values for a message, each cut short, then how many more."""
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(brief(v) for v in values[:limit]) + more


def _setting(key: str, value: str, seed: int | None = None) -> str:
    """``key=value`` (and the seed) for a message, cut short."""
    return brief(f"{key}={value}", 80) + (f" seed={seed}" if seed is not None else "")


def plan(scenario: Path, key: str, values: list[str], sets: list[str] = (),
         seeds: list[int] | None = None) -> list[Point]:
    """Prepare every value's scenario, once per seed of ``seeds`` (None: the scenario's own seed); the
    sweep's value and seed win over a ``--set`` of the same key."""
    from fogsim.sim.run import prepare

    key = key.strip()
    if not key or "=" in key:
        raise FogsimError(f"--key {shown(key)}: give one scenario key, e.g. pruning.compression or "
                          "fleet[0].overrides.memory_budget")
    if not values:
        raise FogsimError("--values: give at least one value")
    if len(set(values)) != len(values):
        twice = sorted(v for v, n in Counter(values).items() if n > 1)
        raise FogsimError(f"--values: {_listed(twice)} given more than once")
    if seeds is not None and key == "seed":
        raise FogsimError("--key seed with --seeds: give the seeds once, with --seeds")
    points, names = [], {}
    for value in values:
        name = run_name(key, value)
        if name in names:
            raise FogsimError(f"--values: {shown(names[name])} and {shown(value)} would share the run directory "
                              f"{brief(name)}")
        names[name] = value
        for seed in seeds if seeds is not None else [None]:
            given = [f"seed={seed}"] if seed is not None else []
            try:
                prepared = prepare(scenario, [*sets, f"{key}={value}", *given])
            except FogsimError as error:
                raise FogsimError(f"sweep value {_setting(key, value)}: {error}") from None
            points.append(Point(value, prepared, name if seed is None else f"{name},seed={seed}", seed))
    return points


def _holds_runs(out: Path) -> bool:
    """Whether the sweep directory holds a run (finished, or interrupted with its checkpoint)."""
    return out.is_dir() and any(p.is_dir() for p in out.iterdir())


def sweep(points: list[Point], out: Path, key: str,
          on_start: Callable[[int, Point], None] | None = None,
          on_round: Callable[[dict], None] | None = None, verbose: bool = False,
          on_client: Callable[[int, int, int], None] | None = None, tracks: list = ()) -> pd.DataFrame:
    """Run every point into ``out/<name>`` in order, then write the comparison into ``out``; ``tracks``:
    each run is logged to the trackers as its own run, named as its directory."""
    from fogsim.sim.compare import load_run, name_runs, write_comparison
    from fogsim.sim.run import run

    held = Claim(out, "sweep")
    try:
        finished = []
        for index, point in enumerate(points):
            if on_start:
                on_start(index, point)
            try:
                run(point.prepared, out / point.name, on_round, verbose,
                    **({"on_client": on_client} if on_client else {}), **({"tracks": tracks} if tracks else {}))
            except Exception as error:  # an interrupt ends the sweep too; the runs are kept either way
                reason = brief(str(error).splitlines()[0], 300) if str(error).strip() else type(error).__name__
                if not _holds_runs(out):  # the sweep directory goes, so a rerun finds the place free
                    reason = reason.removesuffix("; no round finished, nothing kept")
                    raise SweepStopped(f"sweep stopped at {_setting(key, point.value, point.seed)}: {reason}; no run "
                                       "finished, nothing kept") from None
                done = _listed([p.name for p in finished]) if finished else "none"
                raise SweepStopped(f"sweep stopped at {_setting(key, point.value, point.seed)}: {reason}; finished runs kept "
                                   f"in {shown_path(out)}: {done}") from None
            finished.append(point)
        runs = [load_run(out / p.name) for p in points]
        name_runs(runs)
        frame = write_comparison(runs, out)
    except BaseException:
        # Kept where a run is inside (finished, or interrupted with its checkpoint); else removed.
        held.release(False, keep=_holds_runs(out))
        raise
    held.release(True)
    return frame
