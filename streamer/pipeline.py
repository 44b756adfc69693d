"""decode -> join -> score -> window, over any source of message batches.

The pipeline owns the per-partition state and the process-wide counters. It
knows nothing of Kafka beyond the shape of a message (:class:`MessageLike`,
which ``confluent_kafka.Message`` already has), so the live consumer, a file
replay and the tests drive the same code.

Clocks. The join runs in event time: its clock in a partition is the older of
the two topics' newest timestamps there. A pending prediction expires once
that clock passes ``prediction timestamp + prediction_ttl``, a pending
outcome once it passes ``outcome timestamp + outcome_ttl``. So a replay gives
the same result as the live run, and a backlog read faster on one topic than
on the other expires nothing that is only waiting for the slower one. While
one topic is silent in a partition, nothing there expires; ``max_pending``
still bounds it. Windows end at the wall clock (``windows.clock: wall``) or at
the newest event time seen (``windows.clock: event``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from streamer import _native
from streamer.batches import (
    JoinedBatch,
    JoinedColumns,
    PredictionBatch,
    PredictionColumns,
    judge,
)
from streamer.columns import (
    CALIBRATION_COLUMNS,
    PREDICTION_COLUMNS,
    prediction_parts,
)
from streamer.config import Config
from streamer.drift import INNER_BIN_EDGES, Baseline, probability_bins
from streamer.events import ModelKey, Outcome, Prediction
from streamer.join import JoinStep
from streamer.loss import multiclass_log_loss
from streamer.ratelimit import RateLimitedLog
from streamer.records import Invalid, decode_outcome, decode_prediction
from streamer.reference import DriftSettings, SeriesDrift
from streamer.segments import SegmentBudget
from streamer.state import JoinOptions, PartitionState, SeriesKey, Side, decode, encode
from streamer.windows import RollingWindows, WindowSpec, WindowStats

log = logging.getLogger(__name__)

_Record = TypeVar("_Record", Prediction, Outcome)

LOSS_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Upper bounds of the per-event log-loss histogram (nats)."""

JOIN_DELAY_BUCKETS_S = (
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0,
    7 * 86400.0,
)  # fmt: skip
"""Upper bounds of the join-delay histogram (seconds)."""

INVALID_LOG_INTERVAL_S = 10.0


class MessageLike(Protocol):
    """What the pipeline reads of a message; ``confluent_kafka.Message`` fits."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class Histogram:
    """A cumulative histogram: counts per upper bound, then +Inf; and the sum."""

    bounds: tuple[float, ...]
    counts: np.ndarray = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)

    def observe(self, values: np.ndarray) -> None:
        slots = np.searchsorted(np.asarray(self.bounds), values, side="left")
        self.counts += np.bincount(slots, minlength=len(self.bounds) + 1)
        self.total += float(values.sum())


@dataclass
class Counters:
    """Process-wide monotonic counters, keyed by their label values."""

    predictions: defaultdict[ModelKey, int] = field(
        default_factory=lambda: defaultdict(int)
    )
    outcomes: int = 0
    joined: defaultdict[ModelKey, int] = field(default_factory=lambda: defaultdict(int))
    duplicates: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    expired: defaultdict[tuple[str, ModelKey | None], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    evicted: defaultdict[tuple[str, ModelKey | None], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    invalid: defaultdict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    late: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    late_predictions: defaultdict[str, int] = field(
        default_factory=lambda: defaultdict(int)
    )
    over_model_limit: int = 0
    redelivered: int = 0
    loss: dict[ModelKey, Histogram] = field(default_factory=dict)
    join_delay: dict[ModelKey, Histogram] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowRow:
    """One exported window: the sum over this process's partitions."""

    model: ModelKey
    segment: tuple[str, ...]
    window: str
    stats: WindowStats


class Pipeline:
    """The live state and the one-way flow through it; thread-safe.

    With ``native`` (the default) the common messages take the compiled path
    (``native/src/batch.rs``): decoded, joined and judged without Python
    objects. Every message that path is not sure of (an invalid one, an ISO
    timestamp in an unusual form, a model seen for the first time, ...) goes
    through the Python path below, in order, so the result is the same;
    ``native=False`` sends every message through Python (tests compare the two).
    """

    def __init__(
        self,
        config: Config,
        *,
        wall_clock_ms: Callable[[], int] | None = None,
        native: bool = True,
    ) -> None:
        self.config = config
        self.specs: tuple[WindowSpec, ...] = config.windows.specs()
        self.join_options = JoinOptions(
            prediction_ttl_ms=round(config.join.prediction_ttl_s * 1000),
            outcome_ttl_ms=round(config.join.outcome_ttl_s * 1000),
            max_pending=config.join.max_pending,
        )
        self.counters = Counters()
        self.partitions: dict[int, PartitionState] = {}
        self.known_models: set[ModelKey] = set()
        self.segments = SegmentBudget(config.segments)
        self.last_message_wall_s: float | None = None
        # Reentrant: a scrape holds it across all its reads (one consistent
        # snapshot), and the readers it calls take it too.
        self.lock = threading.RLock()
        self._wall_clock_ms = wall_clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._future_skew_ms = round(config.scoring.max_future_skew_s * 1000)
        drift = config.drift
        self.drift_settings = DriftSettings(
            reference_events=drift.reference_events,
            reference_predictions=drift.reference_predictions,
            arl0_events=drift.arl0_events,
            shift=drift.shift,
            calibration_events=drift.calibration_events,
        )
        self.baselines: dict[str, Baseline] = {
            name: Baseline(model.baseline_log_loss, model.baseline_log_loss_std)
            for name, model in config.models.items()
            if model.baseline_log_loss is not None
            and model.baseline_log_loss_std is not None
        }
        self._told: set[SeriesKey] = set()
        self._model_keys: dict[ModelKey, ModelKey] = {}
        self._predicted: defaultdict[tuple[int, SeriesKey], PredictionBatch] = (
            defaultdict(PredictionBatch)
        )
        self._latest_valid_ms = 0
        self._invalid_batch: list[tuple[MessageLike, str]] = []
        fields = config.fields
        self._router = _native.Router(
            (
                fields.event_id,
                fields.model,
                fields.model_version,
                fields.timestamp,
                fields.probability,
                fields.probabilities,
                fields.label,
                fields.segment,
            ),
            config.scoring.probability_sum_tolerance,
            list(config.segments.keys),
            config.kafka.predictions_topic,
            self.segments.admit if config.segments.keys else None,
            {
                name: (model.positive_label, model.negative_label)
                for name, model in config.models.items()
            },
            ModelKey,
        )
        self.native = native
        self.offsets_to_store: list[tuple[str, int, int]] = []
        """After :meth:`process`: per (topic, partition) of its messages, one
        past the newest offset, in first-seen order; what the consumer
        stores for librdkafka's auto-commit (messages without a topic,
        partition or offset are left out)."""
        self._invalid_log = RateLimitedLog(
            log, "invalid message", INVALID_LOG_INTERVAL_S
        )

    # -- partitions -------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        with self.lock:
            for partition in partitions:
                self.partitions.setdefault(partition, self._new_partition())

    def keep_or_reset(self, partition: int) -> dict[Side, int]:
        """Keep ``partition``'s state if held, else start it empty; its offsets."""
        with self.lock:
            state = self.partitions.setdefault(partition, self._new_partition())
            return dict(state.next_offsets)

    def adopt_checkpoint(self, partition: int, payload: bytes) -> dict[Side, int]:
        """Take a checkpoint unless the state held is at least as far along.

        Returns the next offsets of the state now held.

        Raises
        ------
        StateFormatError
            The checkpoint is unreadable; the partition's state is unchanged.
        """
        restored = decode(
            payload,
            options=self.join_options,
            specs=self.specs,
            drift_settings=self.drift_settings,
            baselines=self.baselines,
        )
        with self.lock:
            held = self.partitions.get(partition)
            if held is not None and _at_least(held.next_offsets, restored.next_offsets):
                return dict(held.next_offsets)
            dropped = _drop_other_segment_keys(restored, len(self.config.segments.keys))
            if dropped:
                log.warning(
                    "checkpoint series dropped partition=%d series=%d reason=%s",
                    partition,
                    dropped,
                    "saved under other segments.keys",
                )
            self.partitions[partition] = restored
            for model, _ in restored.windows:
                self.known_models.add(model)
            return dict(restored.next_offsets)

    def revoke(self, partitions: Iterable[int]) -> None:
        with self.lock:
            for partition in partitions:
                self.partitions.pop(partition, None)

    def _new_partition(self) -> PartitionState:
        return PartitionState(join=self.join_options.new_join())

    def export_partition(self, partition: int) -> tuple[bytes, dict[Side, int]] | None:
        """Checkpoint bytes of ``partition`` and the next offset of each side."""
        with self.lock:
            state = self.partitions.get(partition)
            if state is None:
                return None
            return encode(state), dict(state.next_offsets)

    def process(self, messages: Sequence[MessageLike]) -> list[tuple[MessageLike, str]]:
        """Decode, join, score and window one batch of messages.

        Returns the messages found invalid, each with its reason, for the
        dead-letter topic. An outcome whose label its prediction does not
        know is found when the pair meets, so the message returned then is
        the one that completed the pair, which may be the prediction.
        """
        self._invalid_batch = []
        self.offsets_to_store = []
        self._router.take_offsets()  # what a batch that raised had noted
        if not messages:
            return self._invalid_batch
        with self.lock:
            self._latest_valid_ms = self._wall_clock_ms() + self._future_skew_ms
            scored: defaultdict[tuple[int, SeriesKey], JoinedBatch] = defaultdict(
                JoinedBatch
            )
            touched: set[int] = set()
            if self.native:
                self._process_native(messages, scored, touched)
            else:
                for message in messages:
                    partition = message.partition() or 0
                    touched.add(partition)
                    self._route(message, partition, scored)
            for partition in touched:
                self._expire(partition)
            self._score(scored)
            self._score_predictions()
            self.last_message_wall_s = self._wall_clock_ms() / 1000
            self.offsets_to_store = self._router.take_offsets()
        return self._invalid_batch

    def _process_native(
        self,
        messages: Sequence[MessageLike],
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
        touched: set[int],
    ) -> None:
        """The compiled path, handing each message it leaves to ``_route``.

        What the compiled path gathered is merged before each message Python
        takes, so every series sees its events in message order.
        """
        router = self._router
        router.begin(self._latest_valid_ms)
        batch = messages if type(messages) is list else list(messages)
        index = 0
        while True:
            if router.admitted_models != len(self.known_models):
                for model in self.known_models:
                    router.admit(model)
            index = router.process(batch, index, self.partitions)
            self._merge(router.take(), batch, scored, touched)
            if index >= len(batch):
                return
            message = batch[index]
            partition = message.partition() or 0
            touched.add(partition)
            self._route(message, partition, scored)
            index += 1

    def _merge(
        self,
        gathered: dict[str, Any],
        batch: Sequence[MessageLike],
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
        touched: set[int],
    ) -> None:
        """Add what the compiled path gathered to the batch and the counters."""
        counters = self.counters
        for model, count in gathered["predictions"]:
            counters.predictions[model] += count
        counters.outcomes += gathered["outcomes"]
        for side in ("prediction", "outcome"):
            if gathered[f"duplicate_{side}s"]:
                counters.duplicates[side] += gathered[f"duplicate_{side}s"]
        for side, model, count in gathered["evicted"]:
            counters.evicted[(side, model)] += count
        if gathered["guard_evictions"]:
            counters.evicted[("duplicate_guard", None)] += gathered["guard_evictions"]
        counters.redelivered += gathered["redelivered"]
        touched.update(gathered["touched"])
        for (
            partition,
            model,
            segment,
            timestamps_ms,
            p_true,
            delays_s,
            scores,
            positives,
            squared_errors,
        ) in gathered["joined"]:
            scored[(partition, (model, segment))].add_columns(
                JoinedColumns(
                    np.frombuffer(timestamps_ms, dtype=np.int64),
                    np.frombuffer(p_true),
                    np.frombuffer(delays_s),
                    np.frombuffer(scores),
                    np.frombuffer(positives, dtype=np.bool_),
                    np.frombuffer(squared_errors),
                )
            )
        for (
            partition,
            model,
            segment,
            timestamps_ms,
            scores,
            probabilities,
            sizes,
        ) in gathered["predicted"]:
            self._predicted[(partition, (model, segment))].add_columns(
                PredictionColumns(
                    np.frombuffer(timestamps_ms, dtype=np.int64),
                    np.frombuffer(scores),
                    np.frombuffer(probabilities),
                    np.frombuffer(sizes, dtype=np.int64).astype(np.intp, copy=False),
                )
            )
        outcomes_topic = self.config.kafka.outcomes_topic
        for index, reason in gathered["invalid"]:
            self._count_invalid(outcomes_topic, Invalid(reason), batch[index])

    def _route(
        self,
        message: MessageLike,
        partition: int,
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
    ) -> None:
        self._router.note_offset(message)
        topic = message.topic() or ""
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = self._new_partition()
        side: Side = (
            "prediction" if topic == self.config.kafka.predictions_topic else "outcome"
        )
        offset = message.offset()
        if offset is not None and offset >= 0:
            if state.already_seen(side, offset):
                self.counters.redelivered += 1
                return
            state.next_offsets[side] = offset + 1
        kafka_ts = _kafka_timestamp(message)
        if side == "prediction":
            prediction = decode_prediction(
                message.value(),
                message.key(),
                kafka_ts,
                fields=self.config.fields,
                sum_tolerance=self.config.scoring.probability_sum_tolerance,
                segment_keys=self.config.segments.keys,
                model_keys=self._model_keys,
            )
            self._on_prediction(
                self._not_ahead(prediction), state, partition, scored, message
            )
        else:
            outcome = decode_outcome(
                message.value(), message.key(), kafka_ts, fields=self.config.fields
            )
            self._on_outcome(
                self._not_ahead(outcome), state, partition, scored, message
            )

    def _not_ahead(self, record: _Record | Invalid) -> _Record | Invalid:
        """``record``, or ``timestamp_in_future`` past the allowed clock skew."""
        if isinstance(record, Invalid) or record.timestamp_ms <= self._latest_valid_ms:
            return record
        return Invalid.TIMESTAMP_IN_FUTURE

    def _on_prediction(
        self,
        prediction: Prediction | Invalid,
        state: PartitionState,
        partition: int,
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
        message: MessageLike,
    ) -> None:
        if isinstance(prediction, Invalid):
            self._count_invalid(
                self.config.kafka.predictions_topic, prediction, message
            )
            return
        if not self._admit_model(prediction.model):
            return
        if prediction.segment:
            prediction = replace(
                prediction, segment=self.segments.admit(prediction.segment)
            )
        state.prediction_watermark_ms = max(
            state.prediction_watermark_ms, prediction.timestamp_ms
        )
        step = state.join.add_prediction(prediction, now_ms=state.join_clock_ms)
        if not step.duplicate:
            self.counters.predictions[prediction.model] += 1
            self._predicted[(partition, (prediction.model, prediction.segment))].add(
                prediction
            )
        self._after_step(step, "prediction", partition, scored, message)

    def _on_outcome(
        self,
        outcome: Outcome | Invalid,
        state: PartitionState,
        partition: int,
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
        message: MessageLike,
    ) -> None:
        if isinstance(outcome, Invalid):
            self._count_invalid(self.config.kafka.outcomes_topic, outcome, message)
            return
        state.outcome_watermark_ms = max(
            state.outcome_watermark_ms, outcome.timestamp_ms
        )
        step = state.join.add_outcome(outcome, now_ms=state.join_clock_ms)
        if not step.duplicate:
            self.counters.outcomes += 1
        self._after_step(step, "outcome", partition, scored, message)

    def _after_step(
        self,
        step: JoinStep,
        side: str,
        partition: int,
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
        message: MessageLike,
    ) -> None:
        if step.duplicate:
            self.counters.duplicates[side] += 1
        for entry in step.evicted:
            self.counters.evicted[(entry.side, entry.model)] += 1
        if step.guard_evictions:
            self.counters.evicted[("duplicate_guard", None)] += step.guard_evictions
        if step.joined is not None:
            prediction, outcome = step.joined
            self._collect(prediction, outcome, partition, scored, message)

    def _collect(
        self,
        prediction: Prediction,
        outcome: Outcome,
        partition: int,
        scored: defaultdict[tuple[int, SeriesKey], JoinedBatch],
        message: MessageLike,
    ) -> None:
        judged = judge(
            prediction, outcome, self.config.models.get(prediction.model.model)
        )
        if isinstance(judged, Invalid):
            self._count_invalid(self.config.kafka.outcomes_topic, judged, message)
            return
        batch = scored[(partition, (prediction.model, prediction.segment))]
        batch.add(judged, outcome.timestamp_ms, prediction.timestamp_ms)

    def _score(self, scored: dict[tuple[int, SeriesKey], JoinedBatch]) -> None:
        eps = self.config.scoring.eps
        for (partition, series), events in scored.items():
            model = series[0]
            columns = events.columns()
            losses = multiclass_log_loss(columns.p_true, eps=eps)
            timestamps = columns.timestamps_ms
            windows = self.partitions[partition].windows.get(series)
            if windows is None:
                windows = self.partitions[partition].windows[series] = RollingWindows(
                    self.specs, extra_columns=CALIBRATION_COLUMNS
                )
            added = windows.add_binned(
                timestamps,
                losses,
                *events.calibration_parts(),
                edges=INNER_BIN_EDGES,
            )
            for window, late in added.items():
                self.counters.late[window] += late
            drift = self._series_drift(partition, series)
            drift.observe_losses(losses)
            if drift.detector_error is not None and series not in self._told:
                self._told.add(series)
                log.warning(
                    "no change detector model=%s version=%s segment=%s "
                    "partition=%d reason=%s",
                    series[0].model,
                    series[0].version,
                    list(series[1]),
                    partition,
                    drift.detector_error,
                )
            self.counters.joined[model] += len(losses)
            self._histogram(self.counters.loss, model, LOSS_BUCKETS).observe(losses)
            self._histogram(
                self.counters.join_delay, model, JOIN_DELAY_BUCKETS_S
            ).observe(columns.delays_s)

    def _score_predictions(self) -> None:
        eps = self.config.scoring.eps
        batches, self._predicted = self._predicted, defaultdict(PredictionBatch)
        for (partition, series), batch in batches.items():
            if batch.is_empty():
                continue
            entropies = batch.entropies(eps)
            columns = batch.columns()
            scores = columns.scores
            timestamps = columns.timestamps_ms

            state = self.partitions[partition]
            windows = state.prediction_windows.get(series)
            if windows is None:
                windows = state.prediction_windows[series] = RollingWindows(
                    self.specs, extra_columns=PREDICTION_COLUMNS
                )
            added = windows.add_binned(
                timestamps,
                entropies,
                *prediction_parts(scores),
                edges=INNER_BIN_EDGES,
            )
            for window, late in added.items():
                self.counters.late_predictions[window] += late
            drift = self._series_drift(partition, series)
            if not drift.reference_complete:
                drift.observe_predictions(probability_bins(scores))

    def _series_drift(self, partition: int, series: SeriesKey) -> SeriesDrift:
        drifts = self.partitions[partition].drift
        drift = drifts.get(series)
        if drift is None:
            drift = drifts[series] = SeriesDrift(
                self.drift_settings,
                self.baselines.get(series[0].model),
            )
        return drift

    @staticmethod
    def _histogram(
        table: dict[ModelKey, Histogram], model: ModelKey, bounds: tuple[float, ...]
    ) -> Histogram:
        histogram = table.get(model)
        if histogram is None:
            histogram = table[model] = Histogram(bounds)
        return histogram

    def _expire(self, partition: int) -> None:
        state = self.partitions[partition]
        for entry in state.join.expire(state.join_clock_ms):
            self.counters.expired[(entry.side, entry.model)] += 1

    def _admit_model(self, model: ModelKey) -> bool:
        if model in self.known_models:
            return True
        if len(self.known_models) >= self.config.metrics.max_models:
            self.counters.over_model_limit += 1
            return False
        self.known_models.add(model)
        return True

    def _count_invalid(self, topic: str, reason: Invalid, message: MessageLike) -> None:
        self.counters.invalid[(topic, reason.value)] += 1
        self._invalid_batch.append((message, reason.value))
        self._invalid_log.note(
            f"{topic}/{reason.value}",
            "topic=%s partition=%s offset=%s reason=%s",
            topic,
            message.partition(),
            message.offset(),
            reason.value,
        )

    # -- reading the state ------------------------------------------------

    def now_ms(self) -> int:
        if self.config.windows.clock == "wall":
            return self._wall_clock_ms()
        newest = [
            max(state.prediction_watermark_ms, state.outcome_watermark_ms)
            for state in self.partitions.values()
        ]
        return max(newest, default=0)

    def window_rows(self) -> list[WindowRow]:
        """Joined windows per series, summed over partitions; drops empty ones."""
        with self.lock:
            now_ms = self.now_ms()
            return _rows([state.windows for state in self.partitions.values()], now_ms)

    def prediction_window_rows(self) -> list[WindowRow]:
        """Prediction windows per series, summed over partitions; drops empty ones."""
        with self.lock:
            now_ms = self.now_ms()
            return _rows(
                [state.prediction_windows for state in self.partitions.values()],
                now_ms,
            )

    def series_drift(self) -> dict[SeriesKey, list[SeriesDrift]]:
        """Per series, each partition's drift state; read under ``self.lock``."""
        found: defaultdict[SeriesKey, list[SeriesDrift]] = defaultdict(list)
        for state in self.partitions.values():
            for series, drift in state.drift.items():
                found[series].append(drift)
        return dict(found)

    def pending(self) -> dict[str, int]:
        with self.lock:
            states = list(self.partitions.values())
            return {
                "prediction": sum(s.join.pending_predictions for s in states),
                "outcome": sum(s.join.pending_outcomes for s in states),
            }


def _rows(
    tables: list[dict[SeriesKey, RollingWindows]], now_ms: int
) -> list[WindowRow]:
    totals: dict[tuple[SeriesKey, str], WindowStats] = {}
    for table in tables:
        for series in list(table):
            windows = table[series]
            if windows.is_empty(now_ms):
                del table[series]
                continue
            for window, stats in windows.stats(now_ms).items():
                previous = totals.get((series, window))
                totals[(series, window)] = (
                    stats if previous is None else previous + stats
                )
    return [
        WindowRow(model, segment, window, stats)
        for ((model, segment), window), stats in sorted(
            totals.items(), key=lambda item: _sort_key(item[0])
        )
    ]


def _drop_other_segment_keys(state: PartitionState, keys: int) -> int:
    """Drop the series saved with another number of segment keys than today's.

    Their values would be exported under today's label names, shifted. What
    they held is lost (it was kept per a segmentation that no longer exists).
    """
    dropped = 0
    for table in (state.windows, state.prediction_windows, state.drift):
        for series in [series for series in table if len(series[1]) != keys]:
            del table[series]
            dropped += 1
    return dropped


def _at_least(held: dict[Side, int], checkpoint: dict[Side, int]) -> bool:
    return all(held.get(side, -1) >= offset for side, offset in checkpoint.items())


def _sort_key(item: tuple[SeriesKey, str]) -> tuple[str, str, tuple[str, ...], str]:
    (model, segment), window = item
    return (model.model, model.version, segment, window)


def _kafka_timestamp(message: MessageLike) -> int | None:
    kind, value = message.timestamp()
    return value if kind != 0 and value >= 0 else None
