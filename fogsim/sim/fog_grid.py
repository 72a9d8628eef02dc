"""``FogGrid``: Flower's Grid as the fog sees it — only the devices sampled this round are there.

A thin wrapper that a strategy uses like any Grid. Before round 1 it asks every node which
device it is (Flower's node ids are random per run; the partition id is not). In each round it
shows the strategy only the sampled devices (``fog.participants``), and it keeps the training
replies of the round, sorted by device, so that aggregation and the result files do not depend
on the order in which Ray finished the clients.
"""

from __future__ import annotations

import time
from typing import Callable

from flwr.app import Message, RecordDict
from flwr.common import MessageType

from fogsim.sim import fog

CONNECT_TIMEOUT_S = 120
PULL_INTERVAL_S = 0.1  # Flower's own InMemoryGrid default


class FogGrid:
    """Wraps a Flower ``Grid``; ``round`` is advanced by the server at the end of each round."""

    def __init__(self, grid, profiles: list, fraction: float, seed: int,
                 on_reply: Callable[[int, int], None] | None = None):
        self.grid = grid
        self.on_reply = on_reply  # (replies so far, messages sent), for training messages only
        self.profiles = profiles
        self.fraction = fraction
        self.seed = seed
        self.round = 1
        self.node_of: dict[int, int] = {}    # device id -> node id
        self.device_of: dict[int, int] = {}  # node id -> device id
        self.available: list[int] = []
        self.sampled: list[int] = []
        self.replies: list[tuple[int, Message]] = []

    def __getattr__(self, name):
        return getattr(self.grid, name)

    def discover(self) -> None:
        """Map node ids to device ids with one query message per node, once all nodes are up."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while len(nodes := list(self.grid.get_node_ids())) < len(self.profiles):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {len(self.profiles)} devices connected "
                                   f"within {CONNECT_TIMEOUT_S} s")
            time.sleep(0.05)
        queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        for reply in self.grid.send_and_receive(queries):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} did not say which device it is: "
                                   f"{reply.error.reason}")
            device = int(reply.content["device"]["device-id"])
            self.node_of[device] = reply.metadata.src_node_id
            self.device_of[reply.metadata.src_node_id] = device
        if len(self.node_of) != len(self.profiles):
            raise RuntimeError(f"{len(self.node_of)} of {len(self.profiles)} devices answered the discovery")

    def start_round(self, round_: int) -> None:
        self.round = round_
        self.available, self.sampled = fog.participants(self.profiles, self.fraction, self.seed, round_)
        self.replies = []

    def get_node_ids(self) -> list[int]:
        return [self.node_of[d] for d in self.sampled]

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if not messages:
            return []
        train = messages[0].metadata.message_type == MessageType.TRAIN
        replies = sorted(((self.device_of[r.metadata.src_node_id], r) for r in
                          self._push_and_pull(messages, timeout, self.on_reply if train else None)),
                         key=lambda pair: pair[0])
        for device, reply in replies:
            if reply.has_error() and reply.error.code != fog.FAILED:
                raise RuntimeError(f"device {device} crashed in round {self.round}: {reply.error.reason}")
        if train:
            self.replies = replies
        return [reply for _, reply in replies]

    def _push_and_pull(self, messages: list, timeout: float | None,
                       on_reply: Callable[[int, int], None] | None) -> list[Message]:
        """Flower's ``Grid.send_and_receive`` (push, then pull until every reply is in or ``timeout``
        has passed), reporting the replies as they arrive; the order they arrive in is not used."""
        msg_ids = set(self.grid.push_messages(messages))
        total = len(msg_ids)
        if on_reply is not None:
            on_reply(0, total)
        interval = getattr(self.grid, "pull_interval", PULL_INTERVAL_S)
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        received: list[Message] = []
        while timeout is None or time.time() < end_time:
            new = list(self.grid.pull_messages(msg_ids))
            received.extend(new)
            msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in new})
            if new and on_reply is not None:
                on_reply(total - len(msg_ids), total)
            if not msg_ids:
                break
            time.sleep(interval)
        return received
