"""The plots: drawn without touching matplotlib's global backend, with readable byte and round axes."""

import matplotlib
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fogsim.plots import _bytes_axis, _round_axis, byte_unit, plot_run
from fogsim.sim.reports import CLIENT_COLUMNS, ROUND_COLUMNS


@pytest.mark.parametrize("values, unit", [([0, 500], "B"), ([2048, 10], "KiB"), ([3 * 2**20], "MiB"),
                                          ([5 * 2**30, 1], "GiB"), ([], "B"), ([float("nan"), 4096], "KiB")])
def test_byte_unit_is_the_largest_that_keeps_the_values_at_least_one(values, unit):
    assert byte_unit(values)[0] == unit


def _labels(fig, axis):
    fig.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() + axis.get_ticklabels(minor=True) if t.get_text()]


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_byte_axes_print_plain_numbers(scale):
    fig = Figure()
    ax = fig.subplots()
    unit, size = byte_unit([0.02 * 2**20, 3.4 * 2**20])
    ax.plot([1, 2], [0.02 * 2**20 / size, 3.4 * 2**20 / size])
    ax.set_yscale(scale)
    _bytes_axis(ax, unit)
    labels = _labels(fig, ax.yaxis)
    assert unit == "MiB" and labels
    assert not any(mark in label for label in labels for mark in ("e", "×", "^", "$")), labels
    assert ax.yaxis.get_offset_text().get_text() == ""


def test_round_axes_have_integer_ticks():
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2, 3], [0.1, 0.5, 0.7])
    _round_axis(ax)
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_plot_run_leaves_the_backend_alone(tmp_path):
    rounds = [{c: 0 for c in ROUND_COLUMNS} | {"round": r, "accuracy": 0.5 + r / 10, "upload_bytes": 3000 * r,
                                               "download_bytes": 9000} for r in (1, 2, 3)]
    clients = [{c: 0 for c in CLIENT_COLUMNS} | {"round": r, "client_id": d, "profile": p, "density": 0.5,
                                                 "peak_memory_bytes": 20_000, "budget_bytes": 24_576}
               for r in (1, 2, 3) for d, p in ((0, "samd21"), (1, "esp32-s3"))]
    pd.DataFrame(rounds).to_csv(tmp_path / "rounds.csv", index=False)
    pd.DataFrame(clients).to_csv(tmp_path / "clients.csv", index=False)
    before = matplotlib.get_backend()
    paths = plot_run(tmp_path, "a run")
    assert [p.name for p in paths] == ["accuracy.png", "devices.png", "traffic.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert matplotlib.get_backend() == before
