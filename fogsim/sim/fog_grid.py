"""``FogGrid``: Flower's Grid as the fog sees it — the sampled devices stand where nodes would.

The simulation's Flower nodes are workers, not devices: any node can simulate any device,
because what it needs travels with the round's message (see ``messages``). So the fleet can be
far larger than the number of nodes, and what a round costs depends on the devices sampled in
it, not on how many exist.

A strategy uses a ``FogGrid`` like any Grid. ``get_node_ids`` answers the round's sampled device
ids (``draws.participants``); the strategy addresses one message to each. ``send_and_receive``
deals the devices over the worker nodes and sends each node **one cohort message** with its
devices, their states and each distinct model and config once; each node answers once, and the
grid keeps every device's new state and its report (``replies``, one per device, sorted by
device: what the result files are written from), and hands the strategy Flower's own records
only (``arrays``, ``metrics``):

* a strategy that reads a round only through its sums (``strategies.SUMS_KEY`` in its config)
  gets **one reply per fog node** (one without fog nodes) holding the sums of the node's uploads,
  added up in the workers in the node's fixed summation order (``draws.sum_order``,
  ``strategies.sums``): the devices are dealt to the workers in contiguous runs of that order;
  ``masked-*`` strategies read the sums as they are, Flower's get their weighted mean
  (float64), as if one client had sent it; plus an error reply for each device that dropped out;
* any other strategy gets **one reply per device**, the device's own upload (or its error),
  sorted by device; the devices are dealt in device order, the i-th to worker ``i mod nodes``.

Either way aggregation and the result files do not depend on how devices were spread or in
which order workers finished.

Downloads are sparse by default (``strategy.download``): a device whose mask is known receives
the global model restricted to that mask, packed as the uploads are (where that is smaller than
the dense model). The worker derives that from the dense model it receives once per cohort
(``client_app.device_download``): traffic is what each device would receive, the cohort is
the simulator's transport and is never counted.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common import MessageType

from fogsim.errors import FogsimError
from fogsim.sim import draws
from fogsim.sim.device_state import DeviceStates
from fogsim.sim.messages import (ARRAYS, COHORT, EXAMPLES_KEY, METRICS, ROUND_KEY, SUMS_KEY, TRAIN_CONFIG,
                                 UNIFORM_WEIGHT_KEY, UPLOAD_ENCODING_KEY, WARM_UP, Assignment, Outcome,
                                 cohort_message, read_reply)
from strategies.sums import Sums, to_arrays, tree_total

CONNECT_TIMEOUT_S = 120
PULL_INTERVAL_S = 0.01  # a pull reads the in-memory link state: cheap, and a round waits for it


def _worker_error(reason: str) -> str:
    """The first line of what Flower says went wrong in a worker, unwrapped from its
    ``<class 'module.Error'>:<'message'>`` form into ``Error: message``."""
    first = (reason.strip().splitlines() or [""])[0]
    wrapped = re.match(r"<class '(?:[\w.]*\.)?(\w+)'>:<'(.*?)'?>?$", first)
    return f"{wrapped.group(1)}: {wrapped.group(2)}" if wrapped else first


class RunDiverged(FogsimError):
    """Training diverged (a device's, or the global model's): the run stops with one line, exit 1."""

    exit_code = 1


class Stopped(Exception):
    """The run was stopped (an interrupt, or the engine failed) while the server waited."""


class FogGrid:
    """Wraps a Flower ``Grid``; ``round`` is advanced by the server at the end of each round.

    ``download`` is ``"sparse"`` or ``"dense"`` (see the module), passed on to the workers.
    """

    def __init__(self, grid, availability: np.ndarray, fraction: float, seed: int, states: DeviceStates,
                 nodes: int, on_reply: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None, download: str = "dense",
                 node_of: Callable[[list[int]], np.ndarray] | None = None):
        if download not in ("sparse", "dense"):
            raise ValueError(f"download must be 'sparse' or 'dense', not {download!r}")
        self.grid = grid
        self.availability = availability  # per device
        self.fraction = fraction
        self.seed = seed
        self.states = states
        self.nodes_expected = nodes
        self.on_reply = on_reply  # (replies so far, messages sent), for training messages only
        self.stop = stop or threading.Event()  # set by the main thread to end the server's waits
        self.nodes: list[int] = []
        self._warming: set[str] = set()  # warm-up messages not answered yet
        self.round = 1
        self.available: np.ndarray = np.empty(0, dtype=np.int64)
        self.sampled: list[int] = []
        self.replies: list[tuple[int, Message]] = []
        self._device_of_reply: dict[int, int] = {}  # id of a reply of the last send_and_receive -> device
        self.download = download
        self.node_of = node_of  # device ids to fog node indices (None: no fog nodes)

    def __getattr__(self, name):
        return getattr(self.grid, name)

    def connect(self) -> None:
        """Wait until the simulation's worker nodes are registered (they start with the engine), then send
        each a warm-up message, answered while the server sets up (``start_round`` waits for it)."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while len(nodes := list(self.grid.get_node_ids())) < self.nodes_expected:
            self._check_stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {self.nodes_expected} simulation nodes registered "
                                   f"within {CONNECT_TIMEOUT_S} s")
            time.sleep(0.05)
        self.nodes = sorted(nodes)
        warm_ups = [Message(content=RecordDict({WARM_UP: ConfigRecord()}), dst_node_id=node,
                            message_type=MessageType.TRAIN) for node in self.nodes]
        self._warming = set(self.grid.push_messages(warm_ups))

    def _await_warm_up(self) -> None:
        """Wait for the workers' warm-up replies (``connect`` sent them; ``messages``)."""
        for reply in self._pull(self._warming, dict.fromkeys(self._warming, 0), None, None):
            if reply.has_error():
                raise RuntimeError(f"a worker failed to start: {reply.error.reason}")
        self._warming = set()

    def start_round(self, round_: int) -> None:
        """Sample the round's devices; before the first, wait for the workers to be warm."""
        if self._warming:
            self._await_warm_up()
        self.round = round_
        self.available, self.sampled = draws.participants(self.availability, self.fraction, self.seed, round_)
        self.replies = []

    def get_node_ids(self) -> list[int]:
        """The devices sampled this round: the strategy addresses its messages to them."""
        return list(self.sampled)

    def send_and_receive(self, messages, *, timeout=None):
        """Send the strategy's per-device messages as one cohort message per worker node; return the
        replies the strategy reads (see the module)."""
        messages = sorted(messages, key=lambda m: m.metadata.dst_node_id)
        if not messages:
            return []
        train = messages[0].metadata.message_type == MessageType.TRAIN
        config = messages[0].content[TRAIN_CONFIG] if TRAIN_CONFIG in messages[0].content else {}
        sums = train and bool(config.get(SUMS_KEY, False))
        original = {int(m.metadata.dst_node_id): m for m in messages}
        order, leaves = self._sum_order(list(original)) if sums else ([(d, 0, -1) for d in original], {})
        slots = min(len(self.nodes), len(messages))
        # Contiguous runs of the summation order (each worker sums whole blocks), or round-robin.
        dealt = [order[slot * len(order) // slots:(slot + 1) * len(order) // slots] if sums else order[slot::slots]
                 for slot in range(slots)]
        cohorts = [self._cohort([(original[d], node, leaf) for d, node, leaf in share], self.nodes[slot])
                   for slot, share in enumerate(dealt)]
        ids = list(self.grid.push_messages(cohorts))
        sizes = {i: len(c.content[COHORT]["devices"]) for i, c in zip(ids, cohorts)}
        outcomes = []
        blocks: dict[int, dict[tuple[int, int], Sums]] = {}
        for cohort in self._pull(set(ids), sizes, timeout, self.on_reply if train else None):
            if cohort.has_error():
                raise RuntimeError(f"a worker crashed in round {self.round}: {_worker_error(cohort.error.reason)}")
            done, crashed, summed = read_reply(cohort.content)
            if crashed is not None:
                device, reason, diverged = crashed
                if diverged:
                    raise RunDiverged(f"device {device} diverged in round {self.round} {reason}")
                raise RuntimeError(f"device {device} crashed in round {self.round}: {reason}")
            outcomes += done
            for block in summed:
                blocks.setdefault(block.node, {})[block.start, block.size] = block.sums
        # In device order, whatever order the workers answered in: the states are kept in it too,
        # and what reads them in that order (tiers.csv's sums over masks) gives the same digits.
        outcomes.sort(key=lambda outcome: outcome.device)
        replies = [(o.device, self._device_reply(o, original[o.device])) for o in outcomes]
        if train:
            self.replies = replies
        self._device_of_reply = {id(reply): device for device, reply in replies}
        if not sums:
            return [reply for _, reply in replies]
        out = [reply for _, reply in replies if reply.has_error()]
        dense = config.get(UPLOAD_ENCODING_KEY, "dense") != "packed"
        for node, count in sorted(leaves.items()):
            total = tree_total(blocks.get(node, {}), count)
            if total is None:  # every device of the node dropped out
                continue
            mine = {d for d, n, _ in order if n == node}
            first = min(mine)
            examples = sum(int(r.content[METRICS][EXAMPLES_KEY]) for d, r in replies
                           if d in mine and not r.has_error())
            arrays = total.mean() if dense else to_arrays(total)
            reply = Message(RecordDict({
                ARRAYS: ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in arrays.items()}),
                METRICS: MetricRecord({EXAMPLES_KEY: examples, UNIFORM_WEIGHT_KEY: total.clients})}),
                reply_to=original[first])
            self._device_of_reply[id(reply)] = first
            out.append(reply)
        return out

    def _sum_order(self, devices: list[int]) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
        """``(device, fog node, leaf)`` for ``devices``, node by node, each node's in its summation order;
        and each node's number of leaves."""
        nodes = self.node_of(devices) if self.node_of is not None else np.zeros(len(devices), dtype=np.int64)
        by_node: dict[int, list[int]] = {}
        for device, node in zip(devices, nodes):
            by_node.setdefault(int(node), []).append(device)
        order = []
        for node, mine in sorted(by_node.items()):
            order += [(d, node, leaf) for leaf, d in enumerate(draws.sum_order(mine, self.seed, self.round, node))]
        return order, {node: len(mine) for node, mine in by_node.items()}

    def device_of(self, reply: Message) -> int:
        """The device that sent ``reply``, one of the last ``send_and_receive``'s replies."""
        return self._device_of_reply[id(reply)]

    def _cohort(self, messages: list[tuple[Message, int, int]], node: int) -> Message:
        """One worker's cohort message for the strategy's per-device messages, each with its fog node
        and leaf (see ``messages``): each distinct model and config the strategy sends goes once, the
        devices' states with them."""
        models: dict[int, int] = {}
        configs: dict[int, int] = {}
        model_records, config_records, assignments = [], [], []
        for message, fog_node, leaf in messages:
            content = message.content
            arrays, config = content[ARRAYS], content[TRAIN_CONFIG]
            if id(arrays) not in models:
                models[id(arrays)] = len(model_records)
                model_records.append(arrays)
            if id(config) not in configs:
                configs[id(config)] = len(config_records)
                # the fog's round, which a resumed run's strategy does not count from
                config_records.append(ConfigRecord({**config, ROUND_KEY: self.round}))
            device = int(message.metadata.dst_node_id)
            assignments.append(Assignment(device, models[id(arrays)], configs[id(config)], self.states.get(device),
                                          fog_node, leaf))
        return Message(content=cohort_message(assignments, model_records, config_records, self.download),
                       dst_node_id=node, message_type=messages[0][0].metadata.message_type)

    def _device_reply(self, outcome: Outcome, message: Message) -> Message:
        """The reply the strategy sees from one device; its new state is kept here, not passed on."""
        if outcome.failed:  # a device that dropped out keeps the state it had
            reason = f"device {outcome.device} dropped out mid-round {self.round}"
            return Message(Error(code=draws.FAILED, reason=reason), reply_to=message)
        self.states.put(outcome.device, outcome.state)
        content = RecordDict({ARRAYS: outcome.upload, METRICS: outcome.metrics}) if outcome.upload is not None \
            else RecordDict({METRICS: outcome.metrics})  # its upload is in its fog node's sums
        return Message(content, reply_to=message)

    def _pull(self, msg_ids: set[str], sizes: dict[str, int], timeout: float | None,
              on_reply: Callable[[int, int], None] | None) -> list[Message]:
        """Flower's ``Grid.send_and_receive`` pull loop (until every reply is in or ``timeout``
        has passed), reporting the devices done as cohorts arrive; the order they arrive in is not used."""
        total = sum(sizes.values())
        done = 0
        if on_reply is not None:
            on_reply(0, total)
        interval = min(getattr(self.grid, "pull_interval", PULL_INTERVAL_S), PULL_INTERVAL_S)
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        received: list[Message] = []
        while timeout is None or time.time() < end_time:
            self._check_stop()
            new = list(self.grid.pull_messages(msg_ids))
            received.extend(new)
            for msg in new:
                msg_ids.discard(msg.metadata.reply_to_message_id)
                done += sizes[msg.metadata.reply_to_message_id]
            if new and on_reply is not None:
                on_reply(done, total)
            if not msg_ids:
                break
            time.sleep(interval)
        return received

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped(f"stopped while waiting in round {self.round}")
