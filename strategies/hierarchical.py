"""``Hierarchical``: two-level aggregation, devices at their fog node every round, fog nodes at the cloud.

Hierarchical federated averaging (HierFAVG, Liu et al., "Client-Edge-Cloud Hierarchical Federated
Learning", ICC 2020) as one Flower strategy, so the server side stays Flower's round loop over
the Grid. It wraps two strategies of the scenario's kind:

* ``cloud``: the scenario's strategy (``masked-fedavg``, ``masked-fedadam``, Flower's ``fedavg``,
  ...); it configures every round (sampling, the config, the arrays it remembers as the previous
  global model) and, in cloud rounds, aggregates the fog nodes' models, stepping its server
  optimizer if it has one;
* ``fog``: the same aggregation without a server optimizer (``masked-fedavg`` with the same rule,
  or Flower's ``fedavg``); each round it aggregates, node by node, the replies of the node's
  devices, with the node's own model as the previous one.

Each device receives its fog node's model. In a cloud round (every ``cloud_every`` rounds, every
round through ``sync_through``, and always the last) each fog node that had replies since the last cloud round sends its model to
the cloud as a reply of its own: packed on the union of its devices' masks over that period
(entries none of them kept are the cloud's value anyway, or zero under ``consensus``), weighted by the sum of its devices'
weights (examples) over the period. The cloud aggregates those replies with its own
``aggregate_train`` and every fog node starts again from the result.

With one fog node and ``cloud_every: 1`` this is the flat strategy: the fog's aggregate is the
flat aggregate, and the cloud's aggregate of that one model, on the entries its clients kept, is
the same model (``keepers``, ``consensus`` and Flower's FedAvg exactly; ``delta`` adds back the
difference it took, exact in float64 unless a weight changes by a factor above 2**28 in a round).

``device_of`` tells a reply's device (by default its ``metadata.src_node_id``; fogsim's
``FogGrid``, whose worker nodes simulate any device, knows it), ``node_of`` maps device ids to
fog node indices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .encoding import pack_masked_state
from .masked_fedavg import MaskedFedAvg
from .resumable import check_state_array, state_key

STATE_PREFIX = "hier"
"""First part of the keys :meth:`Hierarchical.state_arrays` adds to the cloud strategy's own."""
_SEP = "::"


@dataclass
class NodeRound:
    """What one fog node did in a round (``Hierarchical.last_round``)."""

    replies: int = 0                       # replies without an error
    model: ArrayRecord | None = None       # its aggregate of the round (None: no reply, unchanged)
    union: dict[str, np.ndarray] | None = None  # the round's clients' masks, or'ed (tensors sent sparse)
    wan_upload: ArrayRecord | None = None  # what it sent the cloud (cloud rounds, with replies since the last)


class Hierarchical(Strategy):
    """Fog nodes aggregate their devices every round, the cloud the fog nodes every ``cloud_every``.

    Parameters
    ----------
    cloud : Strategy
        The scenario's strategy; a ``MaskedFedAvg`` (or a server optimizer on one) receives the
        fog models packed on their masks, Flower's strategies receive them dense.
    fog : Strategy
        The per-node aggregation (no server optimizer), with the cloud's ``weighted_by_key``; a
        ``Resumable`` strategy, told each node's model with ``set_previous``.
    node_of : callable
        Device ids (a sequence) to fog node indices (a sequence), ``0 <= index < nodes``.
    device_of : callable or None
        A reply to its device id (default: its ``metadata.src_node_id``).
    nodes : int
        Number of fog nodes.
    cloud_every : int
        Rounds between two aggregations at the cloud.
    num_rounds : int
        The run's last round, which always ends with the cloud aggregating.
    sync_through : int (default: 0)
        Every round up to and including this one ends with the cloud aggregating too (fogsim:
        the rounds in which devices prune, so that they prune the same shared weights).
    """

    def __init__(self, cloud: Strategy, fog: Strategy, node_of: Callable[[Sequence[int]], Sequence[int]],
                 nodes: int, cloud_every: int, num_rounds: int,
                 device_of: Callable[[Message], int] | None = None, sync_through: int = 0) -> None:
        if nodes < 1:
            raise ValueError(f"a hierarchy needs at least one fog node, got {nodes}")
        if cloud_every < 1:
            raise ValueError(f"cloud_every must be at least 1, got {cloud_every}")
        self.cloud, self.fog, self.node_of = cloud, fog, node_of
        self.device_of = device_of or (lambda reply: int(reply.metadata.src_node_id))
        self.nodes, self.cloud_every, self.num_rounds = nodes, cloud_every, num_rounds
        self.sync_through = sync_through
        self.weighted_by_key = cloud.weighted_by_key
        self.masked = isinstance(cloud, MaskedFedAvg)
        self.models: list[ArrayRecord | None] = [None] * nodes  # None: the node holds the cloud's model
        self.unions: list[dict[str, np.ndarray] | None] = [None] * nodes  # masks since the last cloud round
        self.weights = np.zeros(nodes)  # weight of each node's replies since the last cloud round
        self.cloud_arrays: ArrayRecord | None = None
        self.last_round: list[NodeRound] = []
        self.last_was_cloud = False

    # --- rounds counted across a resume, like every strategy fogsim builds (Resumable) ---
    @property
    def round_offset(self) -> int:
        return self.cloud.round_offset

    @round_offset.setter
    def round_offset(self, value: int) -> None:
        self.cloud.round_offset = value

    def cloud_round(self, run_round: int) -> bool:
        """Whether the run's round ``run_round`` ends with the cloud aggregating: every ``cloud_every``,
        every one through ``sync_through``, and always the last."""
        return run_round % self.cloud_every == 0 or run_round <= self.sync_through or run_round >= self.num_rounds

    def model_of(self, node: int) -> ArrayRecord:
        """The model fog node ``node`` holds now (what its devices receive next)."""
        model = self.models[node]
        return model if model is not None else self.cloud_arrays

    # --- Flower's Strategy ---
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The cloud strategy's messages, each carrying its device's fog-node model."""
        self.cloud_arrays = arrays
        messages = list(self.cloud.configure_train(server_round, arrays, config, grid))
        if not messages:
            return messages
        nodes = self.node_of([int(m.metadata.dst_node_id) for m in messages])
        out = []
        for message, node in zip(messages, nodes):
            model = self.models[int(node)]
            if model is not None:
                key = next(k for k, v in message.content.items() if isinstance(v, ArrayRecord))
                message = Message(RecordDict({**message.content, key: model}),
                                  dst_node_id=message.metadata.dst_node_id, message_type=MessageType.TRAIN)
            out.append(message)
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate at every fog node; in a cloud round, aggregate the fog nodes at the cloud."""
        replies = list(replies)
        run_round = server_round + self.round_offset
        nodes = self.node_of([self.device_of(r) for r in replies]) if replies else []
        groups: dict[int, list[Message]] = {}
        for reply, node in zip(replies, nodes):
            groups.setdefault(int(node), []).append(reply)
        self.last_round = [NodeRound() for _ in range(self.nodes)]
        all_metrics = []
        for node, group in sorted(groups.items()):
            report = self.last_round[node]
            valid = [r for r in group if not r.has_error()]
            if not valid:
                continue
            model, metrics = self._aggregate_node(server_round, node, group)
            if model is None:
                continue
            weight = sum(float(next(iter(r.content.metric_records.values()))[self.weighted_by_key]) for r in valid)
            report.replies, report.model = len(valid), model
            # The masks the per-node MaskedFedAvg has just unpacked; Flower's FedAvg reads dense uploads.
            report.union = self.fog.round_union() if isinstance(self.fog, MaskedFedAvg) else {}
            self.models[node] = model
            self.weights[node] += weight
            self.unions[node] = report.union if self.unions[node] is None else {
                name: self.unions[node][name] | mask for name, mask in report.union.items()
                if name in self.unions[node]}
            if metrics is not None:
                all_metrics.append(RecordDict({"metrics": MetricRecord({**metrics, self.weighted_by_key: weight})}))
        self.last_was_cloud = self.cloud_round(run_round)
        if not self.last_was_cloud:
            metrics = self.fog.train_metrics_aggr_fn(all_metrics, self.weighted_by_key) if all_metrics else None
            return self.cloud_arrays, metrics
        return self._aggregate_cloud(server_round)

    def _aggregate_node(self, server_round: int, node: int, group: list[Message]):
        """The fog aggregation of one node's replies, from the node's model."""
        self.fog.set_previous(self.model_of(node))
        return self.fog.aggregate_train(server_round, group)

    def _upload(self, node: int) -> ArrayRecord:
        """What fog node ``node`` sends the cloud: its model packed on its devices' masks (as devices
        upload to a masked strategy: every reply of a round has the same keys), or dense."""
        model = self.models[node]
        if not self.masked:
            return model
        packed = pack_masked_state({k: a.numpy() for k, a in model.items()}, self.unions[node] or {})
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in packed.items()})

    def _aggregate_cloud(self, server_round: int) -> tuple[ArrayRecord | None, MetricRecord | None]:
        cloud_replies = []
        for node in range(self.nodes):
            if self.weights[node] <= 0 or self.models[node] is None:
                continue
            upload = self._upload(node)
            self.last_round[node].wan_upload = upload
            content = RecordDict({"arrays": upload,
                                  "metrics": MetricRecord({self.weighted_by_key: float(self.weights[node])})})
            cloud_replies.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN))
        arrays, metrics = self.cloud.aggregate_train(server_round, cloud_replies) if cloud_replies else (None, None)
        if arrays is not None:
            self.cloud_arrays = arrays
        self.models = [None] * self.nodes
        self.unions = [None] * self.nodes
        self.weights = np.zeros(self.nodes)
        return self.cloud_arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.cloud.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.cloud.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.cloud.summary()

    # --- resume ---
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The cloud strategy's state, then every fog node's model, masks and weight since the last
        cloud round, under keys starting with ``hier::``."""
        out = dict(self.cloud.state_arrays())
        for node in range(self.nodes):
            if self.models[node] is not None:
                out.update({_SEP.join((STATE_PREFIX, "model", str(node), k)): a.numpy()
                            for k, a in self.models[node].items()})
            if self.unions[node] is not None:
                out.update({_SEP.join((STATE_PREFIX, "union", str(node), k)): m
                            for k, m in self.unions[node].items()})
                out[_SEP.join((STATE_PREFIX, "unioned", str(node)))] = np.ones(1, dtype=bool)
            if self.weights[node] > 0:
                out[_SEP.join((STATE_PREFIX, "weight", str(node)))] = np.array([self.weights[node]])
        return out

    def check_state_arrays(self, arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise ValueError naming the first of ``arrays`` that is not :meth:`state_arrays` of this
        hierarchy for a model whose arrays have ``shapes``."""
        own = {k: v for k, v in arrays.items() if k.startswith(STATE_PREFIX + _SEP)}
        self.cloud.check_state_arrays({k: v for k, v in arrays.items() if k not in own}, shapes)
        for key, value in own.items():
            parts = key.split(_SEP, 3)
            if len(parts) < 3 or parts[1] not in ("model", "union", "unioned", "weight") \
                    or not parts[2].isdigit() or int(parts[2]) >= self.nodes \
                    or (len(parts) == 4) != (parts[1] in ("model", "union")):
                raise ValueError(f"{state_key(key)} does not belong to a hierarchy of {self.nodes} fog nodes")
            if parts[1] in ("model", "union"):
                check_state_array(key, value, shapes.get(parts[3]), "fiu" if parts[1] == "model" else "b")
            elif parts[1] == "weight":
                check_state_array(key, value, (1,), "f")
                if value[0] < 0:
                    raise ValueError(f"{state_key(key)} is a negative weight")

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Invert :meth:`state_arrays`; raises ValueError on a key neither level keeps."""
        own = {k: v for k, v in arrays.items() if k.startswith(STATE_PREFIX + _SEP)}
        self.cloud.load_state_arrays({k: v for k, v in arrays.items() if k not in own})
        models: dict[int, dict[str, np.ndarray]] = {}
        for key, value in own.items():
            parts = key.split(_SEP, 3)
            if len(parts) < 3 or parts[1] not in ("model", "union", "unioned", "weight") \
                    or not parts[2].isdigit() or int(parts[2]) >= self.nodes:
                raise ValueError(f"strategy state {key!r} does not belong to a hierarchy of {self.nodes} fog nodes")
            node = int(parts[2])
            if parts[1] == "model":
                models.setdefault(node, {})[parts[3]] = value
            elif parts[1] == "union":
                self.unions[node] = {**(self.unions[node] or {}), parts[3]: np.asarray(value, dtype=bool)}
            elif parts[1] == "unioned":
                self.unions[node] = self.unions[node] or {}
            else:
                self.weights[node] = float(np.asarray(value).ravel()[0])
        for node, model in models.items():
            self.models[node] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in model.items()})
