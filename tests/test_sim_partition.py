"""Splitting the training set with Flower Datasets' partitioners, from the labels alone."""

import numpy as np
import pytest

from fogsim.errors import FogsimError
from fogsim.sim.partition import partition_indices
from fogsim.sim.scenario import Partition

LABELS = np.repeat(np.arange(10), 60)


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_nonempty_and_seeded(kind):
    parts = partition_indices(LABELS, Partition(kind=kind), 6, seed=3)
    everything = np.concatenate(parts)
    assert len(everything) == len(set(everything.tolist())) and all(len(p) for p in parts)
    again = partition_indices(LABELS, Partition(kind=kind), 6, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_iid_covers_the_set_and_shards_are_skewed():
    iid = partition_indices(LABELS, Partition(kind="iid"), 6, seed=0)
    assert sorted(np.concatenate(iid).tolist()) == list(range(len(LABELS)))
    assert all(len(set(LABELS[p])) >= 8 for p in iid)
    shards = partition_indices(LABELS, Partition(kind="shards", shards_per_device=2), 6, seed=0)
    assert all(len(set(LABELS[p])) <= 4 for p in shards)


def test_more_devices_than_samples_is_refused():
    with pytest.raises(FogsimError, match="devices but only"):
        partition_indices(LABELS[:5], Partition(), 6, seed=0)
