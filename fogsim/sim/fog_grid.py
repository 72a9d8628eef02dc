"""``FogGrid``: Flower's Grid as the fog sees it — only the devices sampled this round are there.

A thin wrapper that a strategy uses like any Grid. Before round 1 it asks every node which
device it is (Flower's node ids are random per run; the partition id is not). In each round it
shows the strategy only the sampled devices (``fog.participants``), and it keeps the training
replies of the round, sorted by device, so that aggregation and the result files do not depend
on the order in which Ray finished the clients.
"""

from __future__ import annotations

import time

from flwr.app import Message, RecordDict
from flwr.common import MessageType

from fogsim.sim import fog

CONNECT_TIMEOUT_S = 120


class FogGrid:
    """Wraps a Flower ``Grid``; ``round`` is advanced by the server at the end of each round."""

    def __init__(self, grid, profiles: list, fraction: float, seed: int):
        self.grid = grid
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
        replies = sorted(((self.device_of[r.metadata.src_node_id], r) for r in
                          self.grid.send_and_receive(messages, timeout=timeout)), key=lambda pair: pair[0])
        for device, reply in replies:
            if reply.has_error() and reply.error.code != fog.FAILED:
                raise RuntimeError(f"device {device} crashed in round {self.round}: {reply.error.reason}")
        if messages[0].metadata.message_type == MessageType.TRAIN:
            self.replies = replies
        return [reply for _, reply in replies]
