"""Checkpoints: everything a run needs to go on from the end of a round, written atomically.

At the end of every round the server writes ``.checkpoint/round-NNNNNN/`` inside the run
directory: the global arrays (``arrays.npz``), every device's state (``devices.npz``: steps,
next pruning point, whether it trained, and its mask as an index into the distinct masks), the
server optimizer's state (``strategy.npz``: FedAvgM's momentum, FedAdam's moments; empty for
the averaging strategies), and ``round.json``, written last, which makes the checkpoint complete. It names the round, the
hash of the run's resolved ``scenario.yaml`` and of its fleet plan, and a manifest of the three
array files (size and SHA-256 of each); the scenario's profile files are in the run directory
(``provenance``). Only the newest complete checkpoint is kept.

A checkpoint is trusted only once verified (``load``): the manifest against the files, every
global array's name, dtype and shape against the scenario's model, every device array against
the fleet (counts, mask sizes, indices in range, steps whole and not negative), the strategy's
state against the strategy, and the round against the run's ``rounds.csv``. Anything off is one
line naming the file and what is wrong, before anything is written or started.

Nothing else is needed: every random draw of a round (sampling, availability, failures, each
device's data order) is seeded by (seed, round, device), and a strategy's state between rounds is
the global arrays and its optimizer state. So a run resumed from round ``k`` computes rounds
``k+1..`` exactly as the uninterrupted run did.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogsim.errors import FogsimError, shown, shown_path
from fogsim.sim.device_state import DeviceState, DeviceStates

DIRECTORY = ".checkpoint"
FORMAT = 3  # 2: strategy.npz (the server optimizer state) added; 3: the manifest ("files")
FILES = ("arrays.npz", "devices.npz", "strategy.npz")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint read back: the round it ends and what the next round starts from."""

    round: int
    arrays: dict[str, np.ndarray]
    path: Path
    strategy: dict[str, np.ndarray]  # the server optimizer's state (``Resumable.state_arrays``)


def save(out: Path, round_: int, arrays: dict[str, np.ndarray], states: DeviceStates, meta: dict,
         strategy: dict[str, np.ndarray] | None = None) -> None:
    """Write the checkpoint of ``round_``; the previous one is removed only once this one is complete."""
    root = out / DIRECTORY
    target = root / f"round-{round_:06d}"
    partial = root / f".partial-{round_:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    contents = dict(zip(FILES, (arrays, _device_arrays(states), strategy or {})))
    files = {name: _save_npz(partial / name, content) for name, content in contents.items()}
    _write_synced(partial / "round.json",
                  json.dumps({"format": FORMAT, "round": round_, **meta, "files": files}).encode())
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    for old in root.iterdir():
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint of the run directory ``out``, if any."""
    root = out / DIRECTORY
    done = sorted(p for p in root.glob("round-*") if (p / "round.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def info(path: Path) -> dict:
    """The ``round.json`` of the checkpoint at ``path``."""
    try:
        found = json.loads((path / "round.json").read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise FogsimError(f"{shown_path(path)}: damaged checkpoint ({type(error).__name__}); it cannot be resumed") from None
    if not isinstance(found, dict):
        raise FogsimError(f"{shown_path(path)}: damaged checkpoint (round.json is not a mapping); it cannot be resumed")
    return found


@dataclass(frozen=True)
class Expected:
    """What a checkpoint of this run must hold: ``identity`` (``round.json``'s scenario and fleet
    hashes), the global arrays' dtypes and shapes, the fleet's size, a packed mask's bytes, the
    rounds finished in ``rounds.csv``, and ``strategy`` (raises ValueError on a state that does not
    belong to the scenario's strategy)."""

    identity: dict
    arrays: dict[str, tuple[np.dtype, tuple[int, ...]]]
    devices: int
    mask_bytes: int
    rounds: int
    finished: set[int]
    strategy: Callable[[dict[str, np.ndarray]], None]


class Damaged(ValueError):
    """What is wrong with a checkpoint, as the end of a sentence."""


def load(path: Path, expected: Expected, states: DeviceStates) -> Checkpoint:
    """Read the checkpoint at ``path`` into ``states`` once verified against ``expected``; refuse one
    from another run or a damaged one in one line (``FogsimError``), having written nothing."""
    found = info(path)
    mismatched = [k for k, v in expected.identity.items() if found.get(k) != v]
    if found.get("format") != FORMAT:
        raise FogsimError(f"{shown_path(path)}: this checkpoint was written by another version of fogsim (format "
                          f"{shown(found.get('format'))}, this one reads {FORMAT}); it cannot be resumed")
    if mismatched:
        raise FogsimError(f"{shown_path(path)}: this checkpoint belongs to another run ({', '.join(mismatched)} differ); "
                          "it cannot be resumed")
    try:
        round_ = _round(found, expected)
        _verify_files(path, found.get("files"))
        arrays = _checked_arrays(_read(path, "arrays.npz"), expected.arrays)
        devices = _read(path, "devices.npz")
        _check_devices(devices, expected)
        strategy = _read(path, "strategy.npz")
        try:
            expected.strategy(strategy)
        except ValueError as error:
            raise Damaged(f"strategy.npz: {error}") from None
        _restore(states, devices)
    except Damaged as error:
        raise FogsimError(f"{shown_path(path)}: damaged checkpoint ({error}); it cannot be resumed") from None
    return Checkpoint(round_, arrays, path, strategy)


def _round(found: dict, expected: Expected) -> int:
    round_ = found.get("round")
    if not isinstance(round_, int) or isinstance(round_, bool) or not 0 <= round_ <= expected.rounds:
        raise Damaged(f"round.json: round {shown(round_)} is not a round of this {expected.rounds}-round run")
    missing = sorted(set(range(1, round_ + 1)) - expected.finished)
    if missing:
        raise Damaged(f"round.json says round {round_} is done but rounds.csv has no row for round {missing[0]}")
    return round_


def _verify_files(path: Path, manifest: object) -> None:
    if not isinstance(manifest, dict) or sorted(manifest) != sorted(FILES):
        raise Damaged("round.json: no manifest of its files")
    for name in FILES:
        entry = manifest[name]
        if not isinstance(entry, dict):
            raise Damaged(f"round.json: no size and hash for {name}")
        try:
            data = (path / name).read_bytes()
        except OSError as error:
            raise Damaged(f"{name}: {error.strerror or type(error).__name__}") from None
        if len(data) != entry.get("bytes"):
            raise Damaged(f"{name} holds {len(data)} bytes, the manifest {shown(entry.get('bytes'))}")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise Damaged(f"{name} does not match its SHA-256 in the manifest")


def _read(path: Path, name: str) -> dict[str, np.ndarray]:
    try:
        return _load_npz(path / name)
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, EOFError) as error:
        raise Damaged(f"{name}: {type(error).__name__}") from None


def _checked_arrays(arrays: dict[str, np.ndarray], expected: dict[str, tuple[np.dtype, tuple[int, ...]]]
                    ) -> dict[str, np.ndarray]:
    if sorted(arrays) != sorted(expected):
        odd = sorted(set(arrays) ^ set(expected))[0]
        which = "is not an array of" if odd in arrays else "is missing, an array of"
        raise Damaged(f"arrays.npz: {shown(odd)} {which} the scenario's model")
    for name, (dtype, shape) in expected.items():
        array = arrays[name]
        if array.dtype != dtype or array.shape != shape:
            raise Damaged(f"arrays.npz: {shown(name)} is {array.dtype} {list(array.shape)}, the scenario's model has "
                          f"{dtype} {list(shape)}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise Damaged(f"arrays.npz: {shown(name)} holds values that are not finite")
    return arrays


_DEVICE_KINDS = {"steps": "i", "next_prune": "f", "trained": "b", "mask_index": "i", "masks": "u"}


def _check_devices(devices: dict[str, np.ndarray], expected: Expected) -> None:
    if sorted(devices) != sorted(_DEVICE_KINDS):
        raise Damaged("devices.npz: not the arrays of a fleet's states")
    for name, kind in _DEVICE_KINDS.items():
        array = devices[name]
        if array.dtype.kind != kind or array.ndim != (2 if name == "masks" else 1):
            raise Damaged(f"devices.npz: {name} is {array.dtype} of {array.ndim} dimensions")
        if name != "masks" and len(array) != expected.devices:
            raise Damaged(f"devices.npz: {name} holds {len(array)} devices, the fleet {expected.devices}")
    masks, index, trained = devices["masks"], devices["mask_index"], devices["trained"]
    if len(masks) and masks.shape[1] != expected.mask_bytes:
        raise Damaged(f"devices.npz: a mask holds {masks.shape[1]} bytes, the scenario's model {expected.mask_bytes}")
    if ((index < -1) | (index >= len(masks))).any():
        raise Damaged(f"devices.npz: a mask index is outside 0..{len(masks) - 1}")
    if (devices["steps"][trained] < 0).any():
        raise Damaged("devices.npz: a device's steps are negative")
    next_prune = devices["next_prune"][trained]
    if not (np.isfinite(next_prune) & (next_prune >= 0)).all():
        raise Damaged("devices.npz: a device's next pruning point is negative or not finite")


def _device_arrays(states: DeviceStates) -> dict[str, np.ndarray]:
    keys, index = {}, np.full(len(states.trained), -1, dtype=np.int64)
    for device, key in states.mask_keys().items():
        index[device] = keys.setdefault(key, len(keys))
    masks = np.stack([states.masks.get(key) for key in keys]) if keys else np.zeros((0, 0), dtype=np.uint8)
    return {"steps": states.steps, "next_prune": states.next_prune, "trained": states.trained,
            "mask_index": index, "masks": masks}


def _restore(states: DeviceStates, devices: dict[str, np.ndarray]) -> None:
    masks, index = devices["masks"], devices["mask_index"]
    for device in np.flatnonzero(devices["trained"]):
        slot = int(index[device])
        states.put(int(device), DeviceState(int(devices["steps"][device]), float(devices["next_prune"][device]),
                                            masks[slot] if slot >= 0 else None))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    """Write ``arrays`` to ``path``, synced; its manifest entry (size and SHA-256)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getbuffer()
    _write_synced(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _write_synced(path: Path, data: bytes | memoryview) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
