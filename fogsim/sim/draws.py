"""Every random draw of a round: who is available, who is sampled, who fails, each device's data order.

Everything is drawn from generators seeded by (scenario seed, round, device), so the same scenario
gives the same rounds, whatever order Ray runs the clients in and however many nodes it has.

* **Availability**: each round, each device is available with its profile's ``availability``;
  the round samples ``fraction`` of the available devices (at least one, if any is available).
  Flower's own sampling cannot be seeded (it samples node ids, which are random per run), so
  the fog samples and shows Flower's strategy only the sampled nodes (``FogGrid.get_node_ids``)
  with ``fraction_train=1``.
* **Summation order**: the order in which a round's uploads are added up (``strategies.sums``), a
  shuffle of the sampled devices, so that the contiguous runs of it that the workers simulate mix
  the fleet's kinds of devices and take about the same time.
* **Failures**: a sampled device fails with its profile's ``failure_rate``; it drops out
  mid-round, its update never reaches the server, and the round goes on with the rest. The
  device keeps its mask and schedule position from before the round (the work is lost).
"""

from __future__ import annotations

import numpy as np
import torch

FAILED = 9001  # Error code of a device that dropped out mid-round (Flower's own codes are 0-8)

# Streams of the per-round generators, so that availability and failure draws are independent.
AVAILABILITY, SAMPLING, FAILURE, SUM_ORDER = 0, 1, 2, 3


def _rng(seed: int, round_: int, stream: int, device: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, round_, stream, device])


def participants(availability: np.ndarray, fraction: float, seed: int, round_: int) -> tuple[np.ndarray, list[int]]:
    """Device ids available in ``round_`` and those sampled among them, both in id order.

    ``availability`` holds every device's probability of joining a round (``Fleet.per_device``);
    one vectorised draw per device, so a round of a 100,000-device fleet samples in a millisecond.
    """
    draws = _rng(seed, round_, AVAILABILITY).random(len(availability))
    available = np.flatnonzero(draws < availability)
    if not len(available):
        return available, []
    size = max(1, int(fraction * len(available)))
    sampled = _rng(seed, round_, SAMPLING).choice(available, size=size, replace=False)
    return available, sorted(int(i) for i in sampled)


def sum_order(devices: list[int], seed: int, round_: int, node: int = 0) -> list[int]:
    """``devices`` (a round's sampled ones of fog node ``node``) in the order their uploads are added up."""
    order = _rng(seed, round_, SUM_ORDER, node).permutation(len(devices))
    return [devices[i] for i in order]


def most_sampled(devices: int, fraction: float) -> int:
    """The most devices ``participants`` can sample in one round of a fleet of ``devices``."""
    return max(1, int(fraction * devices))


def fails(failure_rate: float, seed: int, round_: int, device: int) -> bool:
    """Whether ``device`` drops out in ``round_``."""
    return bool(_rng(seed, round_, FAILURE, device).random() < failure_rate)


def seed_for(seed: int, round_: int, device: int) -> int:
    """A torch seed for one device's data order in one round."""
    return int(np.random.SeedSequence([seed, round_, device]).generate_state(1)[0])


def generator(seed: int, round_: int, device: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, round_, device))
