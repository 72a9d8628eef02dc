"""Which training rows each device of the fleet trains on, from the labels alone.

A *split* gives every training row to at most one device: ``iid`` cuts a seeded permutation of the
rows into contiguous, near-equal shares; ``dirichlet`` and ``shards`` use Flower Datasets'
partitioners on a two-column table (``label`` and the row ``index``), so nothing is downloaded;
``natural`` gives each device the rows of one id of the data's id column (``natural_split``).
With ``per_device`` set, every device instead *draws* its own rows, on demand, from its own seed.

Both are held in a :class:`Partitions`, which is shipped to every Ray worker: a split is one
array of rows plus offsets, not one small array per device, and draws are not stored at all, so
a fleet of 100,000 devices costs a few hundred kilobytes and a device that never trains costs
nothing.
"""

from __future__ import annotations

import itertools
import operator
import warnings
from abc import ABC, abstractmethod

import numpy as np

from fogsim.errors import FogsimError
from fogsim.sim.scenario import Partition


class Partitions(ABC):
    """The int64 row indices of every device's partition, indexed by device id."""

    def __init__(self, num_devices: int):
        self._num_devices = num_devices

    def __len__(self) -> int:
        return self._num_devices

    def __getitem__(self, device: int) -> np.ndarray:
        device = operator.index(device)
        if not 0 <= device < self._num_devices:
            raise IndexError(f"device {device} is not in a fleet of {self._num_devices}")
        return self._rows(device)

    @abstractmethod
    def sizes(self) -> np.ndarray:
        """Size of every device's partition (int64), without building the partitions."""

    @abstractmethod
    def _rows(self, device: int) -> np.ndarray:
        """Row indices of one device, ``0 <= device < len(self)``."""


class Split(Partitions):
    """Disjoint, materialised partitions: device ``d`` has ``rows[offsets[d]:offsets[d + 1]]``."""

    def __init__(self, rows: np.ndarray, sizes: np.ndarray):
        super().__init__(len(sizes))
        self._all_rows = _compact(rows)
        self._offsets = _compact(np.concatenate([[0], np.cumsum(sizes)]))

    def sizes(self) -> np.ndarray:
        return np.diff(self._offsets).astype(np.int64)

    def _rows(self, device: int) -> np.ndarray:
        return self._all_rows[self._offsets[device]:self._offsets[device + 1]].astype(np.int64)


class Draws(Partitions):
    """Every device's own ``per_device`` distinct rows, drawn when asked for.

    A device's generator is the child ``device`` of the scenario seed (``SeedSequence(seed,
    spawn_key=(device,))``), so its rows depend neither on the fleet size nor on other devices.
    Without ``alpha`` the draw is uniform over the rows. With ``alpha`` the device draws class
    proportions from a symmetric Dir(alpha), then class counts (:func:`class_counts`), then that
    many rows of each class uniformly; the rows come back shuffled.
    """

    def __init__(self, num_devices: int, per_device: int, seed: int, labels: np.ndarray, alpha: float | None):
        super().__init__(num_devices)
        self._per_device, self._seed, self._alpha = per_device, seed, alpha
        self._num_rows = len(labels)
        if alpha is not None:
            self._by_class = _compact(np.argsort(labels, kind="stable"))
            self._class_sizes = np.unique(labels, return_counts=True)[1]

    def sizes(self) -> np.ndarray:
        return np.full(len(self), self._per_device, dtype=np.int64)

    def _rows(self, device: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence(self._seed, spawn_key=(device,)))
        if self._alpha is None:
            return rng.choice(self._num_rows, self._per_device, replace=False).astype(np.int64)
        counts = class_counts(rng, self._alpha, self._class_sizes, self._per_device)
        starts = np.cumsum(self._class_sizes) - self._class_sizes
        picks = [start + rng.choice(size, count, replace=False)
                 for start, size, count in zip(starts, self._class_sizes, counts) if count]
        return rng.permutation(self._by_class[np.concatenate(picks)].astype(np.int64))


def class_counts(rng: np.random.Generator, alpha: float, available: np.ndarray, n: int) -> np.ndarray:
    """How many of a device's ``n`` rows come from each class.

    Class proportions come from a symmetric Dir(alpha) and the counts from a multinomial of ``n``
    over them; a class asked for more rows than it has gives all it has, and the shortfall is drawn
    again, the same way, over the classes with rows left (uniformly if the proportions put no weight
    on them). Each round fills at least one class, so it ends; ``n`` must not exceed the rows.
    """
    shares = rng.dirichlet(np.full(len(available), alpha))
    counts = np.zeros(len(available), dtype=np.int64)
    while (left := n - counts.sum()) > 0:
        room = available - counts
        weights = np.where(room > 0, shares, 0.0)
        if weights.sum() == 0:
            weights = (room > 0).astype(float)
        counts += np.minimum(rng.multinomial(left, weights / weights.sum()), room)
    return counts


def _compact(values: np.ndarray) -> np.ndarray:
    """int32 where the (non-negative) values fit, which halves what is pickled for every Ray worker."""
    values = np.asarray(values, dtype=np.int64)
    return values.astype(np.int32) if len(values) == 0 or values.max() < 2**31 else values


def iid_split(num_rows: int, num_partitions: int, seed: int) -> Split:
    """A seeded permutation cut into contiguous shares, the first ``num_rows % num_partitions`` one larger.

    This is exactly what Flower Datasets' ``IidPartitioner`` returns on the permuted rows (Hugging
    Face's ``Dataset.shard(contiguous=True)``), without building one dataset per device.
    """
    share, extra = divmod(num_rows, num_partitions)
    sizes = np.full(num_partitions, share, dtype=np.int64)
    sizes[:extra] += 1
    return Split(np.random.default_rng(seed).permutation(num_rows), sizes)


def make_partitioner(spec: Partition, num_partitions: int, seed: int):
    from flwr_datasets.partitioner import DirichletPartitioner, ShardPartitioner

    if spec.kind == "dirichlet":
        return DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=spec.alpha,
                                    min_partition_size=spec.min_size, self_balancing=False, shuffle=True,
                                    seed=seed)
    return ShardPartitioner(num_partitions=num_partitions, partition_by="label",
                            num_shards_per_partition=spec.shards_per_device, shuffle=True, seed=seed)


def label_split(labels: np.ndarray, spec: Partition, num_partitions: int, seed: int) -> Split:
    """The Dirichlet or shards split of Flower Datasets' partitioner, read in one pass.

    ``load_partition`` selects a Hugging Face dataset per device (half a minute for 50,000 devices);
    the partitioner computes every partition's positions at once, and ``num_partitions`` (public)
    triggers that. The positions themselves are only in ``_partition_id_to_indices`` (private), so
    a test compares the result with ``load_partition`` and an upgrade that changes it fails there.
    Positions are into ``partitioner.dataset``, which the shards partitioner sorts by label, so its
    ``index`` column maps them back to training rows.
    """
    from datasets import Dataset

    partitioner = make_partitioner(spec, num_partitions, seed)
    partitioner.dataset = Dataset.from_dict({"label": labels.tolist(), "index": list(range(len(labels)))})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pyarrow's deprecation inside flwr_datasets' sort
            partitioner.num_partitions  # reading it computes the whole split
    except ValueError as error:
        raise FogsimError(f"data.partition: {spec.kind} split into {num_partitions} partitions failed "
                          f"({' '.join(str(error).split())}); raise alpha, lower min_size or use fewer devices") \
            from None
    positions = [partitioner._partition_id_to_indices[i] for i in range(num_partitions)]
    sizes = np.fromiter(map(len, positions), dtype=np.int64, count=num_partitions)
    flat = np.fromiter(itertools.chain.from_iterable(positions), dtype=np.int64, count=int(sizes.sum()))
    rows = partitioner.dataset.with_format("arrow")[:]["index"].to_numpy()  # not row by row, as dataset["index"]
    return Split(rows[flat], sizes)


def natural_split(ids: np.ndarray, num_partitions: int, seed: int, column: str = "id") -> Split:
    """Each device the rows of one id: Flower Datasets' ``NaturalIdPartitioner`` numbers the ids (sorted),
    a seeded permutation of those numbers deals them to the devices, device ``d`` getting the ``d``-th.

    With fewer devices than ids, the ids past the fleet's size in that seeded order are left out (a
    device stays one writer, a user, a sensor, as in a federation whose population is larger than the
    devices simulated; merging ids would make devices that exist nowhere). More devices than ids is
    refused. The rows of an id are in training-set order, as the partitioner's ``load_partition``
    gives them; they are found with numpy in one pass rather than by its row-by-row loop.
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    ids = np.asarray(ids)
    partitioner = NaturalIdPartitioner(partition_by="id")
    partitioner.dataset = Dataset.from_dict({"id": ids.tolist()})
    count = partitioner.num_partitions  # numbers the sorted unique ids
    if num_partitions > count:
        raise FogsimError(f"fleet: {num_partitions} devices but the id column {column} has only {count} ids, one "
                          f"per device with kind natural; use at most {count} devices (fleet[i].count), or another "
                          "partition kind")
    natural = partitioner.partition_id_to_natural_id
    unique, codes = np.unique(ids, return_inverse=True)  # the same sorted order as the partitioner's numbers
    if len(unique) != count or any(unique[i] != natural[i] for i in range(count)):  # a changed partitioner
        raise AssertionError("NaturalIdPartitioner numbers the ids otherwise than sorted; fogsim needs updating")
    chosen = np.random.default_rng(seed).permutation(count)[:num_partitions]
    by_id = np.argsort(codes, kind="stable")  # rows grouped by id, each group in row order
    counts = np.bincount(codes, minlength=count)
    starts = np.concatenate([[0], np.cumsum(counts)])
    rows = np.concatenate([by_id[starts[i]:starts[i + 1]] for i in chosen])
    return Split(rows, counts[chosen])


def partition_indices(labels: np.ndarray, spec: Partition, num_partitions: int, seed: int,
                      ids: np.ndarray | None = None) -> Partitions:
    """Row indices of each device's partition; every partition is non-empty. ``ids`` (one per training
    row) is the id column a natural partition splits by."""
    labels = np.asarray(labels)
    if spec.kind == "natural":
        if ids is None:
            raise FogsimError(f"data.partition.by: the data has no id column {spec.by}")
        return natural_split(ids, num_partitions, seed, spec.by)
    if spec.per_device is not None:
        if spec.per_device > len(labels):
            raise FogsimError(f"data.partition.per_device: {spec.per_device} samples per device but the training "
                              f"set has only {len(labels)}; set it to at most {len(labels)}")
        alpha = spec.alpha if spec.kind == "dirichlet" else None
        return Draws(num_partitions, spec.per_device, seed, labels, alpha)
    if num_partitions > len(labels):
        raise FogsimError(f"fleet: {num_partitions} devices but only {len(labels)} training samples; "
                          "use fewer devices or a larger dataset, or set data.partition.per_device to let every "
                          "device draw its own samples")
    if spec.kind == "iid":
        return iid_split(len(labels), num_partitions, seed)
    if spec.kind == "shards" and num_partitions * spec.shards_per_device > len(labels):
        raise FogsimError(f"data.partition.shards_per_device: {num_partitions} devices x {spec.shards_per_device} "
                          f"shards need at least {num_partitions * spec.shards_per_device} training samples, the set "
                          f"has {len(labels)}; use fewer shards or devices")
    split = label_split(labels, spec, num_partitions, seed)
    empty = np.flatnonzero(split.sizes() == 0)
    if len(empty):
        raise FogsimError(f"data.partition: device {empty[0]} gets no training samples from the {spec.kind} split; "
                          "use fewer devices, fewer shards or a larger dataset")
    return split
