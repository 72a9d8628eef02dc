"""The user's own data from a scenario (issue 20, item 3): ``data: {name: npz, path: ...}``,
``data: {name: folder, path: ...}`` and ``data: {loader: "file.py:load"}`` (or a module's function).

Every form runs end to end through ``fogsim run`` on small files the tests write; a run directory
keeps the loader's file and records each data file's size and SHA-256, so that a moved directory
resumes and a changed data file is refused. Bad input is one line, exit 2, nothing written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fogsim import data_files
from fogsim.cli import main
from fogsim.data import load_dataset
from fogsim.sim.outputs import read_rows
from fogsim.sim.run import prepare, prepare_resume, run
from inprocess import interrupted_run, ran_one_round, refused as refused_run

BASE = {"name": "t", "model": "mlp-small", "rounds": 1, "training": {"batch_min": 8},
        "fleet": [{"profile": "rpi4", "count": 2}, {"profile": "esp32-s3"}], "simulation": {"engine": "local"}}
LOCAL = ["--set", "simulation.engine=local", "--set", "rounds=1", "--quiet"]

LOADER = """\
import numpy as np


def load(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 100)
    x = rng.normal(size=(100, 1, 6, 6)).astype(np.float32) + y[:, None, None, None]
    return {"train_x": x[:80], "train_y": y[:80], "test_x": x[80:], "test_y": y[80:]}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")


def arrays(shape=(6,), classes=3, n_train=60, n_test=20, seed=0) -> dict:
    """Learnable arrays: samples of ``shape``, shifted by their label."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = rng.normal(size=(n, *shape)).astype(np.float32) + y.reshape(-1, *[1] * len(shape))
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def write_scenario(folder: Path, data: dict, name: str = "s.yaml", **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump({**BASE, "data": data, **changes}))
    return folder / name


def write_folder(root: Path, classes=("cat", "dog"), size=(8, 6), modes=("L",), per_class=6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 2):
                mode = modes[i % len(modes)]
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                pixels = np.clip(rng.normal(100 + 60 * label, 20, size=shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode).save(root / split / name / f"{i}.png")
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- each form, end to end --------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6,), (5, 5), (2, 4, 4)], ids=["features", "images-NHW", "images-NCHW"])
def test_an_npz_file_runs_end_to_end(tmp_path, capsys, shape):
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "d.npz", **arrays(shape))
    s = write_scenario(tmp_path / "scenarios", {"name": "npz", "path": "../data/d.npz"})
    out = ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), *LOCAL], capsys)
    written = yaml.safe_load((out / "scenario.yaml").read_text())["data"]
    assert written["name"] == "npz" and written["path"] == str(tmp_path / "data" / "d.npz")  # absolute
    record = json.loads((out / "run.json").read_text())["data"]
    assert record == [{"path": str(tmp_path / "data" / "d.npz"), "bytes": (tmp_path / "data" / "d.npz").stat().st_size,
                       "sha256": sha256(tmp_path / "data" / "d.npz")}]
    assert main(["validate", str(out / "scenario.yaml")]) == 0


def test_npz_samples_take_the_shape_the_models_get_and_are_standardised_by_training_statistics(tmp_path):
    given = arrays((6,))
    given["train_x"] = given["train_x"] * np.arange(1, 7, dtype=np.float32) + 50  # features of unlike scales
    np.savez(tmp_path / "f.npz", **given)
    flat = load_dataset("npz", path=tmp_path / "f.npz")
    assert flat.input_shape == (6,) and flat.num_classes == 3
    assert torch.allclose(flat.train_x.mean(0), torch.zeros(6), atol=1e-4)  # per feature
    assert torch.allclose(flat.train_x.std(0), torch.ones(6), atol=1e-4)
    np.savez(tmp_path / "i.npz", **arrays((5, 5)))
    assert load_dataset("npz", path=tmp_path / "i.npz").input_shape == (1, 5, 5)  # N x H x W gets a channel
    np.savez(tmp_path / "c.npz", **arrays((2, 4, 4)))
    images = load_dataset("npz", path=tmp_path / "c.npz")
    assert images.input_shape == (2, 4, 4)
    assert torch.allclose(images.train_x.mean((0, 2, 3)), torch.zeros(2), atol=1e-4)  # per channel


def test_an_image_folder_runs_end_to_end_labelled_by_sorted_class_names(tmp_path, capsys):
    write_folder(tmp_path / "pics", classes=("zebra", "ant", "moth"), modes=("L", "RGB"))
    s = write_scenario(tmp_path, {"name": "folder", "path": "pics"})
    out = ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), *LOCAL], capsys)
    assert json.loads((out / "run.json").read_text())["data"][0]["path"] == str(tmp_path / "pics")
    data = load_dataset("folder", path=tmp_path / "pics")
    assert data.input_shape == (3, 6, 8) and data.num_classes == 3  # one RGB image makes all RGB; 8 wide, 6 high
    assert data.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # ant, moth, zebra
    gray = load_dataset("folder", path=write_folder(tmp_path / "gray", modes=("L",)))
    assert gray.input_shape == (1, 6, 8)


def test_a_loader_file_runs_and_a_moved_run_directory_resumes_with_its_copy(tmp_path, capsys):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "my_data.py").write_text(LOADER)
    s = write_scenario(folder, {"loader": "my_data.py:load"}, rounds=2)
    out = tmp_path / "run"

    interrupted_run(prepare(s), out)
    assert (out / "loaders" / "my_data.py").read_text() == LOADER
    written = yaml.safe_load((out / "scenario.yaml").read_text())["data"]
    assert written["name"] == "loader" and written["loader"] == "loaders/my_data.py:load"
    assert json.loads((out / "run.json").read_text())["data"] == [
        {"path": "loaders/my_data.py", "bytes": len(LOADER), "sha256": hashlib.sha256(LOADER.encode()).hexdigest()}]
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.rmtree(folder)  # the original loader is gone: the directory needs nothing outside it
    assert main(["validate", str(moved / "scenario.yaml")]) == 0, capsys.readouterr().err
    run(prepare_resume(moved), moved, resume=True)
    assert [r["round"] for r in read_rows(moved / "rounds.csv")] == [1, 2]


def test_the_loader_of_docs_extending_runs(tmp_path, capsys):
    doc = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()
    section = doc.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (tmp_path / "my_data.py").write_text(block)
    out = ran_one_round(["run", str(write_scenario(tmp_path, {"loader": "my_data.py:load"})), "--out", str(tmp_path / "out"),
               *LOCAL], capsys)
    assert (out / "loaders" / "my_data.py").read_text() == block


def test_a_loader_from_an_importable_module_runs(tmp_path, capsys, monkeypatch):
    (tmp_path / "lib" / "sensors").mkdir(parents=True)
    (tmp_path / "lib" / "sensors" / "__init__.py").write_text("")
    (tmp_path / "lib" / "sensors" / "readings.py").write_text(LOADER.replace("def load", "def readings"))
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    s = write_scenario(tmp_path / "scenarios", {"loader": "sensors.readings:readings"})
    out = ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), *LOCAL], capsys)
    assert yaml.safe_load((out / "scenario.yaml").read_text())["data"]["loader"] == "sensors.readings:readings"
    assert json.loads((out / "run.json").read_text())["data"][0]["path"] == str(tmp_path / "lib" / "sensors" /
                                                                                "readings.py")
    assert not (out / "loaders").exists()


def test_a_resume_whose_data_file_changed_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", **arrays())
    s = write_scenario(tmp_path, {"name": "npz", "path": "d.npz"}, rounds=2)
    out = tmp_path / "run"

    interrupted_run(prepare(s), out)
    np.savez(tmp_path / "d.npz", **arrays(seed=1))  # same shapes, other numbers
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.search(r"d\.npz changed since the run started", err), err


@pytest.mark.slow
def test_user_data_runs_on_ray_from_the_drivers_copy(tmp_path, capsys):
    """The Ray workers train on the dataset the driver loaded (shared through Ray's object store): the
    loader runs once, however many workers there are, so they cannot get other arrays than the driver's."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    calls = tmp_path / "calls.txt"
    (folder / "my_data.py").write_text(LOADER.replace("def load(seed):\n", "def load(seed):\n    with open("
                                                      f"{str(calls)!r}, 'a') as f:\n        f.write('x')\n"))
    s = write_scenario(folder, {"loader": "my_data.py:load"})
    out = ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), "--set", "simulation.engine=ray", "--set",
               "simulation.num_cpus=2", "--set", "rounds=1", "--quiet"], capsys)
    clients = read_rows(out / "clients.csv")
    assert len(clients) == 3 and not any(int(row["failed"]) for row in clients)
    assert calls.read_text() == "x", "the loader ran in the driver only"


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def refused(tmp: Path, capsys, data: dict, message: str) -> str:
    return refused_run(tmp, capsys, ["run", str(write_scenario(tmp, data)), "--out", str(tmp / "out"), "--quiet"],
                       message)


def npz(tmp: Path, **changes) -> dict:
    given = arrays()
    given.update(changes)
    np.savez(tmp / "d.npz", **{k: v for k, v in given.items() if v is not None})
    return {"name": "npz", "path": "d.npz"}


def loader(tmp: Path, body: str, target: str = "bad.py:load") -> dict:
    (tmp / "bad.py").write_text(body)
    return {"loader": target}


def folder(tmp: Path, change) -> dict:
    root = write_folder(tmp / "pics")
    change(root)
    return {"name": "folder", "path": "pics"}


def _odd_size(root: Path):
    from PIL import Image

    Image.new("L", (9, 6)).save(root / "train" / "dog" / "odd.png")


def _bytes_file(tmp: Path, name: str, content: bytes) -> dict:
    (tmp / name).write_bytes(content)
    return {"name": "npz", "path": name}


@pytest.mark.parametrize("build, message", [
    (lambda t: {"name": "npz", "path": "nope.npz"}, r"data\.path: cannot read npz file .*nope\.npz"),
    (lambda t: {"name": "npz", "path": "."}, r"data\.path: .*not a regular file"),
    (lambda t: _bytes_file(t, "x.npz", b"not a zip"), r"x\.npz: not an npz file .*numpy\.savez"),
    (lambda t: npz(t, test_y=None), r"d\.npz: no array test_y \(it holds: test_x, train_x, train_y\)"),
    (lambda t: npz(t, train_y=np.zeros(60)), r"train_y holds float64 values; labels must be integers"),
    (lambda t: npz(t, train_x=np.array(["a"] * 60)), r"train_x holds <U1 values; features must be numbers"),
    (lambda t: npz(t, train_x=np.full((60, 6), np.nan)), r"train_x holds values that are not finite"),
    (lambda t: npz(t, test_x=np.full((20, 6), 10**7)), r"test_x holds values that are not finite or beyond 1e\+06"),
    (lambda t: npz(t, train_y=np.zeros(59, dtype=int)), r"train_x holds 60 samples but train_y 59 labels"),
    (lambda t: npz(t, train_y=np.full(60, -1)), r"train_y holds label -1; labels are 0 to K-1"),
    (lambda t: npz(t, test_y=np.full(20, 7)), r"test_y holds label 7 but the largest training label is 2"),
    (lambda t: npz(t, test_x=np.zeros((0, 6)), test_y=np.zeros(0, dtype=int)), r"the test split holds 0 samples"),
    (lambda t: npz(t, test_x=np.zeros((20, 5))), r"samples have shape \(6,\) but test_x samples \(5,\)"),
    (lambda t: npz(t, train_x=np.zeros((60, 2, 2, 2, 2))), r"train_x has shape \(60, 2, 2, 2, 2\); give N x F"),
    (lambda t: npz(t, train_y=np.full(60, 10**9)), r"at most 100000 classes"),
    (lambda t: {"name": "npz"}, r"data\.path: name npz reads an \.npz file: give its path"),
    (lambda t: {"name": "digits", "path": "d.npz"}, r"data\.path: only name npz, folder or huggingface reads a path"),
    (lambda t: {"name": "npz", "path": "d.npz", "root": "."}, r"data\.root: only the built-in datasets read root"),
    (lambda t: folder(t, lambda r: (r / "test" / "dog").rename(r / "test" / "cow")),
     r"class folders of train/ and test/ differ \(only in train/: dog; only in test/: cow\)"),
    (lambda t: folder(t, _odd_size), r"odd\.png: 9x6 pixels, but .*0\.png has 8x6; resize"),
    (lambda t: folder(t, lambda r: (r / "train" / "cat" / "3.png").write_bytes(b"\x89PNG broken")),
     r"3\.png: cannot decode the image"),
    (lambda t: folder(t, lambda r: shutil.rmtree(r / "test")), r"pics: no test/ folder"),
    (lambda t: {"name": "folder", "path": "nowhere"}, r"data\.path: .*nowhere: not a directory"),
    (lambda t: {"loader": "load"}, r"data\.loader: 'load' is not a loader; write file\.py:function"),
    (lambda t: {"loader": "missing.py:load"}, r"data\.loader: cannot read loader file .*missing\.py"),
    (lambda t: loader(t, "1 / 0\n"), r"data\.loader: loader .*bad\.py:load: importing .*bad\.py failed "
                                     r"\(ZeroDivisionError: division by zero\)"),
    (lambda t: loader(t, "def load(seed):\n    raise RuntimeError('no\\nsensor')\n"),
     r"loader .*bad\.py:load failed \(RuntimeError: no\\nsensor\); fix the loader"),
    (lambda t: loader(t, "def load(seed):\n    return 1, 2, 3\n"), r"loader .*bad\.py:load returned 3 values; return"),
    (lambda t: loader(t, "def load(seed):\n    return {'train_x': 1}\n"), r"its dict has no train_y"),
    (lambda t: loader(t, "def load(seed):\n    return [1], [2], [3], [4]\n"), r"train_x is a list, not a numpy array"),
    (lambda t: loader(t, "x = 1\n"), r"has no function load; define def load\(seed\)"),
    (lambda t: loader(t, "import sys\nsys.exit(3)\n"), r"importing .* failed \(SystemExit: 3\)"),
    (lambda t: {"loader": "no_such_module_xyz:load"}, r"importing no_such_module_xyz failed \(ModuleNotFoundError"),
    (lambda t: {"name": "npz", "loader": "bad.py:load"}, r"data\.loader: a loader gives the data, but name is 'npz'"),
    (lambda t: {"name": "loader"}, r"data\.loader: name loader needs the function"),
], ids=["npz-missing", "npz-directory", "npz-not-zip", "npz-no-array", "npz-float-labels", "npz-text-features",
        "npz-nan", "npz-huge-integers", "npz-lengths", "npz-negative-label", "npz-test-label-unseen", "npz-empty-test", "npz-shapes",
        "npz-5d", "npz-too-many-classes", "npz-no-path", "path-with-builtin", "root-with-npz", "folder-classes",
        "folder-size", "folder-damaged", "folder-no-test", "folder-missing", "loader-syntax", "loader-missing",
        "loader-import-error", "loader-raises", "loader-returns-3", "loader-dict-short", "loader-lists",
        "loader-no-function", "loader-exits", "loader-no-module", "loader-with-name", "loader-name-alone"])
def test_bad_data_is_one_line(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


def test_pickled_arrays_are_refused_without_being_unpickled(tmp_path, capsys):
    given = arrays()
    given["train_x"] = np.array([object()] * 60, dtype=object)
    np.savez(tmp_path / "d.npz", **given)
    refused(tmp_path, capsys, {"name": "npz", "path": "d.npz"}, r"train_x holds Python objects, which fogsim does "
            r"not unpickle")


def test_too_big_is_refused_from_the_headers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_files, "MAX_DATA_BYTES", 500)
    refused(tmp_path, capsys, npz(tmp_path), r"d\.npz: its arrays hold more than 0 GiB, the most a dataset file")
    write_folder(tmp_path / "pics")
    refused(tmp_path, capsys, {"name": "folder", "path": "pics"}, r"pics: its images hold 768 bytes of pixels, at "
            r"most")


def test_a_loader_leaves_no_bytecode_beside_its_file(tmp_path, capsys):
    (tmp_path / "ok.py").write_text(LOADER)
    ran_one_round(["run", str(write_scenario(tmp_path, {"loader": "ok.py:load"})), "--out", str(tmp_path / "out"), *LOCAL],
        capsys)
    assert not (tmp_path / "__pycache__").exists()


def test_the_new_keys_are_described_by_fogsim_keys(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    for key in ("data.path", "data.loader"):
        assert key in out
