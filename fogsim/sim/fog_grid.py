"""``FogGrid``: Flower's Grid as the fog sees it — the sampled devices stand where nodes would.

The simulation's Flower nodes are worker slots, not devices: any node can simulate any
device, because a training message names its device and carries the device's state (see
``device_state``). So the fleet can be far larger than the number of nodes, and what a round
costs depends on the devices sampled in it, not on how many exist.

A strategy uses a ``FogGrid`` like any Grid. ``get_node_ids`` answers the round's sampled
device ids (``draws.participants``); the strategy addresses its messages to them, and
``send_and_receive`` hands the i-th device's message, with the device's state added, to worker
node ``i mod nodes``. Replies come back with the device's new state, which the grid keeps and
takes out of the reply, so the strategy sees Flower's own records only. The training replies
of a round are kept sorted by device, so that aggregation and the result files do not depend
on the order in which Ray finished the clients.

Downloads are sparse by default (``strategy.download``): a device whose mask the grid knows
receives the global model restricted to that mask, packed as the uploads are
(``strategies.pack_masked_state``: every prunable tensor as kept values plus a bitmap or int32
indices, whichever is smaller; the other tensors dense). The device applies its own mask to
what it receives anyway (its mask never regrows), so what it trains is the same as with the
dense download; only the bytes it receives, and so its simulated time, shrink. A device with no
mask yet (its first round, or a method that does not prune) receives the dense model, as every
device does with ``download: dense``, and so does a device whose mask kept so much that the
packed model would be larger than the dense one (a bitmap costs 1 bit per entry). Devices often
share a mask, so a round packs the model once per distinct mask, not once per device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import MessageType

from fogsim.sim import draws
from fogsim.sim.device_state import DeviceStates, pop_state, state_records, unpack_masks
from strategies import encoded_nbytes, pack_masked_state

CONNECT_TIMEOUT_S = 120
PULL_INTERVAL_S = 0.1  # Flower's own InMemoryGrid default


class Stopped(Exception):
    """The run was stopped (an interrupt, or the engine failed) while the server waited."""


class FogGrid:
    """Wraps a Flower ``Grid``; ``round`` is advanced by the server at the end of each round.

    ``download`` is ``"sparse"`` or ``"dense"`` (see the module); sparse downloads need
    ``shapes``, the prunable tensors' names and shapes in model order, to unpack the masks.
    """

    def __init__(self, grid, availability: np.ndarray, fraction: float, seed: int, states: DeviceStates,
                 nodes: int, on_reply: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None, download: str = "dense",
                 shapes: Mapping[str, tuple[int, ...]] | None = None):
        if download not in ("sparse", "dense"):
            raise ValueError(f"download must be 'sparse' or 'dense', not {download!r}")
        if download == "sparse" and shapes is None:
            raise ValueError("sparse downloads need the prunable tensors' shapes")
        self.grid = grid
        self.availability = availability  # per device
        self.fraction = fraction
        self.seed = seed
        self.states = states
        self.nodes_expected = nodes
        self.on_reply = on_reply  # (replies so far, messages sent), for training messages only
        self.stop = stop or threading.Event()  # set by the main thread to end the server's waits
        self.nodes: list[int] = []
        self.round = 1
        self.available: np.ndarray = np.empty(0, dtype=np.int64)
        self.sampled: list[int] = []
        self.replies: list[tuple[int, Message]] = []
        self._device_of_reply: dict[int, int] = {}  # id of a reply of the last send_and_receive -> device
        self.download = download
        self.shapes = dict(shapes or {})
        # One send_and_receive's packed downloads: the global arrays it sends (kept, so that their
        # id is not reused) and their numpy form by id, and a packed record per (arrays, mask).
        self._globals: dict[int, tuple[ArrayRecord, dict[str, np.ndarray]]] = {}
        self._packed: dict[tuple[int, bytes], ArrayRecord] = {}

    def __getattr__(self, name):
        return getattr(self.grid, name)

    def connect(self) -> None:
        """Wait until the simulation's worker nodes are registered (they start with the engine)."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while len(nodes := list(self.grid.get_node_ids())) < self.nodes_expected:
            self._check_stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {self.nodes_expected} simulation nodes registered "
                                   f"within {CONNECT_TIMEOUT_S} s")
            time.sleep(0.05)
        self.nodes = sorted(nodes)

    def start_round(self, round_: int) -> None:
        self.round = round_
        self.available, self.sampled = draws.participants(self.availability, self.fraction, self.seed, round_)
        self.replies = []

    def get_node_ids(self) -> list[int]:
        """The devices sampled this round: the strategy addresses its messages to them."""
        return list(self.sampled)

    def send_and_receive(self, messages, *, timeout=None):
        messages = sorted(messages, key=lambda m: m.metadata.dst_node_id)
        if not messages:
            return []
        train = messages[0].metadata.message_type == MessageType.TRAIN
        devices = [int(m.metadata.dst_node_id) for m in messages]
        try:
            outgoing = [self._for_worker(m, device, slot) for slot, (m, device) in enumerate(zip(messages, devices))]
        finally:
            self._globals, self._packed = {}, {}
        ids = list(self.grid.push_messages(outgoing))
        device_of = {m.metadata.message_id: device for m, device in zip(outgoing, devices)}
        replies = sorted(((device_of[r.metadata.reply_to_message_id], r) for r in
                          self._pull(set(ids), timeout, self.on_reply if train else None)),
                         key=lambda pair: pair[0])
        for device, reply in replies:
            if reply.has_error():
                if reply.error.code != draws.FAILED:
                    raise RuntimeError(f"device {device} crashed in round {self.round}: {reply.error.reason}")
                continue  # a device that dropped out keeps the state it had
            self.states.put(device, pop_state(reply.content))
        if train:
            self.replies = replies
        self._device_of_reply = {id(reply): device for device, reply in replies}
        return [reply for _, reply in replies]

    def device_of(self, reply: Message) -> int:
        """The device that sent ``reply``, one of the last ``send_and_receive``'s replies (its source
        node is the worker that simulated it)."""
        return self._device_of_reply[id(reply)]

    def _for_worker(self, message: Message, device: int, slot: int) -> Message:
        """``message`` for ``device``, with its state, addressed to a worker node; a training message
        carries the global arrays restricted to the device's mask when downloads are sparse."""
        state = self.states.get(device)
        content = RecordDict({**message.content, **state_records(device, state)})
        if (self.download == "sparse" and message.metadata.message_type == MessageType.TRAIN
                and state is not None and state.mask is not None and "arrays" in content):
            content["arrays"] = self._sparse(content["arrays"], state.mask)
        if "config" in content:  # the fog's round, which a resumed run's strategy does not count from
            content["config"] = ConfigRecord({**content["config"], "server-round": self.round})
        return Message(content=content, dst_node_id=self.nodes[slot % len(self.nodes)],
                       message_type=message.metadata.message_type)

    def _sparse(self, arrays: ArrayRecord, bits: np.ndarray) -> ArrayRecord:
        """``arrays`` restricted to the mask ``bits`` (packed, see ``device_state``), packed once per
        distinct mask within a ``send_and_receive``; ``arrays`` themselves where packing saves nothing."""
        key = (id(arrays), np.ascontiguousarray(bits, dtype=np.uint8).tobytes())
        packed = self._packed.get(key)
        if packed is None:
            if id(arrays) not in self._globals:
                self._globals[id(arrays)] = (arrays, {k: a.numpy() for k, a in arrays.items()})
            dense = self._globals[id(arrays)][1]
            sparse = pack_masked_state(dense, unpack_masks(bits, self.shapes))
            # A mask that kept (nearly) everything packs larger than the dense model: send that instead.
            packed = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in sparse.items()}) \
                if encoded_nbytes(sparse) < encoded_nbytes(dense) else arrays
            self._packed[key] = packed
        return packed

    def _pull(self, msg_ids: set[str], timeout: float | None,
              on_reply: Callable[[int, int], None] | None) -> list[Message]:
        """Flower's ``Grid.send_and_receive`` pull loop (until every reply is in or ``timeout``
        has passed), reporting the replies as they arrive; the order they arrive in is not used."""
        total = len(msg_ids)
        if on_reply is not None:
            on_reply(0, total)
        interval = getattr(self.grid, "pull_interval", PULL_INTERVAL_S)
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        received: list[Message] = []
        while timeout is None or time.time() < end_time:
            self._check_stop()
            new = list(self.grid.pull_messages(msg_ids))
            received.extend(new)
            msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in new})
            if new and on_reply is not None:
                on_reply(total - len(msg_ids), total)
            if not msg_ids:
                break
            time.sleep(interval)
        return received

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped(f"stopped while waiting in round {self.round}")
