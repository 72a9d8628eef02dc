"""Splitting the training set across the fleet with Flower Datasets' partitioners.

The partitioners work on a Hugging Face ``datasets.Dataset``; fogsim's data are already tensors
in memory, so the partitioner gets a two-column table built from the label array (``label``
and the row ``index``) and nothing is downloaded. A device's partition is a list of row indices
into the training tensors.
"""

from __future__ import annotations

import warnings

import numpy as np

from fogsim.errors import FogsimError
from fogsim.sim.scenario import Partition


def make_partitioner(spec: Partition, num_partitions: int, seed: int):
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, ShardPartitioner

    if spec.kind == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if spec.kind == "dirichlet":
        return DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=spec.alpha,
                                    min_partition_size=spec.min_size, self_balancing=False, shuffle=True,
                                    seed=seed)
    return ShardPartitioner(num_partitions=num_partitions, partition_by="label",
                            num_shards_per_partition=spec.shards_per_device, shuffle=True, seed=seed)


def partition_indices(labels: np.ndarray, spec: Partition, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Row indices of each device's partition; every partition is non-empty."""
    from datasets import Dataset

    labels = np.asarray(labels)
    if num_partitions > len(labels):
        raise FogsimError(f"fleet: {num_partitions} devices but only {len(labels)} training samples; "
                          "use fewer devices or a larger dataset")
    partitioner = make_partitioner(spec, num_partitions, seed)
    # The IID partitioner splits in order, so the rows are shuffled first (seeded).
    order = np.random.default_rng(seed).permutation(len(labels)) if spec.kind == "iid" else np.arange(len(labels))
    partitioner.dataset = Dataset.from_dict({"label": labels[order].tolist(), "index": order.tolist()})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pyarrow's deprecation inside flwr_datasets' sort
            parts = [np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
                     for i in range(num_partitions)]
    except ValueError as error:
        raise FogsimError(f"data.partition: {spec.kind} split into {num_partitions} partitions failed "
                          f"({' '.join(str(error).split())}); raise alpha, lower min_size or use fewer devices") \
            from None
    empty = [i for i, part in enumerate(parts) if len(part) == 0]
    if empty:
        raise FogsimError(f"data.partition: device {empty[0]} gets no training samples from the {spec.kind} split; "
                          "use fewer devices, fewer shards or a larger dataset")
    return parts
