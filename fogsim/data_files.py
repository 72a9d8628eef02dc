"""Datasets from the user's own files: an npz file, a folder of images per class, or a loader function.

Each form ends in the same four numpy arrays, checked by ``check_arrays`` (dtypes, shapes, lengths,
label range, size) before a ``Dataset`` is built, and every problem is one line that names the
file or the loader and says how to fix it. Samples are images ``N x H x W`` (one channel) or
``N x C x H x W``, or flat feature vectors ``N x F``; labels are integers ``0 .. K-1``, ``K``
being one more than the largest label of either split. Nothing is unpickled: npz files are read
with ``allow_pickle=False`` after their headers are checked, images are decoded by Pillow.

Paths given here are absolute (``run.prepare`` resolves them against the scenario file's folder).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import re
import stat
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fogsim.errors import FogsimError, brief, error_text, shown, shown_path

KEYS = ("train_x", "train_y", "test_x", "test_y")
MAX_DATA_BYTES = 4 * 1024**3   # the four arrays together, as stored (an npz file's headers are checked first)
MAX_CLASSES = 100_000          # the model's output layer has one unit per class
MAX_FOLDER_FILES = 1_000_000   # images in a folder dataset; each is opened twice (its size, then its pixels)
MAX_LOADER_BYTES = 16 * 1024**2  # a loader file is code
MAX_VALUE = 1e6                # a feature beyond this would overflow the standardisation (as data.MAX_PIXEL)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LOADER = re.compile(r"(?P<target>.+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)")
_NPZ_FIX = "save the arrays train_x, train_y, test_x, test_y with numpy.savez"


# --- the checks every form passes ----------------------------------------------------------------

def check_arrays(source: str, arrays: dict, fix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(train_x, train_y, test_x, test_y, num_classes)`` from ``arrays`` (the four ``KEYS``), or a
    ``FogsimError`` naming ``source`` and ending with ``fix``. Images ``N x H x W`` get a channel axis."""
    def refuse(problem: str) -> FogsimError:
        return FogsimError(f"{source}: {problem}: {fix}")

    for key in KEYS:
        if not isinstance(arrays.get(key), np.ndarray):
            raise refuse(f"{key} is {shown(arrays.get(key))}, not a numpy array")
    total = sum(arrays[key].nbytes for key in KEYS)
    if total > MAX_DATA_BYTES:
        raise refuse(f"the arrays hold {total} bytes, at most {MAX_DATA_BYTES // 1024**3} GiB are allowed")
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype.kind not in "iuf":
            raise refuse(f"{split}_x holds {x.dtype} values; features must be numbers (integers or floats)")
        if y.dtype.kind not in "iu":
            raise refuse(f"{split}_y holds {y.dtype} values; labels must be integers 0 to K-1")
        if x.ndim not in (2, 3, 4):
            raise refuse(f"{split}_x has shape {x.shape}; give N x F features, N x H x W or N x C x H x W images")
        if y.ndim != 1:
            raise refuse(f"{split}_y has shape {y.shape}; labels are one integer per sample (shape N)")
        if len(x) != len(y):
            raise refuse(f"{split}_x holds {len(x)} samples but {split}_y {len(y)} labels; give one label per sample")
        if len(x) < (2 if split == "train" else 1):
            raise refuse(f"the {split} split holds {len(x)} samples; give it at least "
                         f"{'2 (the standardisation needs a spread)' if split == 'train' else 'one'}")
        if 0 in x.shape[1:]:
            raise refuse(f"{split}_x has shape {x.shape}, its samples hold no values")
        if (x.dtype.kind == "f" and not np.isfinite(x).all()) or not -MAX_VALUE <= x.min() <= x.max() <= MAX_VALUE:
            raise refuse(f"{split}_x holds values that are not finite or beyond {MAX_VALUE:g}; replace them")
        if int(y.min()) < 0:
            raise refuse(f"{split}_y holds label {int(y.min())}; labels are 0 to K-1")
    train_x, train_y, test_x, test_y = (arrays[key] for key in KEYS)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise refuse(f"train_x samples have shape {train_x.shape[1:]} but test_x samples {test_x.shape[1:]}; "
                     "give both splits samples of one shape")
    top = int(train_y.max())
    if int(test_y.max()) > top:
        raise refuse(f"test_y holds label {int(test_y.max())} but the largest training label is {top}; every "
                     "test label must be a class the training split has")
    if top + 1 > MAX_CLASSES:
        raise refuse(f"train_y holds label {top}, at most {MAX_CLASSES} classes (0 to {MAX_CLASSES - 1}) are allowed")
    if train_x.ndim == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    return train_x, train_y, test_x, test_y, top + 1


# --- npz -----------------------------------------------------------------------------------------

def _regular(path: Path, what: str, fix: str) -> os.stat_result:
    try:
        info = os.stat(path)
    except ValueError:
        raise FogsimError(f"{shown_path(path)}: a path cannot contain a NUL character") from None
    except OSError as error:
        raise FogsimError(f"cannot read {what} {shown_path(path)} ({error.strerror or 'not found'}): {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FogsimError(f"{shown_path(path)}: not a regular file; {fix}")
    return info


def read_npz(path: str | os.PathLike, ids: str | None = None) -> dict[str, np.ndarray]:
    """The four arrays of the npz file ``path`` (and ``train_<ids>``, the ids of a natural partition, when
    ``ids`` is given), their headers checked before any data is read."""
    path = Path(path)
    _regular(path, "npz file", "give data.path as an .npz file (relative to the scenario file)")
    where = shown_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
            missing = [key for key in KEYS if key not in names]
            if missing:
                held = ", ".join(brief(n, 40) for n in sorted(names)[:8]) or "none"
                raise FogsimError(f"{where}: no array {missing[0]} (it holds: {held}); {_NPZ_FIX}")
            wanted = KEYS
            if ids is not None:
                if f"train_{ids}" not in names:
                    raise IdsError(f"{where}: no array train_{brief(ids, 40)} for data.partition.by (ids it holds: "
                                   f"{_id_names(names)}); save one id per training sample as train_<column>")
                wanted = KEYS + (f"train_{ids}",)
            total = 0
            for key in wanted:
                with archive.open(names[key]) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise FogsimError(f"{where}: {key} holds Python objects, which fogsim does not unpickle; "
                                      f"{_NPZ_FIX} from numeric arrays")
                total += math.prod(shape) * dtype.itemsize
                if total > MAX_DATA_BYTES:
                    raise FogsimError(f"{where}: its arrays hold more than {MAX_DATA_BYTES // 1024**3} GiB, "
                                      "the most a dataset file may hold; use a subset")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in wanted}
    except zipfile.BadZipFile:
        raise FogsimError(f"{where}: not an npz file (not a zip archive); {_NPZ_FIX}") from None
    except (OSError, ValueError, EOFError, zlib.error, zipfile.LargeZipFile) as error:
        raise FogsimError(f"{where}: cannot read its arrays ({brief(str(error), 80) or type(error).__name__}); "
                          f"{_NPZ_FIX}") from None


def load_npz(path: str | os.PathLike, ids: str | None = None) -> tuple:
    """``(check_arrays' result, {ids: array} or {})`` of the npz file at ``path``; the ids are its array
    ``train_<ids>``."""
    arrays = read_npz(path, ids)
    checked = check_arrays(shown_path(path), arrays, _NPZ_FIX)
    found = {} if ids is None else {ids: check_ids(shown_path(path), f"train_{ids}", arrays[f"train_{ids}"],
                                                   len(checked[0]))}
    return checked, found


# --- folder --------------------------------------------------------------------------------------

_FOLDER_FIX = "lay the folder out as train/<class>/*.png|jpg and test/<class>/*.png|jpg"


def _classes(split: Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_files(path: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The class names (sorted) and, per split, its image files with their label, in a fixed order."""
    root = Path(path)
    where = shown_path(root)
    if not root.is_dir():
        raise FogsimError(f"{where}: not a directory (or not found); give data.path as a folder holding train/ and "
                          "test/ (relative to the scenario file)")
    splits = {}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FogsimError(f"{where}: no {split}/ folder; {_FOLDER_FIX}")
        splits[split] = _classes(root / split)
    train, test = set(splits["train"]), set(splits["test"])
    if train != test:
        only_train, only_test = sorted(train - test), sorted(test - train)
        parts = ([f"only in train/: {', '.join(brief(n, 40) for n in only_train[:5])}"] if only_train else []) + \
            ([f"only in test/: {', '.join(brief(n, 40) for n in only_test[:5])}"] if only_test else [])
        raise FogsimError(f"{where}: the class folders of train/ and test/ differ ({'; '.join(parts)}); give both "
                          "splits the same class folders")
    classes = splits["train"]
    if not classes:
        raise FogsimError(f"{where}: train/ holds no class folders; {_FOLDER_FIX}")
    if len(classes) > MAX_CLASSES:
        raise FogsimError(f"{where}: {len(classes)} class folders, at most {MAX_CLASSES} are allowed")
    files: dict[str, list[tuple[Path, int]]] = {}
    count = 0
    for split in ("train", "test"):
        files[split] = []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / split / name).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found and split == "train":
                raise FogsimError(f"{shown_path(root / split / name)}: no images (png, jpg); give every class "
                                  "training images or remove its folders")
            count += len(found)
            if count > MAX_FOLDER_FILES:
                raise FogsimError(f"{where}: more than {MAX_FOLDER_FILES} images, the most a folder dataset may "
                                  "hold; use a subset")
            files[split] += [(p, label) for p in found]
        if not files[split]:
            raise FogsimError(f"{where}: {split}/ holds no images (png, jpg); {_FOLDER_FIX}")
    return classes, files


def _image(path: Path):
    """``path`` opened by Pillow (lazily: only its header is read)."""
    from PIL import Image

    _regular(path, "image", "give image files only")
    try:
        image = Image.open(path)
        image.size  # noqa: B018 (the header is read)
        return image
    except Exception as error:  # Pillow raises many kinds for a damaged file
        raise FogsimError(f"{shown_path(path)}: cannot decode the image ({brief(str(error), 80) or type(error).__name__}"
                          "); replace or remove it") from None


def _mode(modes) -> str:
    """The one mode a set of images (their Pillow modes) is decoded in: grayscale if every image is, else RGB."""
    return "L" if all(mode in ("1", "L") for mode in modes) else "RGB"


def _pixels(images, count: int, mode: str, size: tuple[int, int]) -> np.ndarray:
    """``count`` images (an iterable of opened Pillow images, ``size`` pixels each) as N x C x H x W bytes."""
    channels = 1 if mode == "L" else 3
    x = np.empty((count, channels, size[1], size[0]), dtype=np.uint8)
    for i, image in enumerate(images):
        pixels = np.asarray(image.convert(mode))
        x[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return x


def _check_pixels(source: str, count: int, mode: str, size: tuple[int, int]) -> None:
    need = count * (1 if mode == "L" else 3) * size[0] * size[1]
    if need > MAX_DATA_BYTES:
        raise FogsimError(f"{source}: its images hold {need} bytes of pixels, at most {MAX_DATA_BYTES // 1024**3} "
                          "GiB are allowed; use a subset or smaller images")


def load_folder(path: str | os.PathLike) -> tuple:
    """``check_arrays`` of the images under ``path`` (``folder_files``), decoded by Pillow."""
    _, files = folder_files(path)
    every = files["train"] + files["test"]
    size, first, modes = None, None, []
    for file, _ in every:  # headers only: sizes and modes, before any pixel is decoded
        with _image(file) as image:
            if size is None:
                size, first = image.size, file
            elif image.size != size:
                raise FogsimError(f"{shown_path(file)}: {image.size[0]}x{image.size[1]} pixels, but "
                                  f"{shown_path(first, 60)} has {size[0]}x{size[1]}; resize the images to one size")
            modes.append(image.mode)
    mode = _mode(modes)
    _check_pixels(shown_path(path), len(every), mode, size)
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_x"] = _pixels(_decoded(files[split]), len(files[split]), mode, size)
        arrays[f"{split}_y"] = np.array([label for _, label in files[split]], dtype=np.int64)
    return check_arrays(shown_path(path), arrays, _FOLDER_FIX)


def _decoded(files: list[tuple[Path, int]]):
    """The images of ``files``, each opened while it is decoded; a file that fails then is one line."""
    for file, _ in files:
        with _image(file) as image:
            try:
                image.load()
            except Exception as error:
                raise FogsimError(f"{shown_path(file)}: cannot decode the image ({brief(str(error), 80)}); "
                                  "replace or remove it") from None
            yield image


# --- loader --------------------------------------------------------------------------------------

def loader_parts(loader: str, what: str = "loader") -> tuple[str, str]:
    """``("file.py" or "package.module", "function")`` of a loader (or a model builder, ``what``); a
    ValueError if it is neither form."""
    match = LOADER.fullmatch(loader)
    if match is None:
        raise ValueError(f"{shown(loader)} is not a {what}; write file.py:function (a file relative to the "
                         "scenario file) or package.module:function")
    return match["target"], match["function"]


def loader_module(loader: str, what: str = "loader", key: str = "data.loader"):
    """The module a loader's function lives in, imported; its file, for the file form, is absolute.
    ``what`` and ``key`` name a model builder (``model builder``, ``model``) in the messages."""
    target, _ = loader_parts(loader, what)
    name = shown_path(loader)
    try:
        if target.endswith(".py"):
            path = Path(target)
            _regular(path, f"{what} file", f"give {key} as file.py:function, the file relative to the scenario "
                     "file")
            if path.stat().st_size > MAX_LOADER_BYTES:
                raise FogsimError(f"{what} {name}: {shown_path(path)} is larger than {MAX_LOADER_BYTES // 1024**2} "
                                  f"MiB; a {what} file holds code, let it read the data from elsewhere")
            source = path.read_bytes()
            # One module per file and content: a process that loads an edited file runs the new code.
            module_name = "fogsim_loader_" + hashlib.sha256(str(path).encode() + b"\0" + source).hexdigest()[:16]
            if module_name in sys.modules:
                return sys.modules[module_name]
            # Compiled here rather than through importlib's file loader, which would leave __pycache__ beside it.
            module = importlib.util.module_from_spec(importlib.util.spec_from_loader(module_name, loader=None,
                                                                                     origin=str(path)))
            module.__file__ = str(path)
            sys.modules[module_name] = module  # as an import does: a dataclass in the file looks itself up there
            try:
                exec(compile(source, str(path), "exec"), module.__dict__)
            except BaseException:
                del sys.modules[module_name]
                raise
            return module
        return importlib.import_module(target)
    except FogsimError:
        raise
    except (Exception, SystemExit) as error:
        raise FogsimError(f"{what} {name}: importing {brief(target, 80)} failed ({error_text(error)}); fix the file, "
                          "or make the module importable (installed or on PYTHONPATH)") from None


def loader_file(loader: str, what: str = "loader", key: str = "data.loader") -> Path | None:
    """The source file of a loader's (or a model builder's) module (None for a module without one)."""
    module = loader_module(loader, what, key)
    found = getattr(module, "__file__", None)
    return Path(found) if found else None


def load_with(loader: str, seed: int, ids: str | None = None) -> tuple:
    """``(check_arrays' result, {ids: array} or {})`` of what the loader returns when called with
    ``seed=seed``; the ids are its dict's ``train_<ids>``."""
    _, function = loader_parts(loader)
    name = shown_path(loader)
    module = loader_module(loader)
    load = getattr(module, function, None)
    if not callable(load):
        raise FogsimError(f"loader {name}: {brief(getattr(module, '__name__', ''), 60)} has no function "
                          f"{function}; define def {function}(seed) or name an existing one")
    try:
        result = load(seed=seed)
    except (Exception, SystemExit) as error:
        raise FogsimError(f"loader {name} failed ({error_text(error)}); fix the loader") from None
    fix = "return (train_x, train_y, test_x, test_y) as numpy arrays, or a dict with those keys"
    if isinstance(result, dict):
        missing = [key for key in KEYS if key not in result]
        if missing:
            raise FogsimError(f"loader {name}: its dict has no {missing[0]}; {fix}")
        arrays = {key: result[key] for key in KEYS}
    elif isinstance(result, (tuple, list)) and len(result) == 4:
        arrays = dict(zip(KEYS, result))
    else:
        what = f"{len(result)} values" if isinstance(result, (tuple, list)) else shown(result)
        raise FogsimError(f"loader {name} returned {what}; {fix}")
    checked = check_arrays(f"loader {name}", arrays, fix)
    if ids is None:
        return checked, {}
    if not isinstance(result, dict) or f"train_{ids}" not in result:
        held = _id_names([k for k in result if isinstance(k, str)]) if isinstance(result, dict) else "none"
        raise IdsError(f"loader {name}: no key train_{brief(ids, 40)} for data.partition.by (ids it returns: "
                       f"{held}); return a dict with one id per training sample as train_<column>")
    return checked, {ids: check_ids(f"loader {name}", f"train_{ids}", result[f"train_{ids}"], len(checked[0]))}


# --- ids of a natural partition ------------------------------------------------------------------

class IdsError(FogsimError):
    """A problem with the id column a natural partition splits by (``data.partition.by``)."""


def check_ids(source: str, column: str, ids, samples: int) -> np.ndarray:
    """``ids`` (one id per training sample: integers or strings) checked, as a 1-D numpy array."""
    fix = f"give one id per training sample (integers or strings) as {column}"
    if not isinstance(ids, np.ndarray):
        raise IdsError(f"{source}: {column} is {shown(ids)}, not a numpy array; {fix}")
    if ids.dtype.kind not in "iuU":
        raise IdsError(f"{source}: {column} holds {ids.dtype} values; ids are integers or strings, {fix}")
    if ids.ndim != 1:
        raise IdsError(f"{source}: {column} has shape {ids.shape}; {fix} (shape N)")
    if len(ids) != samples:
        raise IdsError(f"{source}: {column} holds {len(ids)} ids but the training split {samples} samples; {fix}")
    return ids


def _id_names(names, prefix: str = "train_") -> str:
    found = sorted(n[len(prefix):] for n in names if n.startswith(prefix) and n not in ("train_x", "train_y"))
    return ", ".join(brief(n, 40) for n in found[:12]) or "none"


# --- huggingface ---------------------------------------------------------------------------------

_HF_FIX = ("save a datasets.DatasetDict with train and test splits, or one datasets.Dataset, with "
           "save_to_disk")
HF_TEST_SHARE = 0.2  # of a dataset without a test split, held out for testing (a seeded choice)


def _hf_splits(source: str, loaded, seed: int) -> tuple:
    """``(train, test)`` of a loaded Dataset or DatasetDict: its train and test splits, or a seeded 80/20
    split of the one dataset (or of a DatasetDict's only split named train)."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if "train" not in loaded:
            raise FogsimError(f"{source}: no train split (it holds: {', '.join(brief(n, 40) for n in names[:8]) or 'none'}"
                              f"); {_HF_FIX}")
        if "test" in loaded:
            return loaded["train"], loaded["test"]
        loaded = loaded["train"]
    if not isinstance(loaded, datasets.Dataset):
        raise FogsimError(f"{source}: holds {type(loaded).__name__}, not a dataset; {_HF_FIX}")
    n = len(loaded)
    if n < 3:
        raise FogsimError(f"{source}: {n} samples, too few to split into training and test samples; {_HF_FIX}")
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * HF_TEST_SHARE))
    return loaded.select(np.sort(order[held:])), loaded.select(np.sort(order[:held]))


def _is_array_feature(feature) -> bool:
    import datasets

    return isinstance(feature, (datasets.Image, datasets.Sequence, datasets.Array2D, datasets.Array3D,
                                datasets.Array4D) + ((datasets.List,) if hasattr(datasets, "List") else ()))


def _hf_features(source: str, columns: dict, label: str, features) -> list[str]:
    """The feature columns: ``features`` (a name or a list of names), else image, img, or the only
    array column besides the label."""
    if features is not None:
        chosen = [features] if isinstance(features, str) else list(features)
        for name in chosen:
            if name not in columns:
                raise FogsimError(f"{source}: no column {shown(name)} for data.features (columns: "
                                  f"{', '.join(brief(c, 40) for c in list(columns)[:12])})")
            if name == label:
                raise FogsimError(f"{source}: {shown(name)} is the label column; name other columns as data.features")
        return chosen
    for name in ("image", "img"):
        if name in columns and name != label:
            return [name]
    arrays = [c for c, feature in columns.items() if c != label and _is_array_feature(feature)]
    if len(arrays) != 1:
        which = f"array columns {', '.join(brief(c, 40) for c in arrays[:8])}" if arrays else "no image or array column"
        raise FogsimError(f"{source}: {which} (columns: {', '.join(brief(c, 40) for c in list(columns)[:12])}); "
                          "name the feature column(s) as data.features")
    return arrays


def _nulls(split, column: str) -> int:
    return split.with_format("arrow")[:].column(column).null_count


def _hf_images(source: str, images: list, column: str, mode: str) -> np.ndarray:
    """The images of a split's ``column`` as N x C x H x W bytes, in the dataset's one ``mode``."""
    size = images[0].size
    for image in images:
        if image.size != size:
            raise FogsimError(f"{source}: {column} holds images of {image.size[0]}x{image.size[1]} and "
                              f"{size[0]}x{size[1]} pixels; resize the images to one size")
    _check_pixels(source, len(images), mode, size)
    return _pixels(images, len(images), mode, size)


def _hf_numbers(source: str, split, columns: list[str]) -> np.ndarray:
    """A column of numbers or of (nested) lists of numbers as one array; scalar columns stacked as N x F."""
    table = split.with_format("numpy")
    parts = []
    for column in columns:
        try:
            values = np.asarray(table[column])
        except (ValueError, TypeError) as error:
            raise FogsimError(f"{source}: column {shown(column)} cannot be read as numbers ({brief(str(error), 80)})"
                              "; give every sample the same shape") from None
        if values.dtype.kind not in "iuf":
            raise FogsimError(f"{source}: column {shown(column)} holds {'samples of different shapes' if values.dtype == object else f'{values.dtype} values'}"
                              "; features are numbers, every sample of one shape")
        parts.append(values)
    if len(parts) == 1:
        return parts[0]
    if any(p.ndim != 1 for p in parts):
        raise FogsimError(f"{source}: data.features lists several columns, which must each hold one number per "
                          "sample; name one array column instead")
    return np.stack(parts, axis=1)


def load_huggingface(path: str | os.PathLike | None = None, hub: str | None = None, features=None,
                     label: str | None = None, seed: int = 0, ids: str | None = None) -> tuple:
    """``(check_arrays' result, {ids: array} or {})`` of a Hugging Face dataset saved with ``save_to_disk`` at
    ``path`` (read offline), or of the hub dataset ``hub`` (downloaded by ``datasets.load_dataset``); the
    datasets library's progress bars stay off meanwhile (a quiet run prints nothing)."""
    import datasets

    shown_bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return _load_huggingface(path, hub, features, label, seed, ids)
    finally:
        if shown_bars:
            datasets.enable_progress_bars()


def _load_huggingface(path, hub, features, label, seed, ids) -> tuple:
    import datasets

    label = label or "label"
    if path is not None:
        root = Path(path)
        source = shown_path(root)
        if not root.is_dir():
            raise FogsimError(f"{source}: not a directory (or not found); give data.path as the folder "
                              "save_to_disk wrote (relative to the scenario file)")
        try:
            loaded = datasets.load_from_disk(str(root))
        except FileNotFoundError:
            raise FogsimError(f"{source}: not a saved Hugging Face dataset (no dataset_info.json or "
                              f"dataset_dict.json); {_HF_FIX}") from None
        except Exception as error:  # datasets and pyarrow raise many kinds for a damaged folder
            raise FogsimError(f"{source}: cannot read the saved dataset ({error_text(error)}); {_HF_FIX}") from None
    else:
        source = f"hub dataset {brief(hub, 80)}"
        try:
            loaded = datasets.load_dataset(hub)
        except Exception as error:
            raise FogsimError(f"{source}: cannot load it ({error_text(error)}); check the id and the network "
                              "connection, or save it with save_to_disk and give data.path") from None
    train, test = _hf_splits(source, loaded, seed)
    columns = dict(train.features)
    if label not in columns:
        raise FogsimError(f"{source}: no label column {shown(label)} (columns: "
                          f"{', '.join(brief(c, 40) for c in list(columns)[:12])}); name it as data.label")
    chosen = _hf_features(source, columns, label, features)
    for split_name, split in (("train", train), ("test", test)):
        for column in chosen + [label]:
            if column not in split.features:
                raise FogsimError(f"{source}: the {split_name} split has no column {shown(column)}; give both "
                                  "splits the same columns")
            empty = _nulls(split, column)
            if empty:
                raise FogsimError(f"{source}: {empty} {split_name} samples have no {column} (None); fill them or "
                                  "drop those samples")
    arrays = {}
    image = len(chosen) == 1 and isinstance(columns[chosen[0]], datasets.Image)
    if image:
        images = {"train": list(train[chosen[0]]), "test": list(test[chosen[0]])}
        mode = _mode(image.mode for image in images["train"] + images["test"])
    for split_name, split in (("train", train), ("test", test)):
        arrays[f"{split_name}_x"] = (_hf_images(source, images[split_name], chosen[0], mode) if image
                                     else _hf_numbers(source, split, chosen))
        labels = np.asarray(split.with_format("numpy")[label])
        arrays[f"{split_name}_y"] = labels
    checked = check_arrays(source, arrays, "set data.features and data.label to the right columns, or fix the "
                           "dataset")
    found = {}
    if ids is not None:
        if ids not in columns:
            raise IdsError(f"{source}: no column {shown(ids)} (columns: "
                           f"{', '.join(brief(c, 40) for c in list(columns)[:12])}); name one of them")
        empty = _nulls(train, ids)
        if empty:
            raise IdsError(f"{source}: {empty} training samples have no {ids} (None); give every sample an id "
                           "or drop those samples")
        values = np.asarray(train.with_format("numpy")[ids])
        if values.dtype.kind == "O":
            values = np.asarray(train[ids])
        found[ids] = check_ids(source, f"column {ids}", values, len(checked[0]))
    return checked, found


def hf_digest(path: Path) -> tuple[int, str]:
    """``(bytes, SHA-256)`` of the folder ``save_to_disk`` wrote: its files' paths (relative) and contents."""
    return _files_digest(path, sorted(p for p in Path(path).rglob("*") if p.is_file()))


# --- provenance ----------------------------------------------------------------------------------

def file_digest(path: Path) -> tuple[int, str]:
    """``(bytes, SHA-256)`` of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def folder_digest(path: Path) -> tuple[int, str]:
    """``(bytes, SHA-256)`` of the images a folder dataset reads: their paths (relative) and contents."""
    _, files = folder_files(path)
    return _files_digest(path, [file for file, _ in files["train"] + files["test"]])


def _files_digest(root: Path, files: list[Path]) -> tuple[int, str]:
    """``(bytes, SHA-256)`` of ``files`` under ``root``: their paths (relative to ``root``) and contents."""
    digest, size = hashlib.sha256(), 0
    for file in files:
        name = file.relative_to(root).as_posix().encode()
        bytes_, hexdigest = file_digest(file)
        digest.update(b"%d:%s:%s\n" % (len(name), name, hexdigest.encode()))
        size += bytes_
    return size, digest.hexdigest()


def as_dataset_arrays(name: str, arrays: tuple, ids: dict | None = None):
    """A ``Dataset`` from ``check_arrays``' result, with the id columns a natural partition splits by."""
    from fogsim.data import _standardised

    train_x, train_y, test_x, test_y, classes = arrays
    return _standardised(name, train_x, train_y, test_x, test_y, classes, ids=ids)

