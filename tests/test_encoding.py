"""Sparse upload encoding: exact round trips, the cheaper index encoding, whole models."""

import numpy as np
import pytest

from strategies.encoding import (
    BITMAP,
    COO,
    decode_sparse,
    dense_masked_state,
    encode_sparse,
    encoded_nbytes,
    pack_masked_state,
    unpack_masked_state,
)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
def test_round_trip_is_exact_and_picks_the_smaller_index(density):
    rng = np.random.default_rng(1)
    shape = (50, 40)
    values = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < density
    encoded = encode_sparse(values, mask)

    dense, decoded_mask = decode_sparse(encoded, shape)
    np.testing.assert_array_equal(decoded_mask, mask)
    np.testing.assert_array_equal(dense, np.where(mask, values, 0))
    assert dense.dtype == np.float32

    indices_nbytes = 4 * int(mask.sum())
    bitmap_nbytes = -(-mask.size // 8)
    assert encoded["index"].nbytes == min(indices_nbytes, bitmap_nbytes)
    expected_code = COO if indices_nbytes < bitmap_nbytes else BITMAP
    assert int(encoded["encoding"][0]) == expected_code
    assert encoded_nbytes(encoded) == 4 * int(mask.sum()) + encoded["index"].nbytes + 1


def test_sparse_upload_is_smaller_than_dense():
    values = np.ones((300, 784), dtype=np.float32)
    mask = np.zeros(values.shape, dtype=bool)
    mask.flat[::10] = True  # density 0.1, compression 10x
    assert encoded_nbytes(encode_sparse(values, mask)) < values.nbytes / 4


def test_decode_refuses_inconsistent_payloads():
    encoded = encode_sparse(np.arange(16.0), np.arange(16) % 2 == 0)
    with pytest.raises(ValueError, match="does not fit"):
        decode_sparse(encoded, (4, 5))
    short = dict(encoded, values=encoded["values"][:-1])
    with pytest.raises(ValueError, match="values sent for"):
        decode_sparse(short, (16,))
    with pytest.raises(ValueError, match="unknown index encoding"):
        decode_sparse(dict(encoded, encoding=np.array([7], np.int8)), (16,))


def test_encode_refuses_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="mask has shape"):
        encode_sparse(np.zeros((2, 3)), np.ones((3, 2), bool))


def test_whole_model_round_trip_with_dense_unmasked_tensors():
    rng = np.random.default_rng(2)
    state = {
        "fc1.weight": rng.normal(size=(30, 20)).astype(np.float32),
        "fc1.bias": rng.normal(size=30).astype(np.float32),
        "fc2.weight": rng.normal(size=(10, 30)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    masks = {
        "fc1.weight": rng.random((30, 20)) < 0.02,
        "fc2.weight": rng.random((10, 30)) < 0.7,
    }
    packed = pack_masked_state(state, masks)
    assert "fc1.bias" in packed and "fc1.weight::values" in packed
    assert all(isinstance(a, np.ndarray) for a in packed.values())

    unpacked, unpacked_masks = unpack_masked_state(packed)
    assert list(unpacked) == list(state)
    assert set(unpacked_masks) == set(masks)
    for name, tensor in state.items():
        expected = np.where(masks[name], tensor, 0) if name in masks else tensor
        np.testing.assert_array_equal(unpacked[name], expected)
        assert unpacked[name].dtype == tensor.dtype
    for name, mask in masks.items():
        np.testing.assert_array_equal(unpacked_masks[name], mask)


def test_packed_keys_do_not_depend_on_the_chosen_encoding():
    state = {"w": np.ones(800, np.float32)}
    sparse = pack_masked_state(state, {"w": np.arange(800) == 3})
    dense = pack_masked_state(state, {"w": np.ones(800, bool)})
    assert int(sparse["w::encoding"][0]) != int(dense["w::encoding"][0])
    assert list(sparse) == list(dense)


def test_dense_upload_unpacks_to_itself():
    state = {"a": np.arange(3.0), "b": np.ones((2, 2))}
    unpacked, masks = unpack_masked_state(state)
    assert masks == {}
    assert list(unpacked) == ["a", "b"]


def test_pack_refuses_bad_names():
    with pytest.raises(ValueError, match="not in the state"):
        pack_masked_state({"a": np.zeros(2)}, {"b": np.ones(2, bool)})
    with pytest.raises(ValueError, match="reserved"):
        pack_masked_state({"a::values": np.zeros(2)}, {})
    with pytest.raises(ValueError, match="lacks fields"):
        unpack_masked_state({"a::values": np.zeros(2)})


def test_dense_masked_state_zeroes_pruned_entries_only():
    state = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([4.0])}
    dense = dense_masked_state(state, {"w": np.array([True, False, True])})
    np.testing.assert_array_equal(dense["w"], [1.0, 0.0, 3.0])
    assert dense["w"].dtype == np.float32
    np.testing.assert_array_equal(dense["b"], [4.0])
