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


# --- every rule against an independent, entry-by-entry reference -------------------------------

from strategies.masked_average import RULES, consensus, delta, keepers, kept_by_nobody  # noqa: E402


def _reference(rule, weights, masks, n, previous, quorum=0.5):
    """The rules' formulas written out one entry at a time, in plain Python floats."""
    out = np.empty(previous.shape, dtype=np.float64)
    total = float(sum(n))
    for j in np.ndindex(previous.shape):
        kept = [(float(nk), float(w[j])) for w, m, nk in zip(weights, masks, n) if m is None or m[j]]
        weight = sum(nk for nk, _ in kept)
        keepers_value = sum(nk * wj for nk, wj in kept) / weight if weight > 0 else float(previous[j])
        if rule == "keepers":
            out[j] = keepers_value
        elif rule == "delta":
            out[j] = previous[j] + sum(nk * (wj - previous[j]) for nk, wj in kept) / total if total > 0 \
                else previous[j]
        else:
            out[j] = (keepers_value if weight >= quorum * total and weight > 0 else 0.0) if total > 0 \
                else previous[j]
    return out.astype(previous.dtype)


def _random_round(seed, clients=5, shape=(4, 6)):
    rng = np.random.default_rng(seed)
    weights, masks = [], []
    for _ in range(clients):
        mask = rng.random(shape) < rng.uniform(0.1, 0.9)
        w = rng.normal(size=shape).astype(np.float32)
        # Garbage where the client pruned: a rule that reads it returns NaN or inf somewhere.
        w[~mask] = rng.choice([np.nan, np.inf, -np.inf, 1e30], size=int((~mask).sum()))
        weights.append(w)
        masks.append(mask)
    masks[-1] = None if seed % 2 else masks[-1]  # a client without a mask kept everything
    if masks[-1] is None:
        weights[-1] = rng.normal(size=shape).astype(np.float32)
    n = rng.integers(0, 50, size=clients).astype(float)
    n[0] = 7.0
    previous = rng.normal(size=shape).astype(np.float32)
    return weights, masks, n, previous


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("seed", range(8))
def test_every_rule_matches_the_reference_on_random_masks_with_garbage(rule, seed):
    weights, masks, n, previous = _random_round(seed)
    got = RULES[rule](weights, masks, n, previous)
    assert got.dtype == previous.dtype and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _reference(rule, weights, masks, n, previous), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("quorum", [0.2, 0.5, 0.75, 1.0])
def test_consensus_matches_the_reference_at_every_quorum(quorum):
    weights, masks, n, previous = _random_round(3, clients=6)
    np.testing.assert_allclose(consensus(weights, masks, n, previous, quorum=quorum),
                               _reference("consensus", weights, masks, n, previous, quorum), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_with_full_masks_every_rule_is_fedavg(rule):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(3, 2)) for _ in range(3)]
    n = [5.0, 1.0, 4.0]
    fedavg = sum(nk * w for nk, w in zip(n, weights)) / sum(n)
    previous = rng.normal(size=(3, 2))
    np.testing.assert_allclose(RULES[rule](weights, [np.ones((3, 2), bool)] * 3, n, previous), fedavg)
    np.testing.assert_allclose(RULES[rule](weights, [None] * 3, n, previous), fedavg)


def test_delta_damps_an_entry_kept_by_few_instead_of_shrinking_it():
    # Entry 1 is kept by one of two equal clients, which moved it from 1.0 to 3.0.
    weights = [np.array([2.0, np.nan]), np.array([4.0, 3.0])]
    masks = [np.array([True, False]), np.array([True, True])]
    previous = np.array([0.0, 1.0])
    np.testing.assert_array_equal(delta(weights, masks, [1, 1], previous), [3.0, 2.0])  # half way
    np.testing.assert_array_equal(keepers(weights, masks, [1, 1], previous), [3.0, 3.0])  # all the way


def test_consensus_drops_what_the_majority_pruned():
    weights = [np.array([2.0, np.nan, 5.0]), np.array([4.0, 3.0, np.nan]), np.array([6.0, np.nan, 7.0])]
    masks = [np.array([1, 0, 1], bool), np.array([1, 1, 0], bool), np.array([1, 0, 1], bool)]
    got = consensus(weights, masks, [1, 1, 1], previous=np.array([9.0, 9.0, 9.0]))
    np.testing.assert_array_equal(got, [4.0, 0.0, 6.0])


def test_no_examples_keep_the_previous_tensor():
    previous = np.array([1.5, -2.0])
    for rule in RULES.values():
        np.testing.assert_array_equal(rule([np.array([5.0, 5.0])], [None], [0.0], previous), previous)


def test_masked_average_dispatches_by_rule_name_and_refuses_unknown_ones():
    weights, masks, n, previous = _random_round(2)
    for name, rule in RULES.items():
        np.testing.assert_array_equal(masked_average(weights, masks, n, previous, rule=name),
                                      rule(weights, masks, n, previous))
    with pytest.raises(ValueError, match="unknown aggregation rule 'median'"):
        masked_average(weights, masks, n, previous, rule="median")
    with pytest.raises(ValueError, match="quorum"):
        consensus(weights, masks, n, previous, quorum=0.0)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_unmasked_tensors_are_fedavg_whatever_the_rule(rule):
    rng = np.random.default_rng(4)
    clients = [{"w": rng.normal(size=(2, 2)), "b": rng.normal(size=2)} for _ in range(2)]
    masks = [{"w": np.array([[1, 0], [1, 1]], bool)}, {"w": np.array([[0, 0], [1, 1]], bool)}]
    previous = {"w": np.zeros((2, 2)), "b": np.full(2, 100.0)}
    out = masked_average_arrays(clients, masks, [1, 3], previous, rule)
    np.testing.assert_allclose(out["b"], (clients[0]["b"] + 3 * clients[1]["b"]) / 4)
    np.testing.assert_allclose(out["w"], RULES[rule]([c["w"] for c in clients], [m["w"] for m in masks],
                                                     [1, 3], previous["w"]))


def test_kept_by_nobody_marks_entries_no_client_kept():
    masks = [{"w": np.array([1, 0, 0], bool)}, {"w": np.array([0, 0, 1], bool)}]
    got = kept_by_nobody(masks, {"w": (3,), "b": (2,)})
    assert list(got) == ["w"]
    np.testing.assert_array_equal(got["w"], [False, True, False])
