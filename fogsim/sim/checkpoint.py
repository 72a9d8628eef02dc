"""Checkpoints: everything a run needs to go on from the end of a round, written atomically.

At the end of every round the server writes ``.checkpoint/round-NNNNNN/`` inside the run
directory: the global arrays (``arrays.npz``), every device's state (``devices.npz``: steps,
next pruning point, whether it trained, and its mask as an index into the distinct masks), the
server optimizer's state (``strategy.npz``: FedAvgM's momentum, FedAdam's moments; empty for
the averaging strategies), and ``round.json``, written last, which makes the checkpoint complete. It names the round, the
hash of the run's resolved ``scenario.yaml`` and of its fleet plan, and the directory the
scenario's profile files are relative to. Only the newest complete checkpoint is kept.

Nothing else is needed: every random draw of a round (sampling, availability, failures, each
device's data order) is seeded by (seed, round, device), and a strategy's state between rounds is
the global arrays and its optimizer state. So a run resumed from round ``k`` computes rounds
``k+1..`` exactly as the uninterrupted run did.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogsim.errors import FogsimError
from fogsim.sim.device_state import DeviceState, DeviceStates

DIRECTORY = ".checkpoint"
FORMAT = 2  # 2: strategy.npz (the server optimizer state) added


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
    _save_npz(partial / "arrays.npz", arrays)
    _save_npz(partial / "devices.npz", _device_arrays(states))
    _save_npz(partial / "strategy.npz", strategy or {})
    _write_synced(partial / "round.json", json.dumps({"format": FORMAT, "round": round_, **meta}).encode())
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
        raise FogsimError(f"{path}: damaged checkpoint ({type(error).__name__}); it cannot be resumed") from None
    if not isinstance(found, dict):
        raise FogsimError(f"{path}: damaged checkpoint (round.json is not a mapping); it cannot be resumed")
    return found


def load(path: Path, expected: dict, states: DeviceStates) -> Checkpoint:
    """Read the checkpoint at ``path`` into ``states``; refuse one from another run or a damaged one."""
    found = info(path)
    try:
        mismatched = [k for k, v in expected.items() if found.get(k) != v]
        if found.get("format") != FORMAT or mismatched:
            what = ", ".join(mismatched) or "format"
            raise FogsimError(f"{path}: this checkpoint belongs to another run ({what} differ); it cannot be resumed")
        arrays = _load_npz(path / "arrays.npz")
        devices = _load_npz(path / "devices.npz")
        strategy = _load_npz(path / "strategy.npz")
        _restore(states, devices)
        return Checkpoint(int(found["round"]), arrays, path, strategy)
    except FogsimError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, EOFError) as error:
        raise FogsimError(f"{path}: damaged checkpoint ({type(error).__name__}); it cannot be resumed") from None


def _device_arrays(states: DeviceStates) -> dict[str, np.ndarray]:
    keys, index = {}, np.full(len(states.trained), -1, dtype=np.int64)
    for device, key in states.mask_keys().items():
        index[device] = keys.setdefault(key, len(keys))
    masks = np.stack([states.masks.get(key) for key in keys]) if keys else np.zeros((0, 0), dtype=np.uint8)
    return {"steps": states.steps, "next_prune": states.next_prune, "trained": states.trained,
            "mask_index": index, "masks": masks}


def _restore(states: DeviceStates, devices: dict[str, np.ndarray]) -> None:
    count = len(states.trained)
    if any(len(devices[k]) != count for k in ("steps", "next_prune", "trained", "mask_index")):
        raise ValueError("device count")
    masks, index = devices["masks"], devices["mask_index"]
    for device in np.flatnonzero(devices["trained"]):
        slot = int(index[device])
        states.put(int(device), DeviceState(int(devices["steps"][device]), float(devices["next_prune"][device]),
                                            masks[slot] if slot >= 0 else None))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:
        np.savez(file, **arrays)
        file.flush()
        os.fsync(file.fileno())


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
