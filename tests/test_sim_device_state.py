"""The server's store of device states: packed masks, each distinct one kept once, spilled to disk."""

import numpy as np

from fogsim.sim.device_state import DeviceState, DeviceStates, pack_masks, unpack_masks

SHAPES = {"0.weight": (3, 5), "2.weight": (7,)}


def random_masks(seed):
    rng = np.random.default_rng(seed)
    return {name: rng.random(shape) < 0.4 for name, shape in SHAPES.items()}


def test_masks_pack_to_one_bit_per_entry_and_back():
    masks = random_masks(0)
    bits = pack_masks(masks, list(SHAPES))
    assert bits.dtype == np.uint8 and bits.size == -(-22 // 8)
    back = unpack_masks(bits, SHAPES)
    assert list(back) == list(SHAPES) and all(np.array_equal(back[n], masks[n]) for n in SHAPES)


def test_a_device_that_never_trained_has_no_state_and_costs_nothing():
    states = DeviceStates(100_000, memory_bytes=1024)
    assert states.get(99_999) is None and len(states.masks) == 0
    assert states.steps.nbytes + states.next_prune.nbytes + states.trained.nbytes < 2_000_000


def test_devices_with_the_same_mask_share_it_and_a_dropped_mask_is_freed():
    states = DeviceStates(3, memory_bytes=1 << 20)
    same, other = pack_masks(random_masks(1), list(SHAPES)), pack_masks(random_masks(2), list(SHAPES))
    states.put(0, DeviceState(5, 1.5, same))
    states.put(1, DeviceState(6, 2.5, same.copy()))
    assert len(states.masks) == 1 and states.masks.in_memory == same.nbytes
    states.put(1, DeviceState(7, 3.5, other))
    assert len(states.masks) == 2
    states.put(0, DeviceState(8, 4.5, other))
    assert len(states.masks) == 1, "no device holds the first mask any more"
    got = states.get(0)
    assert (got.steps, got.next_prune) == (8, 4.5) and np.array_equal(got.mask, other)


def test_masks_beyond_the_memory_limit_go_to_disk_and_the_directory_goes_on_close():
    one = pack_masks(random_masks(3), list(SHAPES)).nbytes
    states = DeviceStates(10, memory_bytes=2 * one)
    masks = [pack_masks(random_masks(10 + d), list(SHAPES)) for d in range(5)]
    for device, bits in enumerate(masks):
        states.put(device, DeviceState(device, 0.0, bits))
    assert states.masks.spilled == 3 and states.masks.in_memory == 2 * one
    spill = states.masks.spill_dir
    assert spill is not None and len(list(spill.iterdir())) == 3
    assert all(np.array_equal(states.get(d).mask, masks[d]) for d in range(5)), "spilled masks read back exactly"
    states.put(4, DeviceState(9, 0.0, masks[0]))
    assert len(list(spill.iterdir())) == 2, "a spilled mask no device holds is deleted"
    states.close()
    assert not spill.exists()


def test_a_dense_device_has_a_schedule_position_but_no_mask():
    states = DeviceStates(2, memory_bytes=1024)
    states.put(1, DeviceState(3, 0.0, None))
    assert states.get(1) == DeviceState(3, 0.0, None) and len(states.masks) == 0
