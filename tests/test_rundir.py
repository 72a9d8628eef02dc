"""Output directories: claimed by one command at a time, replaced only when fogsim made them, never escaping runs/."""

import multiprocessing
import os
from pathlib import Path

import pytest

from fogsim.cli import main
from fogsim.errors import FogsimError
from fogsim.rundir import MARKER, claim, default_run_dir, marker_kind, safe_name


def _claim_and_report(out, barrier, results):
    barrier.wait()
    try:
        with claim(Path(out), "run", keep_on_failure=True) as path:
            (path / "rounds.csv").write_text(f"written by {os.getpid()}\n")
            barrier.wait()  # hold the claim until both tried
        results.put("claimed")
    except FogsimError as error:
        barrier.wait()
        results.put(f"refused: {error}")


@pytest.mark.parametrize("exists", [False, True], ids=["new", "empty"])
def test_two_commands_racing_for_one_directory_one_wins(tmp_path, exists):
    out = tmp_path / "race"
    if exists:
        out.mkdir()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_claim_and_report, args=(str(out), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes[0] == "claimed" and outcomes[1].startswith("refused: --out"), outcomes
    assert len((out / "rounds.csv").read_text().splitlines()) == 1, "the loser wrote nothing"


def test_a_directory_in_use_is_not_replaced(tmp_path):
    out = tmp_path / "busy"
    with claim(out, "train"):
        (out / "summary.json").write_text("{}")
        with pytest.raises(FogsimError, match="in use by another fogsim command"):
            with claim(out, "train", overwrite=True):
                pass
    assert (out / "summary.json").exists()


def test_overwrite_replaces_only_a_fogsim_directory_of_the_same_kind(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(FogsimError, match="a directory fogsim did not make"):
        with claim(mine, "train", overwrite=True):
            pass
    assert (mine / "thesis.tex").read_text() == "years of work"
    sweep = tmp_path / "sweep"
    with claim(sweep, "sweep"):
        (sweep / "comparison.csv").write_text("x")
    with pytest.raises(FogsimError, match="is a fogsim sweep directory; --overwrite only replaces a fogsim train"):
        with claim(sweep, "train", overwrite=True):
            pass
    old = tmp_path / "old"
    with claim(old, "train"):
        (old / "trace.csv").write_text("old")
    with claim(old, "train", overwrite=True):
        (old / "trace.csv").write_text("new")
    assert (old / "trace.csv").read_text() == "new" and marker_kind(old) == "train"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "old", "sweep"], "nothing left aside"


def test_a_failed_overwrite_puts_the_old_run_back(tmp_path):
    out = tmp_path / "run"
    with claim(out, "train"):
        (out / "trace.csv").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with claim(out, "train", overwrite=True):
            (out / "trace.csv").write_text("half")
            raise KeyboardInterrupt
    assert (out / "trace.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_never_touches_the_working_directory_its_parents_or_a_symlink(tmp_path, monkeypatch):
    run = tmp_path / "a" / "run"
    with claim(run, "train"):
        (run / "trace.csv").write_text("x")
    monkeypatch.chdir(run)
    for target in (Path("."), Path(".."), Path(run)):
        with pytest.raises(FogsimError, match="working directory or one of its parents"):
            with claim(target, "train", overwrite=True):
                pass
    link = tmp_path / "link"
    link.symlink_to(run)
    with pytest.raises(FogsimError, match="is a symlink"):
        with claim(link, "train", overwrite=True):
            pass
    assert (run / "trace.csv").read_text() == "x" and (run / MARKER).exists()


def test_a_failure_removes_what_the_command_wrote_and_the_parents_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with claim(tmp_path / "deep" / "er" / "out", "compare") as out:
            (out / "comparison.csv").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        with claim(empty, "compare") as out:
            (out / "comparison.csv").write_text("half")
            raise RuntimeError("boom")
    assert empty.is_dir() and list(empty.iterdir()) == [], "a directory the user made stays, empty"


def test_a_simulation_keeps_what_it_wrote_when_asked(tmp_path):
    with pytest.raises(RuntimeError):
        with claim(tmp_path / "run", "run", keep_on_failure=True) as out:
            (out / "rounds.csv").write_text("round\n1\n")
            raise RuntimeError("engine died")
    assert (tmp_path / "run" / "rounds.csv").exists()


@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "a\nb", "..", ".hidden", "x" * 500, "", "ok-name_1.2"])
def test_default_directory_from_any_name_stays_under_runs(name):
    path = default_run_dir(name)
    assert path.parent == Path("runs") and "\n" not in str(path) and not path.name.startswith(".")
    assert len(path.name) < 120 and "/" not in safe_name(name)


def test_train_overwrite_of_the_working_directory_deletes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "0.1", "--out", ".", "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the working directory" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
