"""Simulated cost of a device's round: the FLOPs it computes and the seconds its round takes.

A device's simulated time is its training FLOPs / its profile's ``flops`` plus the bytes it
downloads and uploads over ``downlink`` / ``uplink``. The slowest device that finished sets the
round; a device that dropped out is not waited for.
"""

from __future__ import annotations

from fogsim.core import MaskSet, Topology


def forward_flops(topology: Topology, masks: MaskSet | None) -> int:
    """FLOPs of one forward pass of one sample, counting only kept weights (a sparse kernel's cost).

    A kept weight of a Linear layer is one multiply-add (2 FLOPs) per sample; of a Conv layer,
    one per output position.
    """
    total = 0
    for layer in topology.layers:
        _, _, out = topology.steps[layer.index]
        positions = out.numel // layer.units
        kept = masks.kept_of(layer.weight) if masks is not None else layer.numel
        total += 2 * kept * positions
    return total


def training_flops(forward: float, samples: int) -> float:
    """Forward plus backward (about twice the forward) for ``samples`` samples."""
    return 3.0 * forward * samples


def transfer_seconds(nbytes: int, bits_per_second: float) -> float:
    return 8.0 * nbytes / bits_per_second


def device_seconds(profile, flops: float, download_bytes: int, upload_bytes: int) -> float:
    """Simulated time of one device's round: download, compute, upload."""
    return (transfer_seconds(download_bytes, profile.downlink) + flops / profile.flops
            + transfer_seconds(upload_bytes, profile.uplink))
