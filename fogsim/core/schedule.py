"""Incremental pruning schedules: the density to reach at a given training progress.

Progress ``t`` is counted in *samples processed*, never in optimizer steps: with dynamic batch
sizing the number of steps per epoch changes as the batch grows, and a step-based window would
silently never reach its target. A schedule is a small object with one job, ``density(t)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from fogsim.core.config import ScheduleShape
from fogsim.errors import FogsimError, shown

SCHEDULES = get_args(ScheduleShape)


@dataclass(frozen=True)
class Schedule:
    """Density falls from ``start`` to ``target`` over the window ``[t0, t1]`` (in samples).

    ``shape`` is ``cubic`` (Zhu & Gupta 2017: ``d* + (d0 - d*)(1 - (t - t0)/(t1 - t0))^3``, prunes
    fast while the network is redundant, slowly near the end), ``linear``, or ``oneshot`` (the
    whole way at ``t0``). Before the window the density is ``start``; from ``t1`` on, ``target``.
    """

    start: float
    target: float
    t0: float
    t1: float
    shape: str = "cubic"

    def __post_init__(self) -> None:
        if self.shape not in SCHEDULES:
            raise FogsimError(f"unknown schedule {shown(self.shape)}: use one of {', '.join(SCHEDULES)}")
        if not 0 < self.target <= self.start <= 1:
            raise FogsimError(f"a schedule needs 0 < target density <= start density <= 1, got "
                              f"start {self.start:g} and target {self.target:g}")
        if not 0 <= self.t0 <= self.t1:
            raise FogsimError(f"the pruning window must satisfy 0 <= start <= end, got [{self.t0:g}, {self.t1:g}]")

    def density(self, t: float) -> float:
        if t >= self.t1 or (self.shape == "oneshot" and t >= self.t0):
            return self.target
        if t <= self.t0:
            return self.start
        left = 1 - (t - self.t0) / (self.t1 - self.t0)
        power = 3 if self.shape == "cubic" else 1
        return self.target + (self.start - self.target) * left**power
