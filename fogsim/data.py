"""Datasets as in-memory tensors, loaded without network access unless the user asks for it.

Every dataset is small enough to hold in memory (Fashion-MNIST is about 220 MB as float32), so
a ``Dataset`` is just tensors: the simulator slices them into per-device shards itself and no
``DataLoader`` machinery or on-disk cache is needed. Images are standardised per channel with
the *training* mean and std, so the test set never leaks into the normalisation.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from fogsim.catalog import DATASETS
from fogsim.errors import FogsimError, shown


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_ROOT = Path("~/.cache/fogsim/data").expanduser()

_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MAX_IDX_BYTES = 1024**3  # the largest file of Fashion-MNIST or MNIST holds 47 MB
MAX_IDX_DIMS = 3         # images are (N, 28, 28), labels (N,)
MAX_PIXEL = 1e6          # a pixel stored as a float beyond this would overflow the standardisation
IDX_IMAGE_SHAPE = (28, 28)
# idx type codes (third magic byte) -> big-endian numpy dtype, per the MNIST file format spec.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class Dataset:
    """A classification dataset, train and test split, standardised by the training statistics.

    The training images stay in memory as they were read (bytes for the idx formats, float32
    otherwise) and are standardised when rows are taken (``train_rows``): a fleet's worker holds
    47 MB of Fashion-MNIST instead of 188 MB. ``train_x``, the whole standardised training set,
    is built on first use and kept. Both give the same bits: standardising is element-wise.

    ``ids`` holds, for a natural partition (``data.partition.by``), the id column it splits by: one id
    (an integer or a string) per training sample, as a numpy array; it is empty otherwise.
    """

    def __init__(self, name: str, train_raw: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, num_classes: int, mean: torch.Tensor, std: torch.Tensor,
                 ids: dict[str, np.ndarray] | None = None):
        self.name, self.num_classes = name, num_classes
        self.ids: dict[str, np.ndarray] = dict(ids or {})
        self.train_y, self.test_x, self.test_y = train_y, test_x, test_y
        self._train_raw, self._mean, self._std = train_raw, mean, std
        self._train_x: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``; what ``build_model`` needs."""
        return tuple(self._train_raw.shape[1:])

    def train_rows(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """The standardised training images at ``rows`` (an index tensor or a slice)."""
        return (self._train_raw[rows] - self._mean).div_(self._std)  # out of place: a slice is a view

    @property
    def train_x(self) -> torch.Tensor:
        """The whole standardised training set, (N, C, H, W) float32."""
        if self._train_x is None:
            self._train_x = self.train_rows(slice(None))
        return self._train_x

    def __reduce__(self):
        """Pickled as numpy arrays, which Ray's object store shares between the worker processes of a
        machine without a copy (read-only: nothing reads a dataset's tensors in place but to read)."""
        arrays = (self._train_raw, self.train_y, self.test_x, self.test_y, self._mean, self._std)
        return _from_arrays, (self.name, self.num_classes, *(t.numpy() for t in arrays), self.ids)


def _from_arrays(name: str, num_classes: int, train_raw: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 ids: dict[str, np.ndarray] | None = None) -> Dataset:
    """A ``Dataset`` on the arrays ``Dataset.__reduce__`` gave, sharing their memory."""
    with warnings.catch_warnings():  # arrays in Ray's shared memory are read-only, and PyTorch says so
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = [torch.from_numpy(a) for a in (train_raw, train_y, test_x, test_y)]
        return Dataset(name, t[0], t[1], t[2], t[3], num_classes, torch.from_numpy(mean), torch.from_numpy(std),
                       ids)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    loader: str | None = None,
    hub: str | None = None,
    features: str | list[str] | None = None,
    label: str | None = None,
    ids: str | None = None,
) -> Dataset:
    """Load dataset ``name``; ``seed`` fixes the digits split and the synthetic data.

    ``root`` and ``download`` only matter for the file-backed datasets (fashion-mnist, mnist,
    cifar10); ``download`` is passed to torchvision and is never used by the tests. The user's
    own data (``fogsim.data_files``): ``name`` npz or folder reads ``path``; a ``loader``
    (``"file.py:function"``, the file's path absolute, or ``"package.module:function"``) is
    called with ``seed``; ``name`` huggingface reads the dataset ``save_to_disk`` wrote at ``path``,
    or the hub dataset ``hub``, its ``features`` and ``label`` columns. ``ids`` names the id column a
    natural partition splits by (``Dataset.ids``): an npz file's array ``train_<ids>``, a loader's key
    ``train_<ids>``, a Hugging Face dataset's column; the built-in datasets and folders have none.
    """
    if ids is not None and loader is None and name not in ("npz", "huggingface"):
        from fogsim.data_files import IdsError

        raise IdsError(f"dataset {name} has no id column; natural partitions need an npz file's array "
                       "train_<by>, a loader's key train_<by> or a Hugging Face dataset's column")
    if loader is not None:
        from fogsim.data_files import as_dataset_arrays, load_with

        return as_dataset_arrays("loader", *load_with(loader, seed, ids))
    if name == "huggingface":
        from fogsim.data_files import as_dataset_arrays, load_huggingface

        if path is None and hub is None:
            raise FogsimError("dataset huggingface reads the folder at data.path or the hub id data.hub; give one")
        return as_dataset_arrays(name, *load_huggingface(path, hub, features, label, seed, ids))
    if name in ("npz", "folder"):
        from fogsim.data_files import as_dataset_arrays, load_folder, load_npz

        if path is None:
            raise FogsimError(f"dataset {name} reads the file at data.path; give one")
        if name == "npz":
            return as_dataset_arrays(name, *load_npz(path, ids))
        return as_dataset_arrays(name, load_folder(path))
    if name == "digits":
        return _load_digits(seed)
    if name == "synthetic":
        return _load_synthetic(seed)
    if name == "fashion-mnist":
        return _load_fashion_mnist(root, download)
    if name == "mnist":
        return _load_mnist(root, download)
    if name == "cifar10":
        return _load_cifar10(root, download)
    raise FogsimError(f"Unknown dataset {shown(name)}: choose one of {', '.join(DATASETS)}.")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (the MNIST format), gzip-compressed if its name ends in ``.gz``.

    Our own reader rather than torchvision's so that Debian's ``.gz`` files are read in place
    (torchvision wants them extracted) and a damaged file is reported by name. The header is read
    first and the data only up to the size it promises, at most ``MAX_IDX_BYTES``: a huge,
    endless or decompression-bomb file is refused without being read into memory.
    """
    path = Path(path)
    try:
        with _open_regular(path) as file:
            stream = gzip.GzipFile(fileobj=file) if path.suffix == ".gz" else file
            head = stream.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise FogsimError(f"{path} is not an idx file (bad magic number): replace it with an intact copy.")
            dtype, ndim = _IDX_DTYPES[head[2]], head[3]
            if not 1 <= ndim <= MAX_IDX_DIMS:
                raise FogsimError(f"{path} declares {ndim} dimensions, a dataset's idx files have 1 to "
                                  f"{MAX_IDX_DIMS}: replace it with an intact copy.")
            sizes = stream.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise FogsimError(f"{path} is truncated inside its header: replace it with an intact copy.")
            dims = struct.unpack(f">{ndim}I", sizes)
            expected = math.prod(dims) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise FogsimError(f"{path}: its header promises {expected} bytes of data, more than the "
                                  f"{MAX_IDX_BYTES // 1024**3} GiB an idx file may hold: replace it with an intact "
                                  "copy.")
            raw = _read_at_most(stream, expected + 1)
    except OSError as exc:  # gzip's BadGzipFile is an OSError too
        reason = "not gzip data, or damaged" if isinstance(exc, gzip.BadGzipFile) else exc.strerror or "read error"
        raise FogsimError(f"Cannot read {path} ({reason}): replace it with an intact copy.") from None
    except (EOFError, zlib.error):
        raise FogsimError(f"Cannot read {path} (its compressed data is cut short or damaged): replace it with an "
                          "intact copy.") from None
    if len(raw) < expected:
        raise FogsimError(f"{path} holds {len(raw)} bytes of data but its header promises {expected}: "
                          "replace it with an intact copy.")
    if len(raw) > expected:
        raise FogsimError(f"{path} holds more than the {expected} bytes of data its header promises: "
                          "replace it with an intact copy.")
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def _read_at_most(stream, size: int, chunk: int = 16 * 1024**2) -> bytes:
    """Up to ``size`` bytes, read in chunks: memory grows with the data found, not with what a header claims."""
    parts, held = [], 0
    while held < size:
        part = stream.read(min(chunk, size - held))
        if not part:
            break
        parts.append(part)
        held += len(part)
    return b"".join(parts)


def _open_regular(path: Path):
    """``path`` opened for reading if it is a regular file; a pipe or a device would never end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except ValueError:  # a NUL character in the path
        raise FogsimError(f"Cannot read {path}: a path cannot contain a NUL character.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FogsimError(f"Cannot read {path}: it is not a regular file; give the idx file itself.")
    return os.fdopen(fd, "rb")


def _one_line(exc: BaseException) -> str:
    """torchvision's download errors span several lines; a FogsimError is printed as one."""
    return " ".join(str(exc).split())


def _standardised(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                  test_y: np.ndarray, num_classes: int, ids: dict[str, np.ndarray] | None = None) -> Dataset:
    """Build a ``Dataset`` from (N, C, H, W) images or (N, F) features, standardising by the training
    statistics: images per channel, features per feature (each reduced over every axis but the second)."""
    # Bytes are kept as bytes (exactly representable in float32, so rows taken later standardise
    # to the same bits); anything else as a float32 copy, never the caller's array.
    keep = np.uint8 if np.asarray(train_x).dtype == np.uint8 else np.float32
    raw = torch.from_numpy(np.array(train_x, dtype=keep))
    whole = raw.to(torch.float32)  # the statistics are those of the float32 set, reduced as one tensor
    axes = (0, *range(2, whole.dim()))  # (0, 2, 3) for images
    mean = whole.mean(dim=axes, keepdim=True)
    std = whole.std(dim=axes, keepdim=True).clamp_min(1e-8)  # a constant channel stays finite
    del whole
    test = torch.from_numpy(np.array(test_x, dtype=np.float32))
    return Dataset(
        name=name,
        train_raw=raw,
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_x=test.sub_(mean).div_(std),
        test_y=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        num_classes=num_classes,
        mean=mean,
        std=std,
        ids=ids,
    )


def _load_digits(seed: int) -> Dataset:
    """scikit-learn's 8x8 digits with a stratified 80/20 split, so every class is in both halves."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images[:, None, :, :]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=seed
    )
    return _standardised("digits", train_x, train_y, test_x, test_y, 10)


def _load_synthetic(seed: int, num_classes: int = 10, n_train: int = 1000, n_test: int = 200,
                    noise: float = 2.0) -> Dataset:
    """Gaussian class prototypes plus noise: learnable (about 98% Bayes accuracy) and instant."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(num_classes, 1, 8, 8))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % num_classes)
        return prototypes[labels] + noise * rng.normal(size=(n, 1, 8, 8)), labels

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    return _standardised("synthetic", train_x, train_y, test_x, test_y, num_classes)


def _idx_files(directory: Path) -> tuple[list[Path], str | None]:
    """The four idx files in ``directory`` (plain preferred over ``.gz``), or the first one missing."""
    found = []
    for stem in _IDX_STEMS:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return [], f"{stem}[.gz]"
        found.append(path)
    return found, None


def _from_idx_files(name: str, files: list[Path]) -> Dataset:
    train_x, train_y, test_x, test_y = (read_idx(p) for p in files)
    for images, labels, image_file in ((train_x, train_y, files[0]), (test_x, test_y, files[2])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise FogsimError(
                f"{image_file} holds images of shape {images.shape} for {labels.shape} labels: "
                "the idx files do not belong together, replace them with one consistent set."
            )
        if not len(images):
            raise FogsimError(f"{image_file} holds no images: replace it with an intact copy.")
        if images.shape[1:] != IDX_IMAGE_SHAPE:
            raise FogsimError(f"{image_file} holds images of {images.shape[1]}x{images.shape[2]} pixels but {name} "
                              "images are 28x28: replace it with an intact copy.")
        if images.dtype.kind == "f" and not (np.isfinite(images).all() and np.abs(images).max() <= MAX_PIXEL):
            raise FogsimError(f"{image_file} holds pixel values that are not finite or beyond {MAX_PIXEL:g}: "
                              "replace it with an intact copy.")
    for labels, label_file in ((train_y, files[1]), (test_y, files[3])):
        if labels.dtype.kind not in "iu":
            raise FogsimError(f"{label_file} holds labels that are not integers: replace it with an intact copy.")
        if int(labels.min()) < 0 or int(labels.max()) >= 10:
            wrong = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise FogsimError(f"{label_file} holds label {wrong} but {name} has 10 classes (0 to 9): "
                              "replace it with an intact copy.")
    return _standardised(name, train_x[:, None], train_y, test_x[:, None], test_y, 10)


def _load_idx_dataset(name: str, title: str, tv_class: str, root: Path, download: bool) -> Dataset:
    """Find the idx files in ``root`` or its torchvision layout, downloading there on request.

    torchvision is used only to download, and imported only then (importing it costs seconds,
    which every simulation worker would pay): the files are always read by ``read_idx``, so the
    plain-directory and torchvision-root cases give the same tensors and the same errors.
    ``tv_class`` names torchvision's dataset class, whose name is also its folder in a root.
    """
    raw = root / tv_class / "raw"
    for directory in (root, raw):
        files, _ = _idx_files(directory)
        if files:
            return _from_idx_files(name, files)
    if download:
        import torchvision.datasets

        try:
            getattr(torchvision.datasets, tv_class)(str(root), train=False, download=True)  # all four files
        except (RuntimeError, OSError) as exc:
            raise FogsimError(f"Downloading {title} into {root} failed ({_one_line(exc)}): check the "
                              "network connection or fetch the idx files by hand.") from exc
        files, missing = _idx_files(raw)
    else:
        files, missing = _idx_files(root)
    if not files:
        raise FogsimError(f"{title} not found at {root} (no {missing}): pass --data-root DIR holding "
                          "the idx files, or a torchvision root with --download.")
    return _from_idx_files(name, files)


def _load_fashion_mnist(root: str | os.PathLike | None, download: bool) -> Dataset:
    """Debian's package by default, else a directory of idx files or a torchvision root."""
    if root is None:
        files, _ = _idx_files(DEBIAN_FASHION_MNIST)
        if files:
            return _from_idx_files("fashion-mnist", files)
        if not download:
            raise FogsimError(
                f"Fashion-MNIST not found at {DEBIAN_FASHION_MNIST}: install Debian's package with "
                "`apt-get install dataset-fashion-mnist`, or pass --data-root DIR holding the idx "
                "files, or a torchvision root with --download."
            )
    return _load_idx_dataset("fashion-mnist", "Fashion-MNIST", "FashionMNIST",
                             Path(root or DEFAULT_ROOT).expanduser(), download)


def _load_mnist(root: str | os.PathLike | None, download: bool) -> Dataset:
    return _load_idx_dataset("mnist", "MNIST", "MNIST", Path(root or DEFAULT_ROOT).expanduser(), download)


def _load_cifar10(root: str | os.PathLike | None, download: bool) -> Dataset:
    """CIFAR-10 through torchvision, which checks every batch file against its md5."""
    from torchvision.datasets import CIFAR10

    root = Path(root or DEFAULT_ROOT).expanduser()
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as exc:  # torchvision's "not found or corrupted" (an md5 mismatch)
        raise FogsimError(
            f"CIFAR-10 not found or corrupted at {root / CIFAR10.base_folder}: pass --data-root DIR "
            "holding cifar-10-batches-py, or add --download to fetch it there."
        ) from exc
    except OSError as exc:  # a failed download or an unreadable directory
        raise FogsimError(f"Cannot load CIFAR-10 at {root} ({_one_line(exc)}): check the network "
                          "connection and the directory's permissions.") from exc
    # torchvision keeps CIFAR as (N, H, W, C) uint8; models want (N, C, H, W).
    return _standardised("cifar10", train.data.transpose(0, 3, 1, 2), train.targets,
                         test.data.transpose(0, 3, 1, 2), test.targets, len(train.classes))
