"""``fogsim train`` end to end: the files it writes, and one clean line for every bad input."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from fogsim.cli import main

TRACE_COLUMNS = {"step", "epoch", "progress", "density", "batch_size", "lr", "loss", "state_bytes",
                 "activation_bytes", "memory_bytes", "budget_bytes"}


def test_train_writes_trace_summary_and_plot(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", "--model", "mlp-small", "--method", "dynhp", "--budget", "80%",
                 "--compression", "8", "--epochs", "3", "--out", str(out), "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [".fogsim", "epochs.csv", "summary.json", "trace.csv", "training.png"]
    trace = pd.read_csv(out / "trace.csv")
    assert TRACE_COLUMNS <= set(trace.columns)
    assert (trace["memory_bytes"] <= trace["budget_bytes"]).all()
    assert trace["batch_size"].max() > 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compression"] == pytest.approx(8, rel=0.01)
    assert summary["peak_memory_bytes"] <= summary["budget_bytes"]
    assert summary["plan"]["start_density"] < 1, "80% of the dense need forces a one-shot prune"
    assert 0.5 < summary["test_accuracy"] <= 1
    assert len(pd.read_csv(out / "epochs.csv")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "nothing beside the run directory"


BAD_INPUTS = [
    (["--budget", "-1MiB"], "invalid budget '-1MiB'"),
    (["--budget", "12XB"], "unknown unit 'XB'"),
    (["--budget", "0"], "invalid budget '0'"),
    (["--budget", "-5%"], "percentage must be positive"),
    (["--compression", "0.5"], "compression: Input should be greater than or equal to 1"),
    (["--method", "prune-it"], "'--method': 'prune-it' is not one of 'dense', 'gmp', 'soft', 'dynhp'"),
    (["--model", "resnet"], "'--model': 'resnet' is not one of 'mlp', 'lenet5', 'mlp-small'"),
    (["--dataset", "imagenet"], "'--dataset': 'imagenet' is not one of 'digits', 'fashion-mnist'"),
    (["--schedule", "step"], "'--schedule': 'step' is not one of 'cubic', 'linear', 'oneshot'"),
    (["--budget", "20KiB"], r"cannot train dynhp: budget 20.00 KiB \(20480 B\) is below the .* \(\d+ B\) needed"),
    (["--method", "dense", "--budget", "50%"], "needed for the dense model"),
    (["--dataset", "cifar10", "--data-root", "{tmp}/nowhere"], "CIFAR-10 not found"),
    (["--epochs", "many"], "Invalid value for '--epochs'"),
    (["--no-such-flag"], "No such option"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[a[0][1] if len(a[0]) > 1 else a[0][0] for a in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "deep" / "run"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["train", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fogsim: error: ")
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_directory_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_console_command_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fogsim", "train", "--budget", "12XB", "--out", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == ("fogsim: error: invalid budget '12XB': unknown unit 'XB'; use a positive size "
                                     "such as 512KiB, 1MiB or 2.5MB (units B, KB, KiB, MB, MiB, GB, GiB)")


def test_train_options_come_from_the_settings_schema(capsys, monkeypatch):
    """Every TrainConfig field is an option with its default in the help, Literals as choices."""
    from fogsim.core.config import TrainConfig

    monkeypatch.setenv("COLUMNS", "300")  # one line per option, so the checks below see whole phrases
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, field in TrainConfig.model_fields.items():
        assert f"--{name.replace('_', '-')}" in text, name
    assert "[dense|gmp|soft|dynhp]" in text and "[cubic|linear|oneshot]" in text
    assert "(default: dynhp)" in text and "(default: 0.05)" in text
    assert "\\[" not in text, "no escaped rich markup in the help"


def test_version_and_short_help(capsys):
    from fogsim import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fogsim {__version__}"
    assert main(["train", "-h"]) == 0
    assert "--compression" in capsys.readouterr().out


@pytest.mark.slow
def test_a_full_disk_ends_train_in_one_line_exit_1_and_leaves_nothing(tmp_path):
    """The kernel refuses writes past RLIMIT_FSIZE as a full disk does: no traceback, no half-made
    directory."""
    import resource
    import signal
    import subprocess
    import sys

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    out = tmp_path / "t"
    result = subprocess.run([sys.executable, "-m", "fogsim", "train", "--dataset", "digits", "--epochs", "1",
                             "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300,
                            preexec_fn=limited)
    lines = [line for line in result.stderr.splitlines() if line.startswith("fogsim")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and "could not be written" in lines[0] and "File too large" in lines[0], lines
    assert not out.exists()
