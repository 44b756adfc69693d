"""The live Kafka source: one consumer group over both topics, feeding the pipeline.

Delivery: offsets are stored after the batch that contains them has been
processed, and committed by librdkafka's auto-commit from the stored ones,
so a crash re-delivers at most the batches since the last commit (at least
once). The join and window state is held in memory only; a restarted process
starts with empty windows and pending entries (see the README's Limitations).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamer.config import Config, KafkaConfig
from streamer.errors import KafkaSetupError, TopicLayoutError
from streamer.metrics import ConsumerHealth
from streamer.pipeline import Pipeline

log = logging.getLogger(__name__)

TOPIC_CHECK_TIMEOUT_S = 15.0


def consumer_settings(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings: ours first, then the user's ``kafka.extra``."""
    settings: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        # Range keeps partition p of both topics on one member: the join needs it.
        "partition.assignment.strategy": "range",
        "auto.offset.reset": kafka.auto_offset_reset,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "session.timeout.ms": kafka.session_timeout_ms,
        # The 1000 ms default left the consumer idle half the time.
        "fetch.queue.backoff.ms": 10,
        "statistics.interval.ms": kafka.statistics_interval_ms,
    }
    settings.update(kafka.extra)
    return settings


def check_copartitioned(consumer: Consumer, kafka: KafkaConfig) -> int:
    """The common partition count of both topics, or a TopicLayoutError."""
    counts = {
        topic: _partition_count(consumer, topic)
        for topic in (kafka.predictions_topic, kafka.outcomes_topic)
    }
    predictions = counts[kafka.predictions_topic]
    outcomes = counts[kafka.outcomes_topic]
    if predictions != outcomes:
        raise TopicLayoutError(
            f"topic {kafka.predictions_topic!r} has {predictions} partitions but "
            f"topic {kafka.outcomes_topic!r} has {outcomes}: driftstream joins "
            "partition p of one with partition p of the other, so both topics "
            "must have the same partition count and be keyed by event id. "
            "Give them the same count (and re-key if needed), then restart."
        )
    return predictions


def _partition_count(consumer: Consumer, topic: str) -> int:
    try:
        metadata = consumer.list_topics(topic=topic, timeout=TOPIC_CHECK_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaSetupError(
            f"cannot read the metadata of topic {topic!r}: {exc}; is the broker "
            "reachable at kafka.bootstrap_servers?"
        ) from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicLayoutError(
            f"topic {topic!r} does not exist on the cluster; create it (with the "
            "same partition count as the other input topic) or fix the name in "
            "the configuration"
        )
    return len(described.partitions)


class KafkaSource:
    """Consumes both topics in batches until ``stop`` is set."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        health: ConsumerHealth,
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.health = health
        self.stop = stop
        settings = consumer_settings(config.kafka)
        settings["stats_cb"] = self._on_stats
        settings["error_cb"] = self._on_error
        self.consumer = Consumer(settings)

    def run(self) -> None:
        """Check the topics, subscribe, and consume until stopped; then close."""
        kafka = self.config.kafka
        try:
            partitions = check_copartitioned(self.consumer, kafka)
            log.info(
                "topics co-partitioned predictions=%s outcomes=%s partitions=%d",
                kafka.predictions_topic,
                kafka.outcomes_topic,
                partitions,
            )
            self.consumer.subscribe(
                [kafka.predictions_topic, kafka.outcomes_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
            )
            self._loop()
        finally:
            self.consumer.close()
            log.info("consumer closed group=%s", kafka.group_id)

    def _loop(self) -> None:
        kafka = self.config.kafka
        while not self.stop.is_set():
            messages = self.consumer.consume(
                num_messages=kafka.consume_batch_size, timeout=kafka.consume_timeout_s
            )
            valid = [message for message in messages if not self._failed(message)]
            if not valid:
                continue
            self.pipeline.process(valid)
            self.consumer.store_offsets(offsets=_next_offsets(valid))

    def _failed(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning(
                "consume error topic=%s partition=%s error=%s",
                message.topic(),
                message.partition(),
                error,
            )
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        self.health.assigned = assigned
        numbers = sorted({tp.partition for tp in partitions})
        self.pipeline.keep_only(numbers)
        log.info("partitions assigned partitions=%s", numbers)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.assigned = set()
        log.info(
            "partitions revoked partitions=%s",
            sorted({tp.partition for tp in partitions}),
        )

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.health.lag = _lags(stats, self.health.assigned)
        self.health.kafka_reachable = any(
            broker.get("state") == "UP" and broker.get("nodeid", -1) >= 0
            for broker in stats.get("brokers", {}).values()
        )

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.kafka_reachable = False
        log.warning("kafka error code=%s reason=%s", error.name(), error.str())


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    newest: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = (
            message.topic(),
            message.partition(),
            message.offset(),
        )
        if topic is None or partition is None or offset is None:
            continue
        if offset > newest.get((topic, partition), -1):
            newest[(topic, partition)] = offset
    return [
        TopicPartition(topic, partition, offset + 1)
        for (topic, partition), offset in newest.items()
    ]


def _lags(
    stats: dict[str, Any], assigned: set[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    lags: dict[tuple[str, int], int] = {}
    for topic, described in stats.get("topics", {}).items():
        for number, partition in described.get("partitions", {}).items():
            key = (topic, int(number))
            lag = partition.get("consumer_lag", -1)
            if key in assigned and lag >= 0:
                lags[key] = lag
    return lags


def readiness(health: ConsumerHealth, *, max_lag: int) -> tuple[bool, str]:
    """Ready when partitions are assigned, Kafka is reachable and lag is low."""
    if not health.kafka_reachable:
        return False, "not ready: Kafka is unreachable"
    if not health.assigned:
        return False, "not ready: no partitions assigned yet"
    unknown = sorted(health.assigned - set(health.lag))
    if unknown:
        return False, f"not ready: lag not known yet for {len(unknown)} partitions"
    behind = {key: lag for key, lag in health.lag.items() if lag > max_lag}
    if behind:
        worst = max(behind.values())
        return False, f"not ready: {len(behind)} partitions lag, worst {worst}"
    return True, "ready"
