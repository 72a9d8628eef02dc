"""The run directory's CSV files: a round's rows are on disk together or not at all, even when the disk fills."""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from fogsim.sim import outputs
from fogsim.sim.outputs import OutputFailed, RunFiles, read_run
from fogsim.sim.reports import CLIENT_COLUMNS, ROUND_COLUMNS


def round_row(n):
    return {"round": n, "accuracy": 0.5 + n / 100, "loss": 1.0 / n, "device_accuracy": float("nan"),
            "density": 0.25, "global_density": 0.3, "upload_bytes": 100 * n, "download_bytes": 200 * n,
            "sim_time_s": 1.5, "wall_time_s": 0.1, "clients_available": 3, "clients_sampled": 3,
            "clients_ok": 2, "clients_failed": 1}


def client_rows(n):
    ok = {"round": n, "client_id": 0, "profile": "samd21", "budget_bytes": 24576, "peak_memory_bytes": 24000,
          "batch_size_min": 2, "batch_size_max": 24, "density": 0.25, "num_examples": 300, "train_loss": 0.7,
          "accuracy": float("nan"), "progress": 900 * n, "upload_bytes": 100, "download_bytes": 200,
          "compute_s": 0.5, "sim_time_s": 1.5, "failed": 0}
    return [ok, {**ok, "client_id": 1}, {"round": n, "client_id": 2, "profile": "samd21", "budget_bytes": 24576,
                                         "failed": 1}]


def test_rows_read_back_as_they_were_written(tmp_path):
    files = RunFiles(tmp_path, "name: t\n")
    for n in (1, 2):
        files.write_round(round_row(n), client_rows(n))
    files.close()
    rounds, clients = read_run(tmp_path)
    assert rounds[1]["loss"] == 0.5 and rounds[1]["upload_bytes"] == 200 and isinstance(rounds[1]["round"], int)
    assert clients[2] == client_rows(1)[2], "a failed client's row has no numbers, and reads back without them"
    assert list(pd.read_csv(tmp_path / "rounds.csv").columns) == ROUND_COLUMNS
    assert list(pd.read_csv(tmp_path / "clients.csv").columns) == CLIENT_COLUMNS


@pytest.mark.parametrize("failing", ["clients", "rounds"])
def test_a_failed_write_leaves_both_files_at_the_last_whole_round(tmp_path, monkeypatch, failing):
    files = RunFiles(tmp_path, "name: t\n")
    files.write_round(round_row(1), client_rows(1))
    before = [(tmp_path / f).read_bytes() for f in ("rounds.csv", "clients.csv")]
    real = outputs._write_all

    def half_then_full(file, data):
        if file is getattr(files, failing):
            file.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        real(file, data)

    monkeypatch.setattr(outputs, "_write_all", half_then_full)
    with pytest.raises(OutputFailed, match="round 2 could not be written \\(No space left on device\\); rounds "
                                           "before it are intact"):
        files.write_round(round_row(2), client_rows(2))
    assert [(tmp_path / f).read_bytes() for f in ("rounds.csv", "clients.csv")] == before
    monkeypatch.setattr(outputs, "_write_all", real)
    files.write_round(round_row(2), client_rows(2))  # space again: the run could go on
    files.close()
    rounds, clients = read_run(tmp_path)
    assert [r["round"] for r in rounds] == [1, 2] and len(clients) == 6


FOG_NODES = [f"a-fog-node-with-a-long-name-{i}" for i in range(4)]  # fog_nodes.csv grows fastest: it fills first


def fog_rows(n):
    """The fog nodes' rows of round ``n`` (``fog_nodes.csv``)."""
    from fogsim.sim.reports import FOG_COLUMNS, INT_COLUMNS, TEXT_COLUMNS

    base = {c: ("hub" if c in TEXT_COLUMNS else 7 if c in INT_COLUMNS else 0.25) for c in FOG_COLUMNS}
    return [{**base, "round": n, "fog_node": name} for name in FOG_NODES]


@pytest.mark.parametrize("fog", [False, True], ids=["flat", "fog"])
def test_a_real_file_size_limit_never_leaves_a_partial_round(tmp_path, fog):
    """The kernel refuses writes past RLIMIT_FSIZE the way a full disk refuses them; with fog nodes
    ``fog_nodes.csv`` is cut back with the others (never a round ahead, never a row in half)."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        from fogsim.sim.outputs import OutputFailed, RunFiles
        from test_sim_outputs import round_row, client_rows, fog_rows
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        files = RunFiles(Path({str(tmp_path / 'run')!r}), "name: t\\n", fog={fog})
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
        for n in range(1, 1000):
            try:
                files.write_round(round_row(n), client_rows(n), *([fog_rows(n)] if {fog} else []))
            except OutputFailed as error:
                print(n, error)
                break
    """)
    (tmp_path / "run").mkdir()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=".", timeout=60)
    assert result.returncode == 0, result.stderr
    failed_at, message = result.stdout.split(" ", 1)
    assert "could not be written" in message and "rounds before it are intact" in message
    rounds, clients = read_run(tmp_path / "run")
    assert [r["round"] for r in rounds] == list(range(1, int(failed_at)))
    assert len(clients) == 3 * len(rounds), "clients.csv is never ahead of rounds.csv"
    names = ["rounds.csv", "clients.csv"]
    if fog:
        from fogsim.sim.outputs import read_fog_nodes

        run = tmp_path / "run"
        assert (run / "fog_nodes.csv").stat().st_size > (run / "clients.csv").stat().st_size, "it met the limit"
        assert [r["round"] for r in read_fog_nodes(tmp_path / "run")] == [r for r in range(1, int(failed_at))
                                                                          for _ in FOG_NODES]
        names.append("fog_nodes.csv")
    for name in names:
        assert (tmp_path / "run" / name).read_bytes().endswith(b"\r\n"), "no row cut in half"


def test_writing_after_close_is_refused_not_cut(tmp_path):
    files = RunFiles(tmp_path, "name: t\n")
    files.close()
    with pytest.raises(OutputFailed, match="stopped before round 1 was written"):
        files.write_round(round_row(1), client_rows(1))


def test_columns_are_the_report_fields_and_a_report_round_trips_through_metrics():
    from dataclasses import fields

    from fogsim.sim.reports import (CLIENT_COLUMNS, FOG_COLUMNS, INT_COLUMNS, ROUND_COLUMNS, TEXT_COLUMNS,
                                    ClientRow, DeviceReport, RoundRecord)

    report = DeviceReport(peak_memory_bytes=10, batch_size_min=2, batch_size_max=8, density=0.5, num_examples=30,
                          train_loss=0.25, accuracy=float("nan"), progress=90, upload_bytes=40, download_bytes=50,
                          compute_s=0.1, sim_time_s=0.2)
    metrics = report.to_metrics()
    assert metrics["num-examples"] == 30 and "num_examples" not in metrics
    back = DeviceReport.from_metrics(metrics)
    assert back.progress == 90 and back.accuracy != back.accuracy  # NaN survives
    assert ROUND_COLUMNS == [f.name for f in fields(RoundRecord)]
    assert CLIENT_COLUMNS[:4] == ["round", "client_id", "profile", "budget_bytes"] and CLIENT_COLUMNS[-1] == "failed"
    assert {"num_examples", "upload_bytes", "clients_ok", "failed"} <= INT_COLUMNS and "density" not in INT_COLUMNS
    assert {"profile", "fog_node"} <= TEXT_COLUMNS and "fog_node" in FOG_COLUMNS and FOG_COLUMNS[:2] == ["round",
                                                                                                      "fog_node"]
    ok = ClientRow(3, 7, "samd21", 24576, "north", report).as_row()
    failed = ClientRow(3, 8, "samd21", 24576, "server", None).as_row()
    assert list(ok) == CLIENT_COLUMNS and ok["failed"] == 0
    assert failed == {"round": 3, "client_id": 8, "profile": "samd21", "budget_bytes": 24576, "fog_node": "server",
                      "failed": 1}
