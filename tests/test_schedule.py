import pytest

from fogsim.core.schedule import Schedule
from fogsim.errors import FogsimError


@pytest.mark.parametrize("shape", ["cubic", "linear"])
def test_schedule_goes_from_start_to_target_monotonically(shape):
    s = Schedule(1.0, 0.1, 100, 1100, shape)
    values = [s.density(t) for t in range(0, 1500, 10)]
    assert values[0] == 1.0 and s.density(100) == 1.0
    assert s.density(1100) == 0.1 and s.density(5000) == 0.1
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cubic_matches_zhu_gupta():
    s = Schedule(0.8, 0.05, 0, 1000)
    t = 250
    assert s.density(t) == pytest.approx(0.05 + (0.8 - 0.05) * (1 - t / 1000) ** 3)
    assert s.density(t) < Schedule(0.8, 0.05, 0, 1000, "linear").density(t)


def test_oneshot_reaches_target_at_window_start():
    s = Schedule(1.0, 0.2, 50, 500, "oneshot")
    assert s.density(49) == 1.0 and s.density(50) == 0.2


@pytest.mark.parametrize("args", [(0.1, 0.5, 0, 1), (1.0, 0.0, 0, 1), (1.0, 0.1, 5, 1)])
def test_schedule_rejects_bad_arguments(args):
    with pytest.raises(FogsimError):
        Schedule(*args)


def test_unknown_shape_is_refused():
    with pytest.raises(FogsimError, match="unknown schedule 'step'"):
        Schedule(1.0, 0.1, 0, 1, "step")
