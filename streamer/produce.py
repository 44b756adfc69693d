"""The Kafka adapter of the synthetic generator: a stream onto two topics.

:func:`produce_stream` sends what ``streamer.generate.SyntheticStream``
yields, paced to the wall clock or as fast as the producer takes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import confluent_kafka

from streamer.generate import (
    GeneratedMessage,
    GeneratorConfig,
    SyntheticStream,
    TopicKind,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProduceCounts:
    """What :func:`produce_stream` handed to Kafka.

    ``delivery_errors`` counts messages the broker did not acknowledge: failed
    delivery reports plus any still queued when the final flush timed out.
    """

    predictions_sent: int
    outcomes_sent: int
    labels_withheld: int
    delivery_errors: int


_POLL_EVERY_MESSAGES = 1000
_PROGRESS_INTERVAL_S = 1.0
_PACING_SLACK_S = 0.001
_WAIT_SLICE_S = 0.05
_FLUSH_TIMEOUT_S = 30.0

ProgressCallback = Callable[[ProduceCounts], None]


def produce_stream(
    config: GeneratorConfig,
    *,
    bootstrap_servers: str,
    predictions_topic: str,
    outcomes_topic: str,
    start_ms: int,
    realtime: bool,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    producer_settings: Mapping[str, Any] | None = None,
) -> ProduceCounts:
    """Send a :class:`SyntheticStream` to Kafka and return what was sent.

    Simulated time zero is ``start_ms`` (epoch milliseconds); every message
    carries its simulated send time as its Kafka timestamp (CreateTime) and in
    its JSON. With ``realtime`` each message waits until its time on the wall
    clock, counted from the call; without, messages go out as fast as the
    producer takes them -- then pick ``start_ms`` so the stream ends near now,
    since brokers may reject timestamps too far in the future
    (``log.message.timestamp.after.max.ms``), which shows as delivery errors.

    The producer compresses with lz4 and lingers briefly. Delivery is
    at-least-once from librdkafka's retries; a failed delivery is counted in
    ``delivery_errors`` and the first one is logged. ``stop`` ends the run
    early (outcomes still due are then not sent); ``on_progress`` gets the
    counts about once a second and at the end. ``producer_settings`` adds to
    or overrides the librdkafka settings.
    """
    topics: dict[TopicKind, str] = {
        "predictions": predictions_topic,
        "outcomes": outcomes_topic,
    }
    run = _ProduceRun(
        _producer_settings(bootstrap_servers, producer_settings),
        topics,
        stop if stop is not None else threading.Event(),
        on_progress,
    )
    logger.info(
        "generator started bootstrap_servers=%s predictions_topic=%s "
        "outcomes_topic=%s realtime=%s",
        bootstrap_servers,
        predictions_topic,
        outcomes_topic,
        realtime,
    )
    counts = run.send_all(SyntheticStream(config, start_ms=start_ms), realtime)
    logger.info(
        "generator finished predictions_sent=%d outcomes_sent=%d "
        "labels_withheld=%d delivery_errors=%d",
        counts.predictions_sent,
        counts.outcomes_sent,
        counts.labels_withheld,
        counts.delivery_errors,
    )
    return counts


def _producer_settings(
    bootstrap_servers: str, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "compression.type": "lz4",
        "linger.ms": 5,
        "delivery.report.only.error": True,
        **(overrides or {}),
    }


class _DeliveryReports:
    """Counts failed deliveries; logs the first, the rest show in the count."""

    def __init__(self) -> None:
        self.errors = 0

    def record(
        self,
        error: confluent_kafka.KafkaError | None,
        message: confluent_kafka.Message[Any, Any],
    ) -> None:
        if error is None:
            return
        self.errors += 1
        if self.errors == 1:
            logger.warning(
                "delivery failed topic=%s key=%r error=%s; further failures are "
                "only counted",
                message.topic(),
                message.key(),
                error,
            )


class _ProduceRun:
    """One pass of a stream into Kafka: pacing, sending, polling, counting."""

    def __init__(
        self,
        settings: dict[str, Any],
        topics: dict[TopicKind, str],
        stop: threading.Event,
        on_progress: ProgressCallback | None,
    ) -> None:
        self._reports = _DeliveryReports()
        self._producer = confluent_kafka.Producer(
            {**settings, "on_delivery": self._reports.record}
        )
        self._topics = topics
        self._stop = stop
        self._on_progress = on_progress
        self._sent: dict[TopicKind, int] = {"predictions": 0, "outcomes": 0}

    def send_all(self, stream: SyntheticStream, realtime: bool) -> ProduceCounts:
        anchor_s = last_progress_s = time.monotonic()

        for message in stream:
            if realtime:
                due_s = anchor_s + (message.timestamp_ms - stream.start_ms) / 1000.0
                self._wait_until(due_s)
            if self._stop.is_set() or not self._send(message):
                break

            if sum(self._sent.values()) % _POLL_EVERY_MESSAGES == 0:
                self._producer.poll(0)
            if time.monotonic() - last_progress_s >= _PROGRESS_INTERVAL_S:
                last_progress_s = time.monotonic()
                self._report_progress(stream)

        self._finish()
        return self._report_progress(stream)

    def _wait_until(self, due_s: float) -> None:
        while not self._stop.is_set():
            remaining_s = due_s - time.monotonic()
            if remaining_s <= _PACING_SLACK_S:
                return
            self._producer.poll(min(remaining_s, _WAIT_SLICE_S))

    def _send(self, message: GeneratedMessage) -> bool:
        """Hand one message to the producer, waiting while its queue is full."""
        while True:
            try:
                self._producer.produce(
                    self._topics[message.topic_kind],
                    value=message.value,
                    key=message.key,
                    timestamp=message.timestamp_ms,
                )
            except BufferError:
                if self._stop.is_set():
                    return False
                self._producer.poll(_WAIT_SLICE_S)
                continue
            self._sent[message.topic_kind] += 1
            return True

    def _finish(self) -> None:
        unflushed = self._producer.flush(_FLUSH_TIMEOUT_S)
        if unflushed:
            logger.warning(
                "flush timed out unflushed=%d timeout_s=%s; counted as delivery errors",
                unflushed,
                _FLUSH_TIMEOUT_S,
            )
            self._reports.errors += unflushed

    def _report_progress(self, stream: SyntheticStream) -> ProduceCounts:
        counts = ProduceCounts(
            predictions_sent=self._sent["predictions"],
            outcomes_sent=self._sent["outcomes"],
            labels_withheld=stream.counts.labels_withheld,
            delivery_errors=self._reports.errors,
        )
        if self._on_progress is not None:
            self._on_progress(counts)
        return counts
