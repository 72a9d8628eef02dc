"""Natural partitions and Hugging Face datasets (issue 20, items 4 and 3).

``partition: {kind: natural, by: COLUMN}`` gives each device the samples of one value of an id
column (a writer, a user, a sensor): an npz file's array ``train_<COLUMN>``, a loader's key
``train_<COLUMN>``, a Hugging Face dataset's column. ``data: {name: huggingface, path: ...}`` reads a
dataset ``save_to_disk`` wrote, offline. Everything here is written by the tests; nothing is
downloaded. Bad input is one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from fogsim.cli import main
from fogsim.data import load_dataset
from fogsim.sim.outputs import read_rows
from fogsim.sim.partition import natural_split
from fogsim.sim.run import prepare
from inprocess import ran_one_round, refused as refused_run

BASE = {"name": "t", "model": "mlp-small", "rounds": 1, "training": {"batch_min": 8},
        "fleet": [{"profile": "rpi4", "count": 2}, {"profile": "esp32-s3"}], "simulation": {"engine": "local"}}
NATURAL = {"kind": "natural", "by": "writer"}
WRITERS = 7


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # nothing here may download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def samples(n: int = 90, n_train: int = 60, seed: int = 0, writers: int = WRITERS):
    """Learnable features (shifted by their label), labels 0..2, and writer ids w0..w6 (unequal shares)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 6)).astype(np.float32) + y[:, None]
    w = np.array([f"w{min(i % (writers + 2), writers - 1)}" for i in range(n)])
    return x[:n_train], y[:n_train], w[:n_train], x[n_train:], y[n_train:], w[n_train:]


def write_npz(folder: Path, ids=None, **changes) -> dict:
    train_x, train_y, train_w, test_x, test_y, _ = samples()
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
              "train_writer": train_w if ids is None else ids, **changes}
    np.savez(folder / "d.npz", **{k: v for k, v in arrays.items() if v is not None})
    return {"name": "npz", "path": "d.npz"}


def write_hf(folder: Path, name: str = "hf", split: bool = True, **columns) -> Path:
    import datasets

    train_x, train_y, train_w, test_x, test_y, test_w = samples()
    train = {"feat": train_x.tolist(), "label": train_y.tolist(), "writer": train_w.tolist()}
    test = {"feat": test_x.tolist(), "label": test_y.tolist(), "writer": test_w.tolist()}
    train.update(columns)
    if split:
        saved = datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                                      "test": datasets.Dataset.from_dict(test)})
    else:
        saved = datasets.Dataset.from_dict({k: train[k] + test.get(k, [None] * len(test_x)) for k in train})
    datasets.disable_progress_bars()
    saved.save_to_disk(str(folder / name))
    return folder / name


def write_scenario(folder: Path, data: dict, name: str = "s.yaml", **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump({**BASE, "data": data, **changes}))
    return folder / name


def partitions_of(scenario: Path):
    prepared = prepare(scenario)
    by = prepared.scenario.data.partition.by
    return prepared.spec.partitions, prepared.data.ids[by]


def assert_one_id_each(parts, ids: np.ndarray) -> list:
    """Every device holds all the training samples of one id, and only those; the ids it got, in device order."""
    got = []
    for device in range(len(parts)):
        rows = parts[device]
        held = set(ids[rows].tolist())
        assert len(held) == 1, f"device {device} holds ids {held}"
        (writer,) = held
        assert sorted(rows.tolist()) == np.flatnonzero(ids == writer).tolist()
        got.append(writer)
    assert len(set(got)) == len(got), "two devices share an id"
    return got


# --- each form, end to end --------------------------------------------------------------------

def test_an_npz_natural_partition_gives_each_device_one_writer_and_runs(tmp_path, capsys):
    s = write_scenario(tmp_path, {**write_npz(tmp_path), "partition": NATURAL})
    parts, ids = partitions_of(s)
    writers = assert_one_id_each(parts, ids)
    out = ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    sizes = {int(r["client_id"]): int(r["num_examples"]) for r in read_rows(out / "clients.csv")}
    assert sizes == {d: int((ids == w).sum()) for d, w in enumerate(writers)}
    assert yaml.safe_load((out / "scenario.yaml").read_text())["data"]["partition"] == {
        **NATURAL, "alpha": 0.5, "shards_per_device": 2, "min_size": 10, "per_device": None}
    assert capsys.readouterr().err == ""


def test_integer_ids_and_a_loader_key_work_as_well(tmp_path, capsys):
    (tmp_path / "npz").mkdir()
    ids = np.array([i % 5 * 10 for i in range(60)])
    s = write_scenario(tmp_path / "npz", {**write_npz(tmp_path / "npz", ids=ids), "partition": NATURAL})
    assert set(assert_one_id_each(*partitions_of(s))) <= {0, 10, 20, 30, 40}
    (tmp_path / "load.py").write_text(
        "import numpy as np\n\n\ndef load(seed):\n    rng = np.random.default_rng(seed)\n"
        "    y = np.arange(80) % 2\n    x = rng.normal(size=(80, 4)).astype(np.float32) + y[:, None]\n"
        "    return {'train_x': x[:60], 'train_y': y[:60], 'test_x': x[60:], 'test_y': y[60:],\n"
        "            'train_writer': np.arange(60) % 4}\n")
    s = write_scenario(tmp_path, {"loader": "load.py:load", "partition": NATURAL})
    parts, ids = partitions_of(s)
    assert_one_id_each(parts, ids)
    ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), "--quiet"], capsys)


def test_a_saved_hugging_face_dataset_runs_with_natural_partitions_and_its_hash_recorded(tmp_path, capsys):
    from fogsim.data_files import hf_digest

    saved = write_hf(tmp_path / "data")
    s = write_scenario(tmp_path / "scenarios", {"name": "huggingface", "path": "../data/hf", "partition": NATURAL})
    parts, ids = partitions_of(s)
    assert_one_id_each(parts, ids)
    out = ran_one_round(["run", str(s), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert capsys.readouterr().err == ""
    size, sha256 = hf_digest(saved)
    assert json.loads((out / "run.json").read_text())["data"] == [{"path": str(saved), "bytes": size,
                                                                   "sha256": sha256}]
    assert main(["validate", str(out / "scenario.yaml")]) == 0
    (saved / "train" / "state.json").write_text((saved / "train" / "state.json").read_text() + " ")
    assert hf_digest(saved)[1] != sha256


def test_the_natural_split_is_flower_datasets_natural_id_partitioner_dealt_in_a_seeded_order():
    from datasets import Dataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    ids = samples()[2]
    partitioner = NaturalIdPartitioner(partition_by="writer")
    partitioner.dataset = Dataset.from_dict({"writer": ids.tolist(), "index": list(range(len(ids)))})
    flower = {partitioner.partition_id_to_natural_id[i]: partitioner.load_partition(i)["index"]
              for i in range(partitioner.num_partitions)} if partitioner.num_partitions else {}
    split = natural_split(ids, WRITERS, seed=3)
    assert sorted(split.sizes().tolist()) == sorted(len(v) for v in flower.values())
    for device in range(WRITERS):
        rows = split[device]
        assert rows.tolist() == flower[ids[rows[0]]]  # the partitioner's rows, in its order
    again = natural_split(ids, WRITERS, seed=3)
    assert all(np.array_equal(split[d], again[d]) for d in range(WRITERS))
    orders = {tuple(ids[natural_split(ids, WRITERS, seed=s)[d][0]] for d in range(WRITERS)) for s in range(6)}
    assert len(orders) > 1, "the seed deals the ids"


def test_fewer_devices_than_ids_leave_a_seeded_choice_of_ids_out(tmp_path):
    ids = samples()[2]
    chosen = {seed: [ids[natural_split(ids, 3, seed)[d][0]] for d in range(3)] for seed in range(8)}
    assert all(len(set(c)) == 3 for c in chosen.values())
    assert chosen[1] == [ids[natural_split(ids, 3, 1)[d][0]] for d in range(3)]  # the same for a seed
    assert len({tuple(c) for c in chosen.values()}) > 1
    full = natural_split(ids, WRITERS, seed=5)
    assert all(np.array_equal(natural_split(ids, 3, seed=5)[d], full[d]) for d in range(3)), \
        "a smaller fleet takes the first ids of the same seeded order"
    s = write_scenario(tmp_path, {**write_npz(tmp_path), "partition": NATURAL})
    parts, ids = partitions_of(s)
    assert len(parts) == 3 and sum(parts.sizes()) < len(ids)


def test_an_image_column_and_a_single_dataset_split_80_20_by_seed(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(np.clip(rng.normal(80 + 80 * (i % 2), 20, (6, 5)), 0, 255).astype(np.uint8), "L")
              for i in range(50)]
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"img": images, "y": [i % 2 for i in range(50)], "user": [i % 4 for i in range(50)]},
                               features=datasets.Features({"img": datasets.Image(), "y": datasets.Value("int64"),
                                                           "user": datasets.Value("int64")})
                               ).save_to_disk(str(tmp_path / "pics"))
    data = load_dataset("huggingface", path=tmp_path / "pics", label="y", ids="user", seed=1)
    assert data.input_shape == (1, 6, 5) and data.num_classes == 2
    assert len(data.train_y) == 40 and len(data.test_y) == 10
    assert data.ids["user"].shape == (40,) and set(data.ids["user"].tolist()) == {0, 1, 2, 3}
    other = load_dataset("huggingface", path=tmp_path / "pics", label="y", seed=2)
    assert not np.array_equal(data.train_y.numpy(), other.train_y.numpy()) or \
        not np.array_equal(data.test_x.numpy(), other.test_x.numpy())
    again = pickle.loads(pickle.dumps(data))  # Ray's object store pickles it
    assert np.array_equal(again.ids["user"], data.ids["user"]) and again.input_shape == data.input_shape


def test_numeric_columns_stack_into_features(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    datasets.Dataset.from_dict({"a": rng.normal(size=40).tolist(), "b": rng.normal(size=40).tolist(),
                                "label": [i % 2 for i in range(40)]}).save_to_disk(str(tmp_path / "tab"))
    data = load_dataset("huggingface", path=tmp_path / "tab", features=["a", "b"])
    assert data.input_shape == (2,) and len(data.train_y) == 32


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def refused(tmp: Path, capsys, data: dict, message: str, **changes) -> str:
    return refused_run(tmp, capsys, ["run", str(write_scenario(tmp, data, **changes)), "--out", str(tmp / "out"),
                                     "--quiet"], message)


def _loader(tmp: Path, writer: str) -> dict:
    (tmp / "bad.py").write_text(
        "import numpy as np\n\n\ndef load(seed):\n    y = np.arange(40) % 2\n    x = np.ones((40, 3)) + y[:, None]\n"
        f"    return {{'train_x': x[:30], 'train_y': y[:30], 'test_x': x[30:], 'test_y': y[30:]{writer}}}\n")
    return {"loader": "bad.py:load", "partition": NATURAL}


@pytest.mark.parametrize("build, message", [
    (lambda t: {"name": "digits", "partition": NATURAL},
     r"data: partition kind natural splits by an id column, which digits has none of; ids come with name "
     r"npz"),
    (lambda t: {"name": "folder", "path": "pics", "partition": NATURAL}, r"which folder has none of"),
    (lambda t: {**write_npz(t), "partition": {"kind": "natural"}}, r"data\.partition\.by: kind natural splits by "
                                                                    r"an id column: give by: COLUMN"),
    (lambda t: {**write_npz(t), "partition": {"kind": "iid", "by": "writer"}}, r"only kind natural splits by a "
                                                                               r"column"),
    (lambda t: {**write_npz(t), "partition": {**NATURAL, "per_device": 5}}, r"natural split the set and cannot be "
                                                                            r"drawn per device"),
    (lambda t: {**write_npz(t), "partition": {**NATURAL, "by": "user"}},
     r"data\.partition\.by: .*d\.npz: no array train_user for data\.partition\.by \(ids it holds: writer\)"),
    (lambda t: {**write_npz(t, ids=np.arange(59)), "partition": NATURAL},
     r"data\.partition\.by: .*train_writer holds 59 ids but the training split 60 samples"),
    (lambda t: {**write_npz(t, ids=np.linspace(0, 1, 60)), "partition": NATURAL},
     r"train_writer holds float64 values; ids are integers or strings"),
    (lambda t: {**write_npz(t, ids=np.zeros((60, 2), dtype=int)), "partition": NATURAL},
     r"train_writer has shape \(60, 2\)"),
    (lambda t: _loader(t, ""), r"loader .*bad\.py:load: no key train_writer for data\.partition\.by \(ids it "
                               r"returns: none\)"),
    (lambda t: _loader(t, ", 'train_writer': [1] * 30"), r"train_writer is a list, not a numpy array"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t)), "partition": {**NATURAL, "by": "user"}},
     r"data\.partition\.by: .*hf: no column 'user' \(columns: feat, label, writer\)"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t, writer=[None] + ["a"] * 59)), "partition": NATURAL},
     r"data\.partition\.by: .*1 training samples have no writer \(None\)"),
])
def test_bad_natural_partitions_are_one_line(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


def test_more_devices_than_ids_is_refused_saying_how_many_there_are(tmp_path, capsys):
    refused(tmp_path, capsys, {**write_npz(tmp_path), "partition": NATURAL},
            r"fleet: 9 devices but the id column writer has only 7 ids, one per device with kind natural; use at "
            r"most 7 devices", fleet=[{"profile": "rpi4", "count": 9}])


@pytest.mark.parametrize("build, message", [
    (lambda t: {"name": "huggingface"}, r"data: name huggingface reads a dataset saved with save_to_disk"),
    (lambda t: {"name": "huggingface", "path": "nowhere"}, r"data\.path: .*nowhere: not a directory"),
    (lambda t: {"name": "huggingface", "path": "."}, r"data\.path: .*: not a saved Hugging Face dataset"),
    (lambda t: {"name": "huggingface", "path": "hf", "hub": "a/b"}, r"data\.hub: give data\.path .* or data\.hub"),
    (lambda t: {"name": "npz", "path": "d.npz", "hub": "a/b"}, r"data\.hub: only name huggingface reads a hub"),
    (lambda t: {"name": "npz", "path": "d.npz", "label": "y"}, r"data\.label: only name huggingface has columns"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t)), "label": "y"},
     r"hf: no label column 'y' \(columns: feat, label, writer\); name it as data\.label"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t)), "features": "pixels"},
     r"hf: no column 'pixels' for data\.features"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t, other=[[1.0]] * 60))},
     r"hf: array columns feat, other .*name the feature column\(s\) as data\.features"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t, label=[-1] * 60))},
     r"hf: train_y holds label -1; labels are 0 to K-1: set data\.features and data\.label"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t, label=[None] * 60))},
     r"hf: 60 train samples have no label \(None\)"),
    (lambda t: {"name": "huggingface", "path": str(write_hf(t, feat=[[1.0, 2.0]] * 59 + [[1.0]]))},
     r"column 'feat' .*(different shapes|same shape)"),
])
def test_bad_hugging_face_data_is_one_line(tmp_path, capsys, build, message):
    refused(tmp_path, capsys, build(tmp_path), message)


def test_the_new_keys_are_described_by_fogsim_keys(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    for key in ("data.hub", "data.features", "data.label", "data.partition.by"):
        assert key in out
    assert "natural" in out
