"""--track: every round's figures in TensorBoard and MLflow, read back with their own readers."""

import pandas as pd
import pytest

from fogsim.cli import main

QUICKSTART = "scenarios/quickstart.yaml"


@pytest.fixture(autouse=True)
def _file_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to keep runs in a folder


def scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def mlflow_runs(uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("quickstart")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_a_run_is_logged_round_by_round_to_tensorboard_and_mlflow(tmp_path):
    out, board, store = tmp_path / "run", tmp_path / "tb", f"file://{tmp_path / 'mlruns'}"
    assert main(["run", QUICKSTART, "--set", "rounds=3", "--out", str(out), "--quiet",
                 "--track", f"tensorboard:{board}", "--track", f"mlflow:{store}"]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    clients = pd.read_csv(out / "clients.csv")
    samd21 = clients[(clients["profile"] == "samd21") & (clients["failed"] == 0)]
    # TensorBoard, through its own event reader
    accuracy = scalars(board / "run", "global/accuracy")
    assert list(accuracy) == [1, 2, 3] and list(accuracy.values()) == pytest.approx(list(rounds["accuracy"]))
    upload = scalars(board / "run", "global/upload_bytes")
    assert list(upload.values()) == list(rounds["upload_bytes"].astype(float))
    peak = scalars(board / "run", "profile/samd21/peak_memory_bytes")
    assert peak == {r: float(g["peak_memory_bytes"].max()) for r, g in samd21.groupby("round")}
    assert set(scalars(board / "run", "final/samd21/accuracy")) == {3}
    # MLflow, through its client
    client, runs = mlflow_runs(store)
    (run,) = runs
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["seed"] == "0" and run.data.params["fleet.0.profile"] == "samd21"
    history = client.get_metric_history(run.info.run_id, "global/sim_time_s")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(list(rounds["sim_time_s"]))
    losses = client.get_metric_history(run.info.run_id, "profile/esp32-s3/train_loss")
    esp = clients[(clients["profile"] == "esp32-s3") & (clients["failed"] == 0)]
    assert [m.value for m in losses] == pytest.approx(list(esp.groupby("round")["train_loss"].mean()))
    assert run.data.metrics["final/accuracy"] == pytest.approx(rounds["accuracy"].iloc[-1])


def test_a_sweep_logs_one_run_per_value_and_seed(tmp_path):
    store = f"file://{tmp_path / 'mlruns'}"
    assert main(["sweep", QUICKSTART, "--key", "pruning.compression", "--values", "5,10", "--seeds", "0,1",
                 "--set", "rounds=1", "--out", str(tmp_path / "sweep"), "--quiet", "--track", f"mlflow:{store}"]) == 0
    _, runs = mlflow_runs(store)
    assert [r.info.run_name for r in runs] == [f"pruning.compression={v},seed={s}" for v in (5, 10) for s in (0, 1)]
    assert [r.data.params["pruning.compression"] for r in runs] == ["5.0", "5.0", "10.0", "10.0"]
    assert [r.data.params["seed"] for r in runs] == ["0", "1", "0", "1"]


@pytest.mark.parametrize("spec, message", [
    ("wandb:x", "--track 'wandb:x': give tensorboard:DIR or mlflow:URI"),
    ("tensorboard", "--track 'tensorboard': give tensorboard:DIR or mlflow:URI"),
    ("mlflow: ", "--track 'mlflow: ': give")])
def test_a_bad_track_is_one_line_before_anything_runs(tmp_path, capsys, spec, message):
    assert main(["run", QUICKSTART, "--out", str(tmp_path / "run"), "--quiet", "--track", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fogsim: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_missing_tracker_package_says_what_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert main(["run", QUICKSTART, "--out", str(tmp_path / "run"), "--quiet", "--track", "mlflow:x"]) == 2
    assert "the mlflow-skinny package is not installed; pip install mlflow-skinny" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_cannot_start_ends_the_run_in_one_line_leaving_nothing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", QUICKSTART, "--out", str(tmp_path / "run"), "--quiet", "--track",
                 f"mlflow:file://{blocker}/mlruns"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fogsim: error: --track mlflow:") and "cannot start" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
