"""What a device carries from one round to the next, kept by the server between its rounds.

A Flower node of the simulation is a worker that can simulate any device, so a device's
state cannot live in a node: the server keeps it and sends it in the cohort message of the
device's next round (``messages``), and the worker sends it back in its reply. The state is
the brief's: the device's mask and its schedule position (optimizer steps so far and the
progress of its next pruning step; its progress itself follows from the round). This is the
simulator's own bookkeeping: it is never counted as traffic, since a real device keeps its
mask in its own memory.

Masks travel and are stored packed, one bit per entry of the prunable tensors in model order
(``pack_masks``). Devices with the same target that prune the same global weights keep the
same mask, so the store keeps each distinct mask once (content-addressed, reference-counted),
and once the distinct masks outgrow ``memory_bytes`` further ones are written to a spill
directory that the store removes when closed. A device that never trained has no state and
costs nothing, so a fleet of 100,000 devices with 300 sampled costs 300 states.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def pack_masks(masks: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The masks of ``names`` (in that order), flattened and packed into one uint8 array."""
    return np.packbits(np.concatenate([np.asarray(masks[n], dtype=bool).ravel() for n in names]))


def unpack_masks(bits: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Invert ``pack_masks``: ``shapes`` maps each name, in packing order, to its tensor's shape."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes.values()]
    flat = np.unpackbits(np.asarray(bits, dtype=np.uint8), count=sum(sizes)).astype(bool)
    out, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes):
        out[name] = flat[start:start + size].reshape(shape)
        start += size
    return out


@dataclass(frozen=True)
class DeviceState:
    """A device's state between rounds; ``mask`` is packed (``pack_masks``), ``None`` when it never prunes."""

    steps: int
    next_prune: float
    mask: np.ndarray | None


class MaskPool:
    """Distinct packed masks, each kept once, in memory up to ``memory_bytes`` and on disk beyond."""

    def __init__(self, memory_bytes: int):
        self.memory_bytes = memory_bytes
        self.in_memory = 0
        self._blobs: dict[bytes, bytes | Path] = {}
        self._refs: dict[bytes, int] = {}
        self._spill: Path | None = None

    def add(self, bits: np.ndarray) -> bytes:
        blob = np.ascontiguousarray(bits, dtype=np.uint8).tobytes()
        key = hashlib.blake2b(blob, digest_size=16).digest()
        if key not in self._blobs:
            self._blobs[key] = self._store(key, blob)
        self._refs[key] = self._refs.get(key, 0) + 1
        return key

    def get(self, key: bytes) -> np.ndarray:
        blob = self._blobs[key]
        return np.frombuffer(blob if isinstance(blob, bytes) else blob.read_bytes(), dtype=np.uint8)

    def release(self, key: bytes) -> None:
        self._refs[key] -= 1
        if self._refs[key]:
            return
        del self._refs[key]
        blob = self._blobs.pop(key)
        if isinstance(blob, bytes):
            self.in_memory -= len(blob)
        else:
            blob.unlink()

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def spill_dir(self) -> Path | None:
        """Where masks beyond ``memory_bytes`` are written; ``None`` until the first is."""
        return self._spill

    @property
    def spilled(self) -> int:
        return sum(1 for blob in self._blobs.values() if not isinstance(blob, bytes))

    def _store(self, key: bytes, blob: bytes) -> bytes | Path:
        if self.in_memory + len(blob) <= self.memory_bytes:
            self.in_memory += len(blob)
            return blob
        if self._spill is None:
            self._spill = Path(tempfile.mkdtemp(prefix="fogsim-masks-"))
        path = self._spill / f"{key.hex()}.bits"
        path.write_bytes(blob)
        return path

    def close(self) -> None:
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None
        self._blobs.clear()
        self._refs.clear()
        self.in_memory = 0


class DeviceStates:
    """Every device's state, as a few numbers per device that trained plus a pool of distinct masks."""

    def __init__(self, devices: int, memory_bytes: int):
        self.steps = np.zeros(devices, dtype=np.int64)
        self.next_prune = np.zeros(devices, dtype=np.float64)
        self.trained = np.zeros(devices, dtype=bool)
        self._mask_of: dict[int, bytes] = {}
        self.masks = MaskPool(memory_bytes)

    def get(self, device: int) -> DeviceState | None:
        """The state ``device`` ended its last successful round with; ``None`` before its first."""
        if not self.trained[device]:
            return None
        key = self._mask_of.get(device)
        return DeviceState(int(self.steps[device]), float(self.next_prune[device]),
                           None if key is None else self.masks.get(key))

    def put(self, device: int, state: DeviceState) -> None:
        old = self._mask_of.pop(device, None)
        if state.mask is not None:
            self._mask_of[device] = self.masks.add(state.mask)
        if old is not None:
            self.masks.release(old)
        self.steps[device] = state.steps
        self.next_prune[device] = state.next_prune
        self.trained[device] = True

    def mask_keys(self) -> dict[int, bytes]:
        """Every device that holds a mask, and its mask's key in ``masks``."""
        return dict(self._mask_of)

    def close(self) -> None:
        self.masks.close()
