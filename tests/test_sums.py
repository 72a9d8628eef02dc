"""A round's sums (strategies.sums): the rules read from them, one summation order whatever the split."""

import copy

import numpy as np
import pytest

from strategies import RULES, MaskedFedAvg, ResumableFedAvg, SUMS_KEY, encoded_nbytes, pack_masked_state, \
    packed_nbytes
from strategies.masked_average import masked_average_arrays, masked_average_of_sums
from strategies.sums import Sums, SumStack, combine, from_arrays, is_sums, to_arrays, tree_total

SHAPES = {"w": (5, 4), "b": (5,)}


def clients(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    states, masks, weights = [], [], []
    for _ in range(count):
        mask = rng.random(SHAPES["w"]) < rng.uniform(0.2, 0.9)
        w = rng.normal(size=SHAPES["w"]).astype(np.float32)
        w[~mask] = rng.choice([np.nan, np.inf, 7.0], size=int((~mask).sum()))  # never read
        states.append({"w": w, "b": rng.normal(size=SHAPES["b"]).astype(np.float32)})
        masks.append({"w": mask})
        weights.append(float(rng.integers(1, 50)))
    return states, masks, weights


def leaves(count: int, seed: int = 0) -> list[Sums | None]:
    states, masks, weights = clients(count, seed)
    out = [Sums.of_client(s, m, n) for s, m, n in zip(states, masks, weights)]
    for dropped in np.random.default_rng(seed + 1).choice(count, size=count // 5, replace=False):
        out[dropped] = None  # a device that dropped out adds nothing
    return out


def reference(parts: list[Sums | None], start: int, size: int) -> Sums | None:
    """The tree's sum of an aligned block, by its definition."""
    if size == 1:
        return parts[start] if start < len(parts) else None
    half = size // 2
    return combine(reference(parts, start, half), reference(parts, start + half, half))


def same(a: Sums, b: Sums) -> bool:
    return (a.total == b.total and a.clients == b.clients
            and all(np.array_equal(a.weighted[k], b.weighted[k]) for k in a.weighted)
            and all(np.array_equal(np.asarray(a.weight[k]), np.asarray(b.weight[k])) for k in a.weight)
            and a.kept.keys() == b.kept.keys() and all(np.array_equal(a.kept[k], b.kept[k]) for k in a.kept))


def split_sum(parts: list[Sums | None], cuts: list[int]) -> Sums | None:
    """Workers each stack a contiguous run of the leaves; the server completes the tree."""
    blocks = {}
    parts = copy.deepcopy(parts)  # a stack adds into the sums it is given
    for lo, hi in zip([0, *cuts], [*cuts, len(parts)]):
        stack = SumStack()
        for leaf in range(lo, hi):
            stack.push(leaf, parts[leaf])
        blocks.update({(start, size): sums for start, size, sums in stack.blocks if sums is not None})
    return tree_total(blocks, len(parts))


@pytest.mark.parametrize("count", [1, 2, 7, 16, 37])
def test_the_total_is_the_same_however_the_leaves_are_split_over_workers(count):
    parts = leaves(count)
    width = 1 << max(0, (count - 1).bit_length())
    expected = reference(parts, 0, width)
    rng = np.random.default_rng(count)
    for workers in range(1, min(count, 6) + 1):
        cuts = sorted(rng.choice(np.arange(1, count), size=workers - 1, replace=False).tolist()) if workers > 1 else []
        got = split_sum(parts, cuts)
        assert (got is None) == (expected is None)
        if expected is not None:
            assert same(got, expected), f"{workers} workers, cuts {cuts}"


def test_a_stack_keeps_few_blocks_and_refuses_a_gap():
    stack = SumStack()
    for leaf in range(50, 100):
        stack.push(leaf, None)
    assert [(s, z) for s, z, _ in stack.blocks] == [(50, 2), (52, 4), (56, 8), (64, 32), (96, 4)]
    with pytest.raises(ValueError, match="does not follow"):
        stack.push(101, None)
    with pytest.raises(ValueError, match="aligned block"):
        tree_total({(3, 2): None}, 8)


@pytest.mark.parametrize("rule", ["keepers", "delta", "consensus"])
def test_the_rules_from_sums_are_the_rules_over_clients(rule):
    states, masks, weights = clients(9)
    previous = {"w": np.linspace(-1, 1, 20, dtype=np.float32).reshape(SHAPES["w"]),
                "b": np.zeros(SHAPES["b"], np.float32)}
    per_client = masked_average_arrays(states, masks, weights, previous, rule)
    parts = [Sums.of_client(s, m, n) for s, m, n in zip(states, masks, weights)]
    total = split_sum(parts, [3, 4])
    from_sums = masked_average_of_sums(total, previous, rule)
    for name in previous:
        assert from_sums[name].dtype == previous[name].dtype
        np.testing.assert_allclose(from_sums[name], per_client[name], rtol=1e-6, atol=1e-7)
        # An independent computation entry by entry.
    n = np.array(weights)[:, None, None]
    m = np.stack([mk["w"] for mk in masks])
    w = np.where(m, np.stack([s["w"] for s in states]).astype(np.float64), 0.0)
    keepers = np.divide((n * w).sum(0), (n * m).sum(0), out=np.zeros(SHAPES["w"]), where=(n * m).sum(0) > 0)
    if rule == "keepers":
        expected = np.where((n * m).sum(0) > 0, keepers, previous["w"])
        np.testing.assert_allclose(from_sums["w"], expected, rtol=1e-6)


def test_sums_travel_as_arrays_and_back():
    parts = leaves(6)
    dense = Sums.of_client({"w": np.ones(SHAPES["w"], np.float32)}, {}, 3.0)
    partly = Sums.of_client({"w": np.ones(SHAPES["w"], np.float32)}, {"w": np.eye(5, 4, dtype=bool)}, 2.0)
    for sums in [p for p in parts if p is not None] + [dense, dense + partly]:
        arrays = to_arrays(sums)
        assert is_sums(arrays) and not is_sums(sums.weighted)
        assert same(from_arrays(arrays), sums)
    assert (dense + partly).kept == {"w": None}  # one client sent it dense: nobody's entries are uncovered
    assert (dense + partly).union() == {} and partly.union()["w"].sum() == 4


def test_clients_that_send_different_tensors_cannot_be_added():
    a = Sums.of_client({"w": np.ones(2, np.float32)}, {}, 1)
    b = Sums.of_client({"v": np.ones(2, np.float32)}, {}, 1)
    with pytest.raises(ValueError, match="different tensors"):
        a + b
    with pytest.raises(ValueError, match="non-negative"):
        Sums.of_client({"w": np.ones(2)}, {}, -1)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.03, 0.2, 1.0])
def test_packed_bytes_are_counted_without_packing(density):
    rng = np.random.default_rng(3)
    state = {"w": rng.normal(size=(40, 30)).astype(np.float32), "c": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
             "b": np.zeros(40, np.float32)}
    masks = {n: rng.random(state[n].shape) < density for n in ("w", "c")}
    kept = {n: int(m.sum()) for n, m in masks.items()}
    assert packed_nbytes(state, kept) == encoded_nbytes(pack_masked_state(state, masks))


def test_which_strategies_read_sums():
    assert ResumableFedAvg().reads_sums() and MaskedFedAvg(rule="delta").reads_sums()

    class Trimmed(MaskedFedAvg):
        def aggregate_train(self, server_round, replies):
            return super().aggregate_train(server_round, replies)

    assert not Trimmed().reads_sums()  # its own aggregate_train may read every reply
    RULES["median"] = lambda weights, masks, num_examples, previous: previous
    try:
        assert not MaskedFedAvg(rule="median").reads_sums()
        keepers = RULES["keepers"]
        RULES["keepers"] = lambda *args: keepers(*args)  # a user's replacement reads the clients
        assert not MaskedFedAvg(rule="keepers").reads_sums()
        RULES["keepers"] = keepers
    finally:
        RULES.pop("median", None)
    assert SUMS_KEY == "sums-in-workers"
