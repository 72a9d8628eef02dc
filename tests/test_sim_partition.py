"""Splitting the training set (Flower Datasets' partitioners) or drawing it per device, from the labels alone."""

import pickle
import time
import warnings

import numpy as np
import pytest

from fogsim.errors import FogsimError
from fogsim.sim.partition import make_partitioner, partition_indices
from fogsim.sim.scenario import Partition, parse_scenario

LABELS = np.repeat(np.arange(10), 60)


def every(parts):
    return [parts[d] for d in range(len(parts))]


def flower_partitions(labels, spec, devices, seed):
    """Each device's rows through Flower Datasets' ``load_partition``, one dataset per device (the reference)."""
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    order = np.random.default_rng(seed).permutation(len(labels)) if spec.kind == "iid" else np.arange(len(labels))
    partitioner = IidPartitioner(devices) if spec.kind == "iid" else make_partitioner(spec, devices, seed)
    partitioner.dataset = Dataset.from_dict({"label": labels[order].tolist(), "index": order.tolist()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return [np.asarray(partitioner.load_partition(d)["index"], dtype=np.int64) for d in range(devices)]


def assert_same(parts, reference):
    assert len(parts) == len(reference)
    assert all(p.dtype == np.int64 and np.array_equal(p, r) for p, r in zip(every(parts), reference))
    assert np.array_equal(parts.sizes(), [len(r) for r in reference])


@pytest.mark.parametrize("rows, devices", [(600, 6), (601, 7), (599, 60), (1797, 100), (10, 10), (13, 12)])
def test_iid_is_flowers_iid_partitioner_on_the_permuted_rows(rows, devices):
    labels = np.arange(rows) % 10
    assert_same(partition_indices(labels, Partition(kind="iid"), devices, seed=4),
                flower_partitions(labels, Partition(kind="iid"), devices, seed=4))


@pytest.mark.parametrize("spec, rows, devices", [
    (Partition(kind="dirichlet"), 600, 6), (Partition(kind="dirichlet", alpha=0.2, min_size=0), 599, 7),
    (Partition(kind="shards"), 600, 6), (Partition(kind="shards", shards_per_device=3), 601, 7)])
def test_label_splits_are_flowers_load_partition(spec, rows, devices):
    labels = np.random.default_rng(1).integers(0, 10, rows)
    assert_same(partition_indices(labels, spec, devices, seed=3), flower_partitions(labels, spec, devices, seed=3))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_nonempty_and_seeded(kind):
    parts = every(partition_indices(LABELS, Partition(kind=kind), 6, seed=3))
    everything = np.concatenate(parts)
    assert len(everything) == len(set(everything.tolist())) and all(len(p) for p in parts)
    again = every(partition_indices(LABELS, Partition(kind=kind), 6, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_iid_covers_the_set_and_shards_are_skewed():
    iid = every(partition_indices(LABELS, Partition(kind="iid"), 6, seed=0))
    assert sorted(np.concatenate(iid).tolist()) == list(range(len(LABELS)))
    assert all(len(set(LABELS[p])) >= 8 for p in iid)
    shards = every(partition_indices(LABELS, Partition(kind="shards", shards_per_device=2), 6, seed=0))
    assert all(len(set(LABELS[p])) <= 4 for p in shards)


def test_a_device_outside_the_fleet_is_an_index_error():
    with pytest.raises(IndexError, match="not in a fleet of 6"):
        partition_indices(LABELS, Partition(), 6, seed=0)[6]


def test_more_devices_than_samples_is_refused_and_points_at_per_device():
    with pytest.raises(FogsimError, match="devices but only.*data.partition.per_device"):
        partition_indices(LABELS[:5], Partition(), 6, seed=0)


def test_more_shards_than_samples_is_a_one_line_error():
    with pytest.raises(FogsimError, match="data.partition.shards_per_device: 100 devices x 7 shards"):
        partition_indices(LABELS, Partition(kind="shards", shards_per_device=7), 100, seed=0)


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_per_device_draws_distinct_rows_that_do_not_depend_on_the_fleet(kind):
    spec = Partition(kind=kind, per_device=25)
    small, huge = partition_indices(LABELS, spec, 10, seed=2), partition_indices(LABELS, spec, 100_000, seed=2)
    assert np.array_equal(small[7], huge[7]) and huge[7].dtype == np.int64
    assert all(len(set(small[d].tolist())) == 25 and small[d].max() < len(LABELS) for d in range(10))
    assert np.array_equal(huge.sizes(), np.full(100_000, 25))
    assert not np.array_equal(small[7], small[8])
    assert not np.array_equal(small[7], partition_indices(LABELS, spec, 10, seed=3)[7])


def test_per_device_dirichlet_skews_labels_and_iid_does_not():
    def top_share(kind):
        parts = partition_indices(LABELS, Partition(kind=kind, alpha=0.1, per_device=50), 40, seed=0)
        return np.mean([np.bincount(LABELS[p]).max() / 50 for p in every(parts)])
    assert top_share("dirichlet") > 0.6 > 0.3 > top_share("iid")


def test_per_device_dirichlet_refills_from_other_classes_when_a_class_runs_out():
    parts = partition_indices(LABELS, Partition(kind="dirichlet", alpha=0.05, per_device=len(LABELS)), 3, seed=0)
    assert all(sorted(p.tolist()) == list(range(len(LABELS))) for p in every(parts))


def test_per_device_larger_than_the_set_is_refused():
    with pytest.raises(FogsimError, match="data.partition.per_device: 601 samples.*at most 600"):
        partition_indices(LABELS, Partition(per_device=601), 3, seed=0)


def test_per_device_with_shards_is_refused_by_the_scenario():
    with pytest.raises(FogsimError, match="data.partition.per_device: shards split the set"):
        parse_scenario({"fleet": [{"profile": "samd21"}], "data": {"partition": {"kind": "shards", "per_device": 5}}})


def test_a_huge_fleet_is_quick_to_split_and_small_to_pickle():
    labels = np.random.default_rng(0).integers(0, 10, 60_000)
    start = time.perf_counter()
    iid = partition_indices(labels, Partition(kind="iid"), 50_000, seed=0)
    assert time.perf_counter() - start < 5
    assert len(pickle.dumps(iid)) < 1_000_000
    drawn = partition_indices(labels[:1797], Partition(kind="dirichlet", per_device=50), 100_000, seed=0)
    assert len(pickle.dumps(drawn)) < 1_000_000
    assert np.array_equal(pickle.loads(pickle.dumps(drawn))[99_999], drawn[99_999])
