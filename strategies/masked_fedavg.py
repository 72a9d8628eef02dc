"""``masked-fedavg``: Flower's FedAvg with pruned-mask-aware aggregation of the uploads.

Only the aggregation of training replies differs from FedAvg, so only ``aggregate_train``
is overridden; sampling, the round loop, evaluation and failure handling are Flower's.
``configure_train`` tells clients to send packed uploads, and ``set_previous`` (which
``configure_train`` calls) remembers the global arrays sent, because the rules need the
previous global value and ``aggregate_train`` is not given it. Which rule aggregates is a constructor option
(``rule``, one of ``masked_average.RULES``).
"""

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg

from .encoding import unpack_masked_state
from .resumable import Resumable
from .masked_average import RULES, masked_average_arrays, masked_average_of_sums, reads_sums
from .sums import Sums, from_arrays, is_sums

UPLOAD_ENCODING_KEY = "upload-encoding"
"""Train-config key through which the server asks for packed uploads.

``MaskedFedAvg`` sets it to ``"packed"``: the client sends
``pack_masked_state(state, masks)``. Flower's ``FedAvg`` does not set it, which means
``"dense"``: the client sends ``dense_masked_state(state, masks)``.
"""


class MaskedFedAvg(Resumable, FedAvg):
    """FedAvg whose prunable tensors are aggregated by a mask-aware rule.

    With the default rule ``keepers``, for entry ``j`` of a masked tensor, over the replying
    clients ``k`` with ``n_k`` examples and mask ``m_k``:
    ``w_j = Σ_k n_k m_kj w_kj / Σ_k n_k m_kj``, and the previous global value where no client
    kept ``j``; ``delta`` and ``consensus`` are the other rules (``masked_average``). Tensors
    sent dense are averaged as FedAvg does. Each reply carries exactly one ArrayRecord, holding the client's model packed by
    :func:`strategies.encoding.pack_masked_state` (a dense model is accepted too), and
    exactly one MetricRecord holding the example count under ``weighted_by_key``; as in
    FedAvg, the records' own keys are not checked, ``arrayrecord_key`` is the key used
    when sending. As in FedAvg, replies carrying an error are dropped, and replies with
    differing keys raise InconsistentMessageReplies, which ends the run.

    Parameters
    ----------
    fraction_train : float (default: 1.0)
        Fraction of nodes used during training; at least ``min_train_nodes`` are sampled.
    fraction_evaluate : float (default: 1.0)
        Fraction of nodes used during evaluation; at least ``min_evaluate_nodes``.
    min_train_nodes : int (default: 2)
        Minimum number of nodes used during training.
    min_evaluate_nodes : int (default: 2)
        Minimum number of nodes used during evaluation.
    min_available_nodes : int (default: 2)
        Minimum number of connected nodes before a round starts.
    weighted_by_key : str (default: "num-examples")
        MetricRecord key of the example count ``n_k`` that weights arrays and metrics.
    arrayrecord_key : str (default: "arrays")
        Key of the ArrayRecord in the Messages sent to clients.
    configrecord_key : str (default: "config")
        Key of the ConfigRecord in the Messages sent to clients.
    train_metrics_aggr_fn : callable or None (default: None)
        ``(list[RecordDict], str) -> MetricRecord`` aggregating training metrics;
        ``None`` means Flower's example-weighted average.
    evaluate_metrics_aggr_fn : callable or None (default: None)
        The same for evaluation metrics.
    rule : str (default: "keepers")
        The aggregation rule, a name of ``masked_average.RULES``. ``keepers`` is the brief's
        pruned-mask-aware averaging; a scenario's ``strategy.rule`` defaults to ``delta``, which
        measured better (the README's aggregation benchmark).
    quorum : float (default: 0.5)
        Share of the round's weight that must have kept an entry (rule ``consensus`` only).
    """

    _current_arrays: ArrayRecord | None = None
    _rule_arrays: dict[str, np.ndarray] | None = None  # the rule's aggregate of the last round
    _round_sums: Sums | None = None  # the last round's sums

    def __init__(self, *, rule: str = "keepers", quorum: float = 0.5, **fedavg_options) -> None:
        super().__init__(**fedavg_options)
        self.set_rule(rule, quorum)

    def set_rule(self, rule: str, quorum: float = 0.5) -> None:
        """Choose the aggregation rule (``masked_average.RULES``) and the consensus quorum."""
        if rule not in RULES:
            raise ValueError(f"unknown aggregation rule {rule!r} (known: {', '.join(RULES)})")
        if not 0 < quorum <= 1:
            raise ValueError(f"quorum must lie in (0, 1], got {quorum}")
        self.rule, self.quorum = rule, quorum

    def reads_sums(self) -> bool:
        """The built-in rules read a round through its sums (``strategies.sums``); a rule added to
        ``RULES`` and a subclass's own ``aggregate_train`` get every client's upload."""
        return type(self).aggregate_train in _SUMS_READERS and reads_sums(self.rule)

    def round_union(self) -> dict[str, np.ndarray]:
        """Per tensor every client of the last round masked, the entries some client kept."""
        return self._round_sums.union() if self._round_sums is not None else {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask for packed uploads, then configure as FedAvg (``Resumable`` remembers the arrays)."""
        config[UPLOAD_ENCODING_KEY] = "packed"
        return super().configure_train(server_round, arrays, config, grid)

    def set_previous(self, arrays: ArrayRecord) -> None:
        """Also keep ``arrays`` as the previous global value the rules start from."""
        super().set_previous(arrays)
        self._current_arrays = arrays

    def aggregate_train(
        self,
        server_round: int,
        replies: Iterable[Message],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' arrays mask-aware and their metrics as FedAvg does."""
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        contents = [msg.content for msg in valid_replies]
        arrays = self._average_masked(contents)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return arrays, metrics

    def _average_masked(self, contents: list[RecordDict]) -> ArrayRecord:
        if self._current_arrays is None:
            raise AggregationError(
                reason="MaskedFedAvg needs the previous global arrays; call "
                "configure_train before aggregate_train"
            )
        sums = None
        uploads: list[tuple[dict, dict, float]] = []  # (state, masks, weight) of the replies that are uploads
        try:
            previous = {k: a.numpy() for k, a in self._current_arrays.items()}
            for k, content in enumerate(contents):
                record = next(iter(content.array_records.values()))
                arrays = {key: a.numpy() for key, a in record.items()}
                if is_sums(arrays):  # some clients' uploads, added up where they trained
                    part = from_arrays(arrays)
                else:
                    state, mask = unpack_masked_state(arrays)
                    metrics = next(iter(content.metric_records.values()))
                    try:
                        for name, values in state.items():
                            if name in previous and values.shape != previous[name].shape:
                                raise ValueError(f"{name} weights have shape {values.shape}, expected "
                                                 f"{previous[name].shape} (the shape of the previous global tensor)")
                        uploads.append((state, mask, float(metrics[self.weighted_by_key])))
                        part = Sums.of_client(*uploads[-1])
                    except ValueError as err:
                        raise ValueError(f"client {k}: {err}") from err
                sums = part if sums is None else sums + part  # what the rules read, and the union
            options = {"quorum": self.quorum} if self.rule == "consensus" else {}
            if reads_sums(self.rule):
                averaged = masked_average_of_sums(sums, previous, self.rule, **options)
            elif len(uploads) == len(contents):
                averaged = masked_average_arrays(*(list(column) for column in zip(*uploads)), previous,
                                                 self.rule, **options)
            else:
                raise ValueError(f"rule {self.rule!r} reads every client's values, and some replies are sums")
            self._rule_arrays, self._round_sums = averaged, sums  # for the server optimizers (server_opt)
        except ValueError as err:
            raise AggregationError(reason=f"masked averaging failed: {err}") from err
        return ArrayRecord({k: Array(np.asarray(v)) for k, v in averaged.items()})


_SUMS_READERS = {MaskedFedAvg.aggregate_train}
"""The ``aggregate_train`` methods that read a round only through its sums (``server_opt`` adds its own)."""
