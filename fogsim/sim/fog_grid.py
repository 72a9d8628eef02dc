"""``FogGrid``: Flower's Grid as the fog sees it — the sampled devices stand where nodes would.

The simulation's Flower nodes are worker slots, not devices: any node can simulate any
device, because a training message names its device and carries the device's state (see
``device_state``). So the fleet can be far larger than the number of nodes, and what a round
costs depends on the devices sampled in it, not on how many exist.

A strategy uses a ``FogGrid`` like any Grid. ``get_node_ids`` answers the round's sampled
device ids (``fog.participants``); the strategy addresses its messages to them, and
``send_and_receive`` hands the i-th device's message, with the device's state added, to worker
node ``i mod nodes``. Replies come back with the device's new state, which the grid keeps and
takes out of the reply, so the strategy sees Flower's own records only. The training replies
of a round are kept sorted by device, so that aggregation and the result files do not depend
on the order in which Ray finished the clients.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import MessageType

from fogsim.sim import fog
from fogsim.sim.device_state import DeviceStates, pop_state, state_records

CONNECT_TIMEOUT_S = 120
PULL_INTERVAL_S = 0.1  # Flower's own InMemoryGrid default


class Stopped(Exception):
    """The run was stopped (an interrupt, or the engine failed) while the server waited."""


class FogGrid:
    """Wraps a Flower ``Grid``; ``round`` is advanced by the server at the end of each round."""

    def __init__(self, grid, availability: np.ndarray, fraction: float, seed: int, states: DeviceStates,
                 nodes: int, on_reply: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None):
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
        self.available, self.sampled = fog.participants(self.availability, self.fraction, self.seed, round_)
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
        outgoing = [self._for_worker(m, device, slot) for slot, (m, device) in enumerate(zip(messages, devices))]
        ids = list(self.grid.push_messages(outgoing))
        device_of = {m.metadata.message_id: device for m, device in zip(outgoing, devices)}
        replies = sorted(((device_of[r.metadata.reply_to_message_id], r) for r in
                          self._pull(set(ids), timeout, self.on_reply if train else None)),
                         key=lambda pair: pair[0])
        for device, reply in replies:
            if reply.has_error():
                if reply.error.code != fog.FAILED:
                    raise RuntimeError(f"device {device} crashed in round {self.round}: {reply.error.reason}")
                continue  # a device that dropped out keeps the state it had
            self.states.put(device, pop_state(reply.content))
        if train:
            self.replies = replies
        return [reply for _, reply in replies]

    def _for_worker(self, message: Message, device: int, slot: int) -> Message:
        """``message`` for ``device``, with its state, addressed to a worker node."""
        content = RecordDict({**message.content, **state_records(device, self.states.get(device))})
        if "config" in content:  # the fog's round, which a resumed run's strategy does not count from
            content["config"] = ConfigRecord({**content["config"], "server-round": self.round})
        return Message(content=content, dst_node_id=self.nodes[slot % len(self.nodes)],
                       message_type=message.metadata.message_type)

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
