"""What a device reports and what a run records, each defined once.

* ``DeviceReport`` — what a device's training reply carries (its ``MetricRecord``): the client
  builds it, the server reads it back (``to_metrics`` / ``from_metrics``; a metric's key is the
  field's name with ``-``, as Flower's own ``num-examples``);
* ``ClientRow`` — one row of ``clients.csv``: who trained where, and its report (none if the
  device dropped out);
* ``RoundRecord`` — one row of ``rounds.csv``, and the metrics the strategy's evaluation returns;
* ``TierRecord`` — one row of ``tiers.csv``;
* ``FogRecord`` — one row of ``fog_nodes.csv`` (fog scenarios only).

The CSV columns, their order and which of them are integers or text are derived from the fields,
so a new figure is one field here plus the line that computes it.
"""

from dataclasses import asdict, dataclass, fields
from typing import Mapping


def metric_key(field: str) -> str:
    """``num_examples`` -> ``num-examples``: the key of a report field in a MetricRecord."""
    return field.replace("_", "-")


@dataclass(frozen=True)
class DeviceReport:
    """A device's round, as it reports it."""

    peak_memory_bytes: int  # the highest S(d) + b a(d) of any step
    batch_size_min: int
    batch_size_max: int
    density: float          # after the round's training
    num_examples: int       # n_k, what the strategies weight by
    train_loss: float       # mean over the round's steps
    accuracy: float         # its own model on the test set, in the last round (NaN before)
    progress: int           # samples processed by the end of the round (the schedule's clock)
    upload_bytes: int
    download_bytes: int
    compute_s: float        # simulated: FLOPs / the profile's FLOP/s
    sim_time_s: float       # simulated: download + compute + upload

    def to_metrics(self) -> dict[str, int | float]:
        return {metric_key(name): value for name, value in asdict(self).items()}

    @classmethod
    def from_metrics(cls, metrics: Mapping) -> "DeviceReport":
        return cls(**{f.name: metrics[metric_key(f.name)] for f in fields(cls)})


EXAMPLES_KEY = metric_key("num_examples")
"""The metric the strategies weight a client by (``strategy.weighting: examples``)."""


@dataclass(frozen=True)
class ClientRow:
    """One sampled device in one round: ``report`` is None when it dropped out."""

    round: int
    client_id: int
    profile: str
    budget_bytes: int
    fog_node: str            # the fog node it reached the cloud through ("server": no fog layer)
    report: DeviceReport | None

    def as_row(self) -> dict:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "report"}
        return {**row, **(asdict(self.report) if self.report else {}), "failed": int(self.report is None)}


@dataclass(frozen=True)
class RoundRecord:
    """One finished round."""

    round: int
    accuracy: float          # the global model on the test set, on the entries some client of the round kept
    loss: float
    device_accuracy: float   # each client's model (global weights under its mask), by examples
    density: float           # the clients' mean density, by examples
    global_density: float    # entries some client of the round kept
    upload_bytes: int        # devices' uploads (to their fog node, or to the server without fog nodes)
    download_bytes: int      # devices' downloads
    wan_upload_bytes: int    # across the wide area to the cloud: the fog nodes' uploads (without fog: the devices')
    wan_download_bytes: int  # across the wide area from the cloud
    sim_time_s: float        # the slowest client of the round (with fog: the slowest fog node, see FogRecord)
    wall_time_s: float
    clients_available: int
    clients_sampled: int
    clients_ok: int
    clients_failed: int
    cloud_round: int         # 1 when the cloud aggregated this round (always without fog nodes)


@dataclass(frozen=True)
class TierRecord:
    """One profile's final figures: the final global model under each of its devices' last known masks."""

    profile: str
    devices: int
    devices_with_mask: int
    masks_evaluated: int
    devices_evaluated: int
    accuracy: float
    loss: float
    masked_density: float  # kept entries of the global model under the masks: not the devices' own density


@dataclass(frozen=True)
class FogRecord:
    """One fog node in one round."""

    round: int
    fog_node: str
    profile: str
    devices: int             # devices that belong to it
    clients_sampled: int
    clients_ok: int
    examples: int            # of its clients that finished the round
    accuracy: float          # its aggregate of the round, on the entries its clients kept (NaN: no client
                             # finished, or fog.evaluate is off)
    loss: float
    upload_bytes: int        # from its devices (local link)
    download_bytes: int      # to its devices
    wan_upload_bytes: int    # to the cloud (cloud rounds)
    wan_download_bytes: int  # from the cloud (cloud rounds)
    device_time_s: float     # its slowest client that finished
    aggregation_s: float     # its aggregation: 2 FLOPs per entry received, over its FLOP/s
    wan_time_s: float        # its wide-area transfers (cloud rounds)
    sim_time_s: float        # device_time_s + aggregation_s + wan_time_s


def _columns(*parts: type) -> list[str]:
    return [f.name for part in parts for f in fields(part) if f.name != "report"]


def _typed(kind: type, *parts: type) -> set[str]:
    return {f.name for part in parts for f in fields(part) if f.type in (kind, kind.__name__)}


ROUND_COLUMNS = _columns(RoundRecord)
CLIENT_COLUMNS = [*_columns(ClientRow, DeviceReport), "failed"]
TIER_COLUMNS = _columns(TierRecord)
FOG_COLUMNS = _columns(FogRecord)
INT_COLUMNS = _typed(int, ClientRow, DeviceReport, RoundRecord, TierRecord, FogRecord) | {"failed"}
TEXT_COLUMNS = _typed(str, ClientRow, TierRecord, FogRecord)
WALL_COLUMNS = ["wall_time_s"]  # the only columns that differ between two runs of one seed
