"""Pruned-mask-aware averaging: the formula, its fallbacks and its argument checks."""

import numpy as np
import pytest

from strategies.masked_average import masked_average, masked_average_arrays


def test_full_masks_equal_plain_weighted_averaging():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    n = [10, 20, 70]
    full = [np.ones((4, 3), dtype=bool)] * 3
    expected = sum(nk * w for nk, w in zip(n, weights)) / sum(n)
    previous = np.zeros((4, 3), dtype=np.float32)
    np.testing.assert_allclose(masked_average(weights, full, n, previous), expected, rtol=1e-6)
    np.testing.assert_allclose(
        masked_average(weights, [None] * 3, n, previous), expected, rtol=1e-6
    )


def test_entry_nobody_kept_keeps_previous_value():
    weights = [np.array([1.0, 2.0]), np.array([3.0, 4.0])]
    masks = [np.array([True, False]), np.array([True, False])]
    result = masked_average(weights, masks, [1, 1], previous=np.array([9.0, 7.5]))
    np.testing.assert_array_equal(result, [2.0, 7.5])


def test_weights_by_examples():
    weights = [np.array([0.0]), np.array([4.0])]
    result = masked_average(weights, [None, None], [1, 3], previous=np.array([0.0]))
    np.testing.assert_array_equal(result, [3.0])


def test_pruned_entries_do_not_dilute():
    # Client 0 pruned entry 1 (sends 0 there); client 1 kept it with value 2.
    weights = [np.array([1.0, 0.0]), np.array([3.0, 2.0])]
    masks = [np.array([True, False]), np.array([True, True])]
    n = [1, 1]
    masked = masked_average(weights, masks, n, previous=np.zeros(2))
    fedavg = (weights[0] + weights[1]) / 2
    np.testing.assert_array_equal(masked, [2.0, 2.0])
    assert fedavg[1] == 1.0  # plain FedAvg halves the kept weight


def test_values_at_pruned_entries_are_never_read():
    weights = [np.array([np.nan, 1.0]), np.array([5.0, 3.0])]
    masks = [np.array([False, True]), np.array([True, True])]
    result = masked_average(weights, masks, [1, 1], previous=np.zeros(2))
    np.testing.assert_array_equal(result, [5.0, 2.0])


def test_float_01_masks_as_torch_prune_keeps_them():
    weights = [np.array([1.0, 4.0]), np.array([3.0, 8.0])]
    masks = [np.array([1.0, 0.0], dtype=np.float32), np.array([1.0, 1.0], dtype=np.float32)]
    result = masked_average(weights, masks, [1, 1], previous=np.zeros(2))
    np.testing.assert_array_equal(result, [2.0, 8.0])


def test_result_has_previous_dtype_and_shape():
    previous = np.zeros((2, 2), dtype=np.float32)
    weights = [np.ones((2, 2), dtype=np.float64)]
    result = masked_average(weights, [None], [5], previous)
    assert result.dtype == np.float32 and result.shape == (2, 2)


def test_client_with_zero_examples_counts_for_nothing():
    weights = [np.array([100.0]), np.array([1.0])]
    result = masked_average(weights, [None, None], [0, 4], previous=np.array([0.0]))
    np.testing.assert_array_equal(result, [1.0])


@pytest.mark.parametrize(
    ("weights", "masks", "n", "previous", "message"),
    [
        ([np.zeros(2)], [None, None], [1], np.zeros(2), "one entry per client"),
        ([np.zeros(2)], [None], [1, 2], np.zeros(2), "one entry per client"),
        ([np.zeros(3)], [None], [1], np.zeros(2), "client 0: weights have shape"),
        ([np.zeros(2)], [np.ones(3, bool)], [1], np.zeros(2), "client 0: mask has shape"),
        ([np.zeros(2)], [np.array([0.5, 1.0])], [1], np.zeros(2), "only 0/1"),
        ([np.zeros(2)], [None], [-1], np.zeros(2), "non-negative"),
        ([np.zeros(2)], [None], [float("nan")], np.zeros(2), "finite"),
    ],
)
def test_bad_arguments_are_refused(weights, masks, n, previous, message):
    with pytest.raises(ValueError, match=message):
        masked_average(weights, masks, n, previous)


def test_whole_model_masks_weights_and_averages_the_rest():
    previous = {"fc.weight": np.full((2, 2), 5.0), "fc.bias": np.zeros(2)}
    clients = [
        {"fc.weight": np.array([[1.0, 0.0], [0.0, 0.0]]), "fc.bias": np.array([1.0, 1.0])},
        {"fc.weight": np.array([[3.0, 6.0], [0.0, 0.0]]), "fc.bias": np.array([3.0, 5.0])},
    ]
    masks = [
        {"fc.weight": np.array([[True, False], [False, False]])},
        {"fc.weight": np.array([[True, True], [False, False]])},
    ]
    result = masked_average_arrays(clients, masks, [1, 3], previous)
    assert list(result) == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(result["fc.weight"], [[2.5, 6.0], [5.0, 5.0]])
    np.testing.assert_array_equal(result["fc.bias"], [2.5, 4.0])


def test_whole_model_refuses_mismatched_models():
    previous = {"a": np.zeros(1), "b": np.zeros(1)}
    with pytest.raises(ValueError, match="client 1 sends tensors"):
        masked_average_arrays(
            [{"a": np.zeros(1), "b": np.zeros(1)}, {"a": np.zeros(1)}], [{}, {}], [1, 1], previous
        )
    with pytest.raises(ValueError, match="masks for unknown tensors"):
        masked_average_arrays([{"a": np.zeros(1)}], [{"z": np.ones(1, bool)}], [1], previous)
    with pytest.raises(ValueError, match="previous global model lacks"):
        masked_average_arrays([{"c": np.zeros(1)}], [{}], [1], previous)
    with pytest.raises(ValueError, match="zero clients"):
        masked_average_arrays([], [], [], previous)
