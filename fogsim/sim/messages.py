"""Every message the simulation sends, and every record name in them, in one place.

A Flower node of the simulation is a worker that simulates devices. Each round the server
(``fog_grid.FogGrid``) sends every worker **one cohort message** naming the devices it simulates
this round, with what each needs; the worker (``client_app``) trains them one after another in
its own process and answers **once**. The strategy never sees cohorts: it addresses one message
per device and gets one reply per device, which the grid unpacks from the cohort replies,
holding Flower's own records only (``ARRAYS``, ``METRICS``, named below with the other keys a
strategy and a device agree on).

A cohort message carries:

- ``COHORT`` (ConfigRecord): per device, in the cohort's order, its id, which model and which
  config it receives (indices into the records below), whether it has a state and, if so, its
  schedule position (optimizer steps, progress of the next pruning step); and how downloads
  are accounted (``sparse`` or ``dense``, ``strategy.download``);
- ``MODEL + i`` (ArrayRecord): each distinct model the strategy sends (one, or one per fog node),
  dense and once, however many devices receive it;
- ``CONFIG + j`` (ConfigRecord): each distinct train config, with the fog's round;
- ``MASKS`` (ArrayRecord): each device's packed mask (``device_state.pack_masks``) by device id,
  for the devices that hold one.

The reply carries, per device, ``COHORT``'s lists again (``failed``: dropped out this round;
the new schedule position), its new mask in ``MASKS``, and, for a device that finished, its
report ``REPORT + id`` (MetricRecord). A device that raised an exception ends the cohort:
``CRASHED`` names it and the reason.

What travels of the devices' models depends on the strategy. One that reads a round only
through its sums (``strategies.Resumable.reads_sums``: Flower's FedAvg family, the built-in
mask-aware rules) sets ``SUMS_KEY`` in its config; the cohort then also names each device's fog
node and leaf (its place in the node's summation order, ``draws.sum_order``), the worker adds
the devices' uploads up as it trains them (``strategies.sums.SumStack``), and the reply carries
the sums of its blocks of leaves, ``SUMS + i`` (ArrayRecord), listed in ``BLOCKS`` (node, first
leaf, size): a few models' worth per worker, whatever the cohort's size. Otherwise every finished
device's upload travels as ``UPLOAD + id`` (ArrayRecord).

Before the first round each worker gets a **warm-up** message (``WARM_UP``, nothing else): it
loads the dataset and builds its models and trainers while the server sets up, so that start-up
is not counted in round 1; it answers with an empty reply.

What a device *would* have received and sent — its download restricted to its mask, its packed
upload — is what traffic and time are accounted on, device by device; the cohort is the
simulator's transport, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fogsim.sim.device_state import DeviceState
from fogsim.sim.reports import EXAMPLES_KEY as _EXAMPLES_KEY
from strategies import SUMS_KEY as _SUMS_KEY
from strategies import UPLOAD_ENCODING_KEY as _UPLOAD_ENCODING_KEY
from strategies.sums import Sums, from_arrays, to_arrays

COHORT = "fogsim-cohort"
MODEL = "fogsim-model-"
CONFIG = "fogsim-config-"
MASKS = "fogsim-masks"
UPLOAD = "fogsim-upload-"
SUMS = "fogsim-sums-"
BLOCKS = "fogsim-blocks"
REPORT = "fogsim-report-"
CRASHED = "fogsim-crashed"
WARM_UP = "fogsim-warm-up"

# What the strategies see: Flower's own records, by the names Flower's strategies use by default.
ARRAYS = "arrays"            # the model sent, and each device's upload
TRAIN_CONFIG = "config"      # the strategy's train config
METRICS = "metrics"          # each device's report (``reports.DeviceReport``)
ROUND_KEY = "server-round"   # the train config's round, which fogsim sets to the fog's
UNIFORM_WEIGHT_KEY = "unit-weight"  # a report's weight when strategy.weighting is uniform
EXAMPLES_KEY = _EXAMPLES_KEY  # a report's weight by default: its examples (a ``DeviceReport`` field)
UPLOAD_ENCODING_KEY = _UPLOAD_ENCODING_KEY  # train-config key: "packed" uploads (masked-*) or dense (Flower's)
SUMS_KEY = _SUMS_KEY  # train-config key: the strategy reads the round's sums, added up in the workers


@dataclass
class Assignment:
    """One device of a cohort: what the worker needs to simulate it this round."""

    device: int
    model: int                  # index of its model among the cohort's MODEL records
    config: int                 # index of its config among the cohort's CONFIG records
    state: DeviceState | None   # None before its first round
    node: int = 0               # its fog node (0 without fog nodes), where the uploads are added up
    leaf: int = -1              # its place in the node's summation order (-1: its upload travels)


@dataclass
class Outcome:
    """What one device of a cohort did: ``failed`` (dropped out), or its new state, upload and report."""

    device: int
    failed: bool = False
    state: DeviceState | None = None
    upload: ArrayRecord | None = None   # None where the uploads are added up in the worker
    metrics: MetricRecord | None = None
    contribution: Sums | None = None    # its part of the round's sums, where they are added up in the worker


@dataclass
class Block:
    """The sums of the uploads of an aligned block of a fog node's leaves (``strategies.sums``)."""

    node: int
    start: int
    size: int
    sums: Sums


def _write_states(devices: list[int], states: list[DeviceState | None]) -> tuple[dict, ArrayRecord]:
    """The devices' states as COHORT's lists (``None``: no state) and their masks by device (MASKS)."""
    from flwr.app import Array

    lists = {"has-state": [s is not None for s in states],
             "steps": [s.steps if s is not None else 0 for s in states],
             "next-prune": [float(s.next_prune) if s is not None else 0.0 for s in states]}
    masks = ArrayRecord({str(d): Array(np.asarray(s.mask, dtype=np.uint8)) for d, s in zip(devices, states)
                         if s is not None and s.mask is not None})
    return lists, masks


def _read_state(content: RecordDict, i: int) -> DeviceState | None:
    """The state of the ``i``-th device of a cohort message or reply (``_write_states``)."""
    cohort, masks = content[COHORT], content[MASKS]
    if not cohort["has-state"][i]:
        return None
    device = str(cohort["devices"][i])
    bits = masks[device].numpy() if device in masks else None
    return DeviceState(int(cohort["steps"][i]), float(cohort["next-prune"][i]), bits)


def cohort_message(assignments: list[Assignment], models: list[ArrayRecord], configs: list[ConfigRecord],
                   download: str) -> RecordDict:
    """The content of a cohort message (see the module)."""
    devices = [a.device for a in assignments]
    states, masks = _write_states(devices, [a.state for a in assignments])
    content = RecordDict({COHORT: ConfigRecord({
        "devices": devices, "model": [a.model for a in assignments], "config": [a.config for a in assignments],
        "node": [a.node for a in assignments], "leaf": [a.leaf for a in assignments],
        **states, "download": download}), MASKS: masks})
    for i, model in enumerate(models):
        content[MODEL + str(i)] = model
    for j, config in enumerate(configs):
        content[CONFIG + str(j)] = config
    return content


def read_cohort(content: RecordDict) -> tuple[list[Assignment], str]:
    """``(assignments, download)`` of a cohort message."""
    cohort = content[COHORT]
    return [Assignment(int(device), int(cohort["model"][i]), int(cohort["config"][i]), _read_state(content, i),
                       int(cohort["node"][i]), int(cohort["leaf"][i]))
            for i, device in enumerate(cohort["devices"])], str(cohort["download"])


def cohort_reply(outcomes: list[Outcome], crashed: tuple[int, str] | tuple[int, str, bool] | None = None,
                 blocks: list[Block] = ()) -> RecordDict:
    """The content of a cohort's reply (see the module); ``crashed``: (device, reason[, diverged]) that
    ended it, ``diverged`` where its training diverged rather than failed."""
    from flwr.app import Array

    devices = [o.device for o in outcomes]
    states, masks = _write_states(devices, [o.state for o in outcomes])
    content = RecordDict({COHORT: ConfigRecord({"devices": devices, "failed": [o.failed for o in outcomes],
                                                **states}), MASKS: masks,
                          BLOCKS: ConfigRecord({"node": [b.node for b in blocks], "start": [b.start for b in blocks],
                                                "size": [b.size for b in blocks]})})
    for o in outcomes:
        if not o.failed:
            if o.upload is not None:
                content[UPLOAD + str(o.device)] = o.upload
            content[REPORT + str(o.device)] = o.metrics
    for i, block in enumerate(blocks):
        content[SUMS + str(i)] = ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in to_arrays(block.sums).items()})
    if crashed is not None:
        content[CRASHED] = ConfigRecord({"device": crashed[0], "reason": crashed[1],
                                         "diverged": bool(crashed[2]) if len(crashed) > 2 else False})
    return content


def read_reply(content: RecordDict) -> tuple[list[Outcome], tuple[int, str, bool] | None, list[Block]]:
    """``(outcomes, crashed, blocks)`` of a cohort's reply; ``crashed``: (device, reason, diverged)."""
    cohort = content[COHORT]
    out = [Outcome(int(device), failed=True) if cohort["failed"][i] else
           Outcome(int(device), state=_read_state(content, i), upload=content.get(UPLOAD + str(device)),
                   metrics=content[REPORT + str(device)])
           for i, device in enumerate(cohort["devices"])]
    listed = content[BLOCKS]
    blocks = [Block(int(node), int(start), int(size),
                    from_arrays({k: a.numpy() for k, a in content[SUMS + str(i)].items()}))
              for i, (node, start, size) in enumerate(zip(listed["node"], listed["start"], listed["size"]))]
    crashed = None
    if CRASHED in content:
        record = content[CRASHED]
        crashed = (int(record["device"]), str(record["reason"]), bool(record.get("diverged", False)))
    return out, crashed, blocks
