"""Faults injected into real runs: a kill at a random moment then --resume, interrupts, bad checkpoints.

Each run is the shortened quickstart through Flower and Ray (the engine with processes of its
own to stop), started as a user starts it (the ``fogsim`` command in a subprocess) so that
signals reach it the way they do from a terminal. The local engine's interrupt: ``test_sim_local``.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fogsim.signals import CLEANUP_LIMIT_S
from fogsim.sim.reports import WALL_COLUMNS

pytestmark = pytest.mark.slow
ROUNDS = 6
SHORT = ["--set", f"rounds={ROUNDS}", "--set", "simulation.engine=ray"]


def fogsim(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "fogsim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def rounds_done(out: Path) -> int:
    try:
        return max(0, len((out / "rounds.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def wait_for_rounds(process, out: Path, rounds: int, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while rounds_done(out) < rounds:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


def same_results(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "rounds.csv").drop(columns=WALL_COLUMNS),
                                  pd.read_csv(b / "rounds.csv").drop(columns=WALL_COLUMNS))
    pd.testing.assert_frame_equal(pd.read_csv(a / "clients.csv"), pd.read_csv(b / "clients.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(a / "tiers.csv"), pd.read_csv(b / "tiers.csv"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """In this process on the local engine: the same files as Ray's, in seconds."""
    from fogsim.sim.run import prepare, run

    out = tmp_path_factory.mktemp("faults") / "full"
    run(prepare("scenarios/quickstart.yaml", [f"rounds={ROUNDS}"]), out)
    return out


def test_a_run_killed_at_a_random_moment_resumes_to_the_same_files(tmp_path, uninterrupted):
    out = tmp_path / "cut"
    process = fogsim("run", "scenarios/quickstart.yaml", *SHORT, "--out", str(out), "--quiet")
    deadline = time.monotonic() + 240
    while not list(out.glob(".checkpoint/round-*")):  # the run has started its rounds
        assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.02)
    time.sleep(random.uniform(0, 2.5))  # anywhere in the first rounds, or between two
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    assert rounds_done(out) < ROUNDS, "killed mid-run"
    resumed = fogsim("run", "--resume", str(out), "--quiet")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    same_results(uninterrupted, out)
    assert (out / "summary.json").exists()


@pytest.mark.parametrize("sig, code, engine", [(signal.SIGINT, 130, "local"), (signal.SIGTERM, 143, "ray")],
                         ids=["SIGINT-local", "SIGTERM-ray"])
def test_a_signal_stops_the_run_within_seconds_keeps_its_rounds_and_resumes(tmp_path, uninterrupted, sig, code,
                                                                            engine):
    """Either engine, either signal: the same handler; the rounds kept are the uninterrupted run's
    (the engine changes no result), and the local run resumes to its files (a Ray run resumes in
    the test of a run killed at a random moment)."""
    out = tmp_path / "stopped"
    process = fogsim("run", "scenarios/quickstart.yaml", "--set", f"rounds={ROUNDS}", "--set",
                     f"simulation.engine={engine}", "--out", str(out), "--quiet")
    wait_for_rounds(process, out, 1)
    sent = time.monotonic()
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    took = time.monotonic() - sent
    assert process.returncode == code, err[-2000:]
    assert took < CLEANUP_LIMIT_S + 5, f"took {took:.1f} s to stop (the watchdog leaves at {CLEANUP_LIMIT_S} s)"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fogsim: interrupted by"), err[-2000:]
    done = rounds_done(out)
    assert done >= 1
    kept = pd.read_csv(out / "rounds.csv").drop(columns=WALL_COLUMNS)
    pd.testing.assert_frame_equal(kept, pd.read_csv(uninterrupted / "rounds.csv").drop(columns=WALL_COLUMNS).head(done))
    if engine == "ray":
        return
    if done < ROUNDS:
        resumed = fogsim("run", "--resume", str(out), "--quiet")
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
    same_results(uninterrupted, out)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_train_at_once_with_its_exit_code_and_leaves_nothing(tmp_path, sig, code):
    """Started the way a shell starts a background job: SIGINT ignored by the parent."""
    out = tmp_path / "train"
    process = subprocess.Popen([sys.executable, "-m", "fogsim", "train", "--epochs", "200", "--out", str(out),
                                "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not out.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(1)
    sent = time.monotonic()
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert time.monotonic() - sent < 10
    lines = [line for line in err.splitlines() if line.startswith("fogsim:")]  # after train's plan lines
    assert lines == [f"fogsim: interrupted by {sig.name}; what finished is kept"], err[-2000:]
    assert err.rstrip().endswith(lines[0]) and "Traceback" not in err
    assert not out.exists(), "a half-trained run leaves no directory"


def test_resume_refuses_what_it_cannot_resume(tmp_path, uninterrupted, capsys):
    """In this process (the console's own exit codes and lines: test_cli_simulation)."""
    from fogsim.cli import main

    def refused(*args):
        code = main(["run", *args])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    assert "no checkpoint there" in refused("--resume", str(tmp_path))
    assert f"all {ROUNDS} rounds finished already" in refused("--resume", str(uninterrupted))
    assert "give a scenario file to run, or --resume" in refused()
    other = tmp_path / "other"
    subprocess.run(["cp", "-r", str(uninterrupted), str(other)], check=True)
    text = (other / "scenario.yaml").read_text()
    (other / "scenario.yaml").write_text(text.replace(f"rounds: {ROUNDS}", f"rounds: {ROUNDS + 2}"))
    assert "belongs to another run (scenario differ)" in refused("--resume", str(other))
    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-r", str(uninterrupted), str(damaged)], check=True)
    arrays = next((damaged / ".checkpoint").iterdir()) / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:100])
    assert "damaged checkpoint" in refused("--resume", str(damaged))


def test_a_worker_that_dies_mid_run_ends_it_in_one_line_and_keeps_the_finished_rounds(tmp_path):
    """A Ray worker killed (as the OOM killer would) while the run goes on: exit 1 within seconds,
    one line naming what happened, every finished round kept."""
    out = tmp_path / "run"
    process = fogsim("run", "scenarios/quickstart.yaml", "--set", "rounds=1000", "--set", "simulation.engine=ray",
                     "--out", str(out), "--quiet")
    wait_for_rounds(process, out, 2)
    actors = subprocess.run(["pgrep", "-f", "ray::ClientAppActor"], capture_output=True, text=True).stdout.split()
    assert actors, "no Ray worker found"
    os.kill(int(actors[0]), signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 1, err[-2000:]
    assert len(lines) == 1 and "a worker crashed in round" in lines[0] and "ActorDiedError" in lines[0], err[-2000:]
    assert rounds_done(out) >= 2 and f"finished rounds are in {out}" in lines[0]


def test_an_interrupt_in_round_1_keeps_round_0s_checkpoint_and_says_how_to_go_on(tmp_path):
    """Ctrl-C before any round finished: the directory and its round-0 checkpoint are kept (they
    were deleted), the line is printed once and names --resume, and the resume finishes the run."""
    out = tmp_path / "run"
    process = fogsim("run", "scenarios/quickstart.yaml", "--set", "rounds=1", "--set", "training.epochs=60",
                     "--out", str(out), "--quiet")
    deadline = time.monotonic() + 120
    while not (out / ".checkpoint" / "round-000000" / "round.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130 and rounds_done(out) == 0, err[-2000:]
    assert lines == [f"fogsim: interrupted by SIGINT; what finished is kept in {out}; go on with: "
                     f"fogsim run --resume {out}"], err[-2000:]
    resumed = fogsim("run", "--resume", str(out), "--quiet")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and rounds_done(out) == 1, err[-2000:]


FOG = ["--set", "fog.cloud_every=2", "--set", "fog.nodes=[{name: near, profile: mec-server}, {name: far, profile: "
       "satellite-gateway}]", "--set", "fleet[0].fog=far", "--set", "fleet[2].fog=near"]


def test_a_fog_run_killed_at_a_random_moment_resumes_to_the_same_files(tmp_path):
    """Fog nodes' models between cloud rounds are in the checkpoint and fog_nodes.csv is cut back
    with the other files: the resumed run's files are the uninterrupted run's, fog_nodes.csv too."""
    from fogsim.sim.run import prepare, run

    whole, out = tmp_path / "whole", tmp_path / "cut"
    run(prepare("scenarios/quickstart.yaml", [f"rounds={ROUNDS}", *FOG[1::2]]), whole)  # the reference, in this process
    process = fogsim("run", "scenarios/quickstart.yaml", "--set", f"rounds={ROUNDS}", *FOG, "--out", str(out),
                     "--quiet")
    wait_for_rounds(process, out, 1)
    time.sleep(random.uniform(0, 1.5))  # in a later round, or between two
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    if rounds_done(out) < ROUNDS:
        resumed = fogsim("run", "--resume", str(out), "--quiet")
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err[-2000:]
    same_results(whole, out)
    pd.testing.assert_frame_equal(pd.read_csv(whole / "fog_nodes.csv"), pd.read_csv(out / "fog_nodes.csv"))
