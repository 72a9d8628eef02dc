"""The plots: drawn without touching matplotlib's global backend, with readable byte and round axes, and
whatever names the user gave drawn literally."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from fogsim.plots import _bytes_axis, _round_axis, byte_unit, plain, plot_run
from fogsim.sim.reports import CLIENT_COLUMNS, FOG_COLUMNS, ROUND_COLUMNS


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


# --- text the user wrote is drawn literally -------------------------------------------------------

HOSTILE = ["$\\frac$", "$x$ and $y$", "a$b", "$$", "\\$5$", "^_{}", "\\n", "%#&~", "[/b]", "_hidden", "end\\"]


@pytest.mark.parametrize("name", HOSTILE)
def test_plain_text_is_never_math(name):
    shown, is_math = Text()._preprocess_math(plain(name))  # what the renderer draws, and whether as mathtext
    assert (shown, is_math) == (name if not name.startswith("_") else f" {name}", False)


def test_control_characters_are_drawn_as_escapes():
    assert plain("a\nb\x1b") == "a\\nb\\x1b"


def _hostile_run(path, name):
    """A run directory whose profile and fog node are both called ``name``."""
    path.mkdir(parents=True, exist_ok=True)
    rounds = [{c: 0 for c in ROUND_COLUMNS} | {"round": r, "accuracy": 0.5, "upload_bytes": 3000,
                                               "download_bytes": 9000, "cloud_round": 1} for r in (1, 2)]
    clients = [{c: 0 for c in CLIENT_COLUMNS} | {"round": r, "client_id": 0, "profile": name, "fog_node": name,
                                                 "density": 0.5, "peak_memory_bytes": 20_000, "budget_bytes": 24_576}
               for r in (1, 2)]
    fog = [{c: 0 for c in FOG_COLUMNS} | {"round": r, "fog_node": name, "accuracy": 0.4} for r in (1, 2)]
    pd.DataFrame(rounds).to_csv(path / "rounds.csv", index=False)
    pd.DataFrame(clients).to_csv(path / "clients.csv", index=False)
    pd.DataFrame(fog).to_csv(path / "fog_nodes.csv", index=False)
    return path


@pytest.mark.parametrize("name", ["$\\frac$", "$x^{$ _1 [/b]"])
def test_a_run_with_hostile_names_plots(tmp_path, name, monkeypatch):
    """Scenario, profile and fog node names reach titles and legends; mathtext would fail on ``$\\frac$``."""
    from fogsim import plots

    saved, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or save(fig, path))
    paths = plot_run(_hostile_run(tmp_path, name), name)
    assert [p.name for p in paths] == ["accuracy.png", "devices.png", "traffic.png", "fog_nodes.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    texts = [t.get_text() for fig in saved for t in fig.findobj(Text)]
    assert any(text.startswith(plain(name)) for text in texts)  # the title
    assert plain(name) in texts and f"fog node {plain(name)}" in texts  # the legends


def test_plots_are_literal_even_with_tex_on(tmp_path):
    """A caller's ``text.usetex`` would hand every name to LaTeX (where ``_`` and ``%`` are markup)."""
    with matplotlib.rc_context({"text.usetex": True}):
        paths = plot_run(_hostile_run(tmp_path, "50%_of_#1"), "50%_of_#1")
    assert all(p.stat().st_size > 0 for p in paths)


def test_compare_plots_runs_in_hostile_directories(tmp_path, capsys, monkeypatch):
    """A run's name in compare's plots and table is its directory's name, whatever it holds."""
    from test_sim_compare import fake_run

    from fogsim.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    a = fake_run(tmp_path / "$\\frac$", [0.5, 0.6], {"$x$": (1, 24576, 20000)})
    b = fake_run(tmp_path / "[b] $a$b", [0.4, 0.7], {"^_{}": (1, 24576, 20000)})
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "$\\frac$" in out and "[b] $a$b" in out
    assert all((tmp_path / "cmp" / f).stat().st_size > 0 for f in ("accuracy.png", "memory_batch.png"))


def test_devices_plot_shows_failed_rounds_as_gaps_tells_identical_lines_apart_and_keeps_legends_off_the_data(
        tmp_path, monkeypatch):
    """Two profiles on the same schedule draw the same line; a round in which every device of a profile
    failed is a gap, not a straight line across it."""
    from fogsim import plots

    rounds = [{c: 0 for c in ROUND_COLUMNS} | {"round": r, "accuracy": 0.5, "upload_bytes": 10, "download_bytes": 10}
              for r in (1, 2, 3)]
    clients = [{c: 0 for c in CLIENT_COLUMNS} | {"round": r, "client_id": d, "profile": p, "density": 1 / r,
                                                 "peak_memory_bytes": 20_000, "budget_bytes": 24_576,
                                                 "failed": int(p == "b" and r == 2)}
               for r in (1, 2, 3) for d, p in ((0, "a"), (1, "b"))]
    pd.DataFrame(rounds).to_csv(tmp_path / "rounds.csv", index=False)
    pd.DataFrame(clients).to_csv(tmp_path / "clients.csv", index=False)
    saved, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append((path.name, fig)) or save(fig, path))
    plot_run(tmp_path, "run")
    fig = dict(saved)["devices.png"]
    fig.canvas.draw()
    density = fig.axes[0]
    a, b = density.get_lines()[:2]
    assert list(a.get_ydata()) == [1, 0.5, 1 / 3]
    assert b.get_ydata()[0] == 1 and np.isnan(b.get_ydata()[1]), "b's failed round 2 is a gap"
    assert (a.get_marker(), a.get_linestyle()) != (b.get_marker(), b.get_linestyle()), "same line, told apart"
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1, "the legend is beside the data"
