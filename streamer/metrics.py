"""The Prometheus collector over the live pipeline state.

Nothing here is a gauge that is set and forgotten: every scrape reads the
pipeline, so the series of a model leave when its windows empty. Window
values are additive across replicas: the global mean of a window is
``sum(driftstream_window_log_loss * driftstream_window_events) /
sum(driftstream_window_events)``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import confluent_kafka
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamer import __version__
from streamer.drift_metrics import drift_families
from streamer.events import ModelKey
from streamer.pipeline import Counters, Histogram, Pipeline, WindowRow

PREFIX = "driftstream_"
MODEL_LABELS = ("model", "version")


@dataclass
class ConsumerHealth:
    """What the Kafka adapter reports; read at scrape time."""

    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    assigned: set[tuple[str, int]] = field(default_factory=set)
    kafka_reachable: bool = False
    rebalances: int = 0
    last_checkpoint_wall_s: float | None = None
    last_checkpoint_bytes: int = 0
    last_checkpoint_duration_s: float = 0.0
    checkpoint_failures: int = 0
    restore_failures: int = 0
    last_restore_duration_s: float | None = None
    dead_letters: int = 0
    dead_letter_failures: int = 0


class PipelineCollector(Collector):
    """Exports the pipeline's windows, counters and health on each scrape."""

    def __init__(self, pipeline: Pipeline, health: ConsumerHealth) -> None:
        self.pipeline = pipeline
        self.health = health

    def collect(self) -> Iterator[Metric]:
        # One snapshot: the consumer waits while the families are built (not
        # while they are formatted), so windows and counters agree.
        with self.pipeline.lock:
            rows = self.pipeline.window_rows()
            families = [
                *self._windows(rows),
                *drift_families(self.pipeline, rows),
                *_counters(self.pipeline.counters),
                _segments_dropped(self.pipeline.segments.dropped),
                *_histograms(self.pipeline.counters),
                *self._health(self.pipeline.last_message_wall_s),
            ]
        yield from families
        yield _build_info()

    def _windows(self, rows: list[WindowRow]) -> Iterator[Metric]:
        segment_keys = list(self.pipeline.config.segments.keys)
        labels = [*MODEL_LABELS, *segment_keys, "window"]
        min_events = self.pipeline.config.windows.min_events
        events = GaugeMetricFamily(
            PREFIX + "window_events",
            "Joined events in the rolling window (event time of the outcome).",
            labels=labels,
        )
        mean = GaugeMetricFamily(
            PREFIX + "window_log_loss",
            "Mean log loss (nats) of the window's events; absent below min_events.",
            labels=labels,
        )
        mean_squared = GaugeMetricFamily(
            PREFIX + "window_log_loss_squared",
            "Mean squared log loss of the window's events, for variance and z-scores.",
            labels=labels,
        )
        for row in rows:
            values = [row.model.model, row.model.version, *row.segment, row.window]
            events.add_metric(values, row.stats.events)
            if row.stats.events >= min_events:
                mean.add_metric(values, row.stats.mean_loss or 0.0)
                mean_squared.add_metric(values, row.stats.mean_squared_loss or 0.0)
        yield from (events, mean, mean_squared)

    def _health(self, last_message_s: float | None) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            PREFIX + "pending_entries",
            "Entries waiting for the other side of the join.",
            labels=["side"],
        )
        for side, count in self.pipeline.pending().items():
            pending.add_metric([side], count)
        yield pending

        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag_messages",
            "Messages between the consumer position and the partition's end.",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(self.health.lag.items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag

        yield GaugeMetricFamily(
            PREFIX + "assigned_partitions",
            "Input partitions assigned to this process (both topics).",
            value=len(self.health.assigned),
        )
        yield GaugeMetricFamily(
            PREFIX + "kafka_reachable",
            "1 while the consumer can reach the Kafka cluster, else 0.",
            value=1 if self.health.kafka_reachable else 0,
        )
        yield from self._checkpoints()
        if last_message_s is not None:
            yield GaugeMetricFamily(
                PREFIX + "last_message_timestamp_seconds",
                "Wall-clock time the last batch of messages was processed.",
                value=last_message_s,
            )

    def _checkpoints(self) -> Iterator[Metric]:
        health = self.health
        yield CounterMetricFamily(
            PREFIX + "rebalances",
            "Partition assignments received from the consumer group.",
            value=health.rebalances,
        )
        yield CounterMetricFamily(
            PREFIX + "dead_letters",
            "Invalid messages copied to kafka.dead_letter_topic.",
            value=health.dead_letters,
        )
        yield CounterMetricFamily(
            PREFIX + "dead_letter_failures",
            "Invalid messages whose copy to the dead-letter topic failed.",
            value=health.dead_letter_failures,
        )
        yield CounterMetricFamily(
            PREFIX + "checkpoint_failures",
            "Checkpoints or offset commits that failed; offsets stay uncommitted.",
            value=health.checkpoint_failures,
        )
        yield CounterMetricFamily(
            PREFIX + "restore_failures",
            "Checkpoints that could not be read back; the partition started empty.",
            value=health.restore_failures,
        )
        if health.last_checkpoint_wall_s is not None:
            yield GaugeMetricFamily(
                PREFIX + "checkpoint_age_seconds",
                "Seconds since the last complete checkpoint of every partition.",
                value=max(0.0, time.time() - health.last_checkpoint_wall_s),
            )
            yield GaugeMetricFamily(
                PREFIX + "checkpoint_size_bytes",
                "Bytes written by the last complete checkpoint.",
                value=health.last_checkpoint_bytes,
            )
            yield GaugeMetricFamily(
                PREFIX + "checkpoint_duration_seconds",
                "Time the last complete checkpoint took.",
                value=health.last_checkpoint_duration_s,
            )
        if health.last_restore_duration_s is not None:
            yield GaugeMetricFamily(
                PREFIX + "restore_duration_seconds",
                "Time the last restore of assigned partitions took.",
                value=health.last_restore_duration_s,
            )


def _model_counter(
    name: str, documentation: str, table: dict[ModelKey, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=MODEL_LABELS)
    for model, count in sorted(table.items(), key=lambda item: _model_sort(item[0])):
        family.add_metric([model.model, model.version], count)
    return family


def _side_counter(
    name: str, documentation: str, table: dict[tuple[str, ModelKey | None], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(
        PREFIX + name, documentation, labels=["side", *MODEL_LABELS]
    )
    for (side, model), count in sorted(table.items(), key=_side_sort):
        family.add_metric(
            [side, model.model if model else "", model.version if model else ""],
            count,
        )
    return family


def _segments_dropped(dropped: dict[str, int]) -> CounterMetricFamily:
    return _labelled_counter(
        "segment_values_dropped",
        "Predictions whose segment value was outside the key's budget or "
        "allow-list, exported as `other`.",
        "key",
        dropped,
    )


def _labelled_counter(
    name: str, documentation: str, label: str, table: Mapping[str, int]
) -> CounterMetricFamily:
    """A counter with one label, a sample per key of ``table``, sorted."""
    family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
    for value, count in sorted(table.items()):
        family.add_metric([value], count)
    return family


def _counters(counters: Counters) -> Iterator[Metric]:
    yield _model_counter(
        "predictions",
        "Valid predictions received, duplicates not included.",
        counters.predictions,
    )
    yield CounterMetricFamily(
        PREFIX + "outcomes",
        "Valid outcomes received, duplicates not included.",
        value=counters.outcomes,
    )
    yield _model_counter(
        "joined", "Predictions joined with their outcome and scored.", counters.joined
    )
    yield _labelled_counter(
        "duplicates",
        "Records for an event id already pending or joined; never scored twice.",
        "side",
        counters.duplicates,
    )
    yield _side_counter(
        "expired",
        "Pending entries whose TTL ran out before the other side arrived.",
        counters.expired,
    )
    yield _side_counter(
        "evictions",
        "Pending entries dropped to honour join.max_pending.",
        counters.evicted,
    )
    invalid = CounterMetricFamily(
        PREFIX + "invalid_messages",
        "Messages that could not be used, by topic and reason; offsets advance.",
        labels=["topic", "reason"],
    )
    for (topic, reason), count in sorted(counters.invalid.items()):
        invalid.add_metric([topic, reason], count)
    yield invalid
    yield _labelled_counter(
        "late_events",
        "Joined events older than a window could still hold, by window.",
        "window",
        counters.late,
    )
    yield _labelled_counter(
        "late_predictions",
        "Predictions older than a prediction window could still hold, by window.",
        "window",
        counters.late_predictions,
    )
    yield CounterMetricFamily(
        PREFIX + "over_model_limit",
        "Predictions of (model, version) pairs past metrics.max_models; dropped.",
        value=counters.over_model_limit,
    )


def _histograms(counters: Counters) -> Iterator[Metric]:
    yield _histogram_family(
        "event_log_loss",
        "Per-event log loss (nats) of joined events.",
        counters.loss,
    )
    yield _histogram_family(
        "join_delay_seconds",
        "Outcome timestamp minus prediction timestamp of joined events.",
        counters.join_delay,
    )


def _histogram_family(
    name: str, documentation: str, table: dict[ModelKey, Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, documentation, labels=MODEL_LABELS)
    for model, histogram in sorted(
        table.items(), key=lambda item: _model_sort(item[0])
    ):
        cumulative = histogram.counts.cumsum()
        buckets = [
            (_bound(bound), float(count))
            for bound, count in zip(
                [*histogram.bounds, float("inf")], cumulative, strict=True
            )
        ]
        family.add_metric(
            [model.model, model.version], buckets, sum_value=histogram.total
        )
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _build_info() -> InfoMetricFamily:
    return InfoMetricFamily(
        PREFIX + "build",
        "Version of driftstream and of the libraries it runs on.",
        value={
            "version": __version__,
            "python_version": platform.python_version(),
            "librdkafka_version": confluent_kafka.libversion()[0],
        },
    )


def _model_sort(model: ModelKey) -> tuple[str, str]:
    return (model.model, model.version)


def _side_sort(item: tuple[tuple[str, ModelKey | None], int]) -> tuple[str, str, str]:
    (side, model), _ = item
    return (side, model.model if model else "", model.version if model else "")
