"""Dataset loading: real bundled data, files the tests write in each real format, and every error.

Nothing here downloads: MNIST, Fashion-MNIST and CIFAR-10 are exercised on tiny files in
their real on-disk formats, and the real Fashion-MNIST only where Debian's package is installed.
"""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fogsim import data
from fogsim.data import DATASETS, load_dataset, read_idx
from fogsim.errors import FogsimError

IDX_TYPE = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` in the idx format, gzip-compressed when ``path`` ends in .gz."""
    header = bytes([0, 0, IDX_TYPE[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist_like(directory: Path, n_train: int = 30, n_test: int = 10, gz: bool = False,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny MNIST-format dataset in ``directory``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(directory / (stem + (".gz" if gz else "")), array)
    return arrays


def assert_standardised_images(ds, n_train, n_test, shape):
    assert ds.train_x.shape == (n_train, *shape) and ds.test_x.shape == (n_test, *shape)
    assert ds.train_x.dtype == torch.float32 and ds.test_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert ds.train_y.shape == (n_train,) and ds.test_y.shape == (n_test,)
    assert ds.input_shape == shape
    channel_mean = ds.train_x.mean(dim=(0, 2, 3))
    channel_std = ds.train_x.std(dim=(0, 2, 3))
    assert torch.allclose(channel_mean, torch.zeros_like(channel_mean), atol=1e-4)
    assert torch.allclose(channel_std, torch.ones_like(channel_std), atol=1e-4)


def assert_one_sentence(error: pytest.ExceptionInfo, *fragments: str):
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# --- digits and synthetic -------------------------------------------------------------------

def test_digits_shapes_dtypes_and_stratified_split():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert len(ds.test_y) == 360  # 20%, rounded up by scikit-learn
    assert_standardised_images(ds, 1437, 360, (1, 8, 8))
    assert torch.equal(torch.unique(ds.test_y), torch.arange(10))


def test_digits_split_is_deterministic_by_seed():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.test_y, c.test_y)


def test_synthetic_is_deterministic_by_seed_and_differs_across_seeds():
    a, b, c = load_dataset("synthetic", seed=1), load_dataset("synthetic", seed=1), load_dataset("synthetic", seed=2)
    assert_standardised_images(a, 1000, 200, (1, 8, 8))
    assert a.num_classes == 10
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.train_x, c.train_x)


def test_synthetic_is_learnable():
    """Nearest class mean of the training set already classifies the test set well."""
    ds = load_dataset("synthetic")
    means = torch.stack([ds.train_x[ds.train_y == k].flatten(1).mean(0) for k in range(10)])
    predicted = torch.cdist(ds.test_x.flatten(1), means).argmin(1)
    assert (predicted == ds.test_y).float().mean() > 0.9


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(FogsimError) as error:
        load_dataset("imagenet")
    assert_one_sentence(error, "imagenet", *DATASETS)


# --- the idx reader -------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_plain_and_gzip(tmp_path, suffix):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    wide = np.array([[1, -2], [70000, 3]], dtype=np.int32)  # multi-byte: checks the byte order
    assert np.array_equal(read_idx(write_idx(tmp_path / f"a{suffix}", images)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"b{suffix}", wide)), wide)


def corrupt_files(tmp_path: Path) -> list[Path]:
    good = write_idx(tmp_path / "good", np.zeros((4, 5, 5), np.uint8)).read_bytes()
    files = {
        "bad-magic": b"\x08\x03" + good[2:],
        "truncated-data": good[:-7],
        "truncated-header": good[:6],
        "empty": b"",
    }
    paths = [tmp_path / name for name in files]
    for path, content in zip(paths, files.values()):
        path.write_bytes(content)
    truncated_gz = tmp_path / "truncated.gz"
    truncated_gz.write_bytes(gzip.compress(good)[:-20])
    not_gz = tmp_path / "not-gzip.gz"
    not_gz.write_bytes(good)
    return [*paths, truncated_gz, not_gz]


def test_read_idx_names_a_corrupt_file(tmp_path):
    for path in corrupt_files(tmp_path):
        with pytest.raises(FogsimError) as error:
            read_idx(path)
        assert_one_sentence(error, str(path))


# --- Fashion-MNIST and MNIST ----------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_a_directory_of_idx_files(tmp_path, gz):
    arrays = write_mnist_like(tmp_path, gz=gz)
    ds = load_dataset("fashion-mnist", root=tmp_path)
    assert ds.name == "fashion-mnist" and ds.num_classes == 10
    assert_standardised_images(ds, 30, 10, (1, 28, 28))
    assert np.array_equal(ds.train_y.numpy(), arrays["train-labels-idx1-ubyte"])
    # Standardisation is affine and increasing, so pixel order within an image is kept.
    assert np.array_equal(ds.test_x[3, 0].flatten().argsort(stable=True).numpy(),
                          arrays["t10k-images-idx3-ubyte"][3].flatten().argsort(kind="stable"))


@pytest.mark.parametrize("name", ["fashion-mnist", "digits"])
def test_rows_are_standardised_when_taken_with_the_bits_of_the_whole_set(tmp_path, name):
    """Bytes stay bytes in memory (a quarter of float32); rows taken standardise to the same
    bits as the whole set standardised at once, whether an index or a slice, and taking rows
    never changes what is held."""
    write_mnist_like(tmp_path, n_train=50)
    ds = load_dataset(name, root=tmp_path)
    raw = ds._train_raw
    assert raw.dtype == (torch.uint8 if name == "fashion-mnist" else torch.float32)
    before = raw.clone()
    rows = torch.tensor([7, 3, 3, 0, len(raw) - 1])
    taken, sliced = ds.train_rows(rows), ds.train_rows(slice(2, 9))
    assert torch.equal(raw, before)
    whole = (raw.to(torch.float64 if name == "digits" else torch.float32).to(torch.float32) - ds._mean) / ds._std
    assert torch.equal(ds.train_x, whole) and ds.train_x is ds.train_x
    assert torch.equal(taken, ds.train_x[rows]) and torch.equal(sliced, ds.train_x[2:9])
    assert taken.dtype == torch.float32 and ds.input_shape == tuple(raw.shape[1:])


def test_fashion_mnist_with_a_missing_file_says_which(tmp_path):
    write_mnist_like(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FogsimError) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    assert_one_sentence(error, str(tmp_path), "t10k-labels-idx1-ubyte", "--download")


def test_fashion_mnist_with_a_corrupt_file_names_it(tmp_path):
    write_mnist_like(tmp_path, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])
    with pytest.raises(FogsimError) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    assert_one_sentence(error, str(images))


def test_fashion_mnist_with_mismatched_files_says_so(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(FogsimError) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    assert_one_sentence(error, "train-images-idx3-ubyte", "do not belong together")


def test_fashion_mnist_without_the_debian_package_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(FogsimError) as error:
        load_dataset("fashion-mnist")
    assert_one_sentence(error, str(tmp_path / "absent"), "apt-get install dataset-fashion-mnist",
                        "--data-root", "--download")


def test_fashion_mnist_from_a_torchvision_root(tmp_path):
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=True)
    assert_standardised_images(load_dataset("fashion-mnist", root=tmp_path), 30, 10, (1, 28, 28))


@pytest.mark.realdata
@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({data.DEBIAN_FASHION_MNIST} absent)")
def test_real_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist")
    assert_standardised_images(ds, 60000, 10000, (1, 28, 28))
    assert torch.equal(torch.bincount(ds.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.test_y), torch.full((10,), 1000))


def test_mnist_from_a_torchvision_root_matches_torchvision(tmp_path):
    """Files torchvision itself accepts as an MNIST root (uncompressed, in MNIST/raw)."""
    from torchvision.datasets import MNIST

    write_mnist_like(tmp_path / "MNIST" / "raw", n_train=20, n_test=12, seed=5)
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.name == "mnist"
    assert_standardised_images(ds, 20, 12, (1, 28, 28))
    reference = MNIST(str(tmp_path), train=False)
    assert torch.equal(ds.test_y, reference.targets)
    assert torch.equal(ds.test_x[:, 0].argsort(dim=-1, stable=True),
                       reference.data.float().argsort(dim=-1, stable=True))


def test_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FogsimError) as error:
        load_dataset("mnist", root=tmp_path)
    assert_one_sentence(error, "MNIST not found", str(tmp_path), "--data-root", "--download")


# --- CIFAR-10 -------------------------------------------------------------------------------

def test_cifar10_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FogsimError) as error:
        load_dataset("cifar10", root=tmp_path)
    assert_one_sentence(error, "CIFAR-10", str(tmp_path), "--data-root", "--download")


def test_cifar10_from_batch_files(tmp_path, monkeypatch):
    """torchvision checks each batch's md5, so tiny fake batches need that check switched off."""
    from torchvision.datasets import CIFAR10, cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / CIFAR10.base_folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = {}
    for filename, _ in CIFAR10.train_list + CIFAR10.test_list:
        # One row per image: the 1024 red, then green, then blue values; give each channel its own range.
        rows[filename] = rng.integers(0, 80, (4, 3072), dtype=np.uint8) + np.repeat([0, 80, 160], 1024).astype(np.uint8)
        with open(folder / filename, "wb") as f:
            pickle.dump({"data": rows[filename], "labels": list(range(4))}, f)
    with open(folder / CIFAR10.meta["filename"], "wb") as f:
        pickle.dump({CIFAR10.meta["key"]: [f"class{k}" for k in range(10)]}, f)

    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.num_classes == 10
    assert_standardised_images(ds, 20, 4, (3, 32, 32))
    expected = rows["test_batch"].reshape(4, 3, 32, 32).astype(np.float32)
    train = np.concatenate([rows[f] for f, _ in CIFAR10.train_list]).reshape(20, 3, 32, 32).astype(np.float32)
    mean, std = train.mean(axis=(0, 2, 3), keepdims=True), train.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    assert np.allclose(ds.test_x.numpy(), (expected - mean) / std, atol=1e-4)
