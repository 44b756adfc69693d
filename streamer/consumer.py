"""The live Kafka source: one consumer group over both topics, feeding the pipeline.

Delivery and state (``state.store`` kafka or directory). Every
``state.checkpoint_interval_s``, when a partition is revoked, and on shutdown,
each held partition's state is checkpointed together with the offsets of the
next message of each topic it does not reflect; those offsets are committed
only after the checkpoint is written. On assignment a partition's checkpoint
is restored and consumption resumes from its offsets; a partition without one
starts empty from the committed offset (or ``auto.offset.reset``). Messages
handed out again after a rebalance are recognised by offset and skipped, so a
crash at any moment loses nothing and counts nothing twice.

With ``state.store: none`` state lives in memory only, and librdkafka
auto-commits the offsets of processed batches.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamer.checkpoint import CheckpointError, CheckpointStore
from streamer.config import Config, KafkaConfig
from streamer.deadletter import DeadLetters
from streamer.errors import KafkaSetupError, TopicLayoutError
from streamer.metrics import ConsumerHealth
from streamer.pipeline import Pipeline
from streamer.ratelimit import LIBRDKAFKA_LOGGER, RateLimitedLog
from streamer.state import Side, StateFormatError

log = logging.getLogger(__name__)

TOPIC_CHECK_TIMEOUT_S = 15.0
TOPIC_CHECK_SLICE_S = 1.0
KAFKA_ERROR_LOG_INTERVAL_S = 30.0
CHECKPOINT_RETRY_S = 10.0
_FATAL_AT_START = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}
)
"""Errors that retrying will not cure: the start-up check gives up on them."""


def consumer_settings(kafka: KafkaConfig, *, auto_commit: bool) -> dict[str, Any]:
    """librdkafka settings: ours first, then the user's ``kafka.extra``."""
    settings: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        # Range keeps partition p of both topics on one member: the join needs it.
        "partition.assignment.strategy": "range",
        "auto.offset.reset": kafka.auto_offset_reset,
        "enable.auto.commit": auto_commit,
        "enable.auto.offset.store": False,
        "session.timeout.ms": kafka.session_timeout_ms,
        # The 1000 ms default left the consumer idle half the time.
        "fetch.queue.backoff.ms": 10,
        "statistics.interval.ms": kafka.statistics_interval_ms,
        # librdkafka's own log lines go through Python logging, not stderr.
        "logger": LIBRDKAFKA_LOGGER,
    }
    settings.update(kafka.librdkafka_extra())
    return settings


def check_copartitioned(
    consumer: Consumer,
    kafka: KafkaConfig,
    *,
    last_error: Callable[[], KafkaError | None] | None = None,
) -> int:
    """The common partition count of both topics, or a TopicLayoutError.

    ``last_error`` returns the newest error librdkafka reported through
    ``error_cb`` (the consumer's callbacks are served while it waits): a
    KafkaSetupError carries its text, and an authentication or TLS error ends
    the wait at once instead of after ``TOPIC_CHECK_TIMEOUT_S``.
    """
    counts = {
        topic: _partition_count(
            consumer,
            topic,
            bootstrap_servers=kafka.bootstrap_servers,
            last_error=last_error,
        )
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


def require_topics(bootstrap_servers: str, topics: Sequence[str]) -> None:
    """Fail fast, naming the topic, when one of ``topics`` does not exist."""
    probe = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "probe"})
    try:
        for topic in topics:
            _partition_count(probe, topic)
    finally:
        probe.close()


def _partition_count(
    consumer: Consumer,
    topic: str,
    *,
    bootstrap_servers: str | None = None,
    last_error: Callable[[], KafkaError | None] | None = None,
) -> int:
    deadline = time.monotonic() + TOPIC_CHECK_TIMEOUT_S
    while True:
        remaining_s = deadline - time.monotonic()
        try:
            metadata = consumer.list_topics(
                topic=topic, timeout=max(0.1, min(TOPIC_CHECK_SLICE_S, remaining_s))
            )
            break
        except KafkaException as exc:
            # error_cb runs only in poll(); nothing is subscribed yet, so this
            # serves the callbacks and returns no message.
            consumer.poll(0)
            error = last_error() if last_error is not None else None
            fatal = error is not None and error.code() in _FATAL_AT_START
            if fatal or time.monotonic() >= deadline:
                raise _metadata_error(topic, bootstrap_servers, exc, error) from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicLayoutError(
            f"topic {topic!r} does not exist on the cluster; create it (with the "
            "same partition count as the other input topic) or fix the name in "
            "the configuration"
        )
    return len(described.partitions)


def _metadata_error(
    topic: str,
    bootstrap_servers: str | None,
    exc: KafkaException,
    last: KafkaError | None,
) -> KafkaSetupError:
    where = (
        f"from {bootstrap_servers} (kafka.bootstrap_servers)"
        if bootstrap_servers
        else "from kafka.bootstrap_servers"
    )
    if last is None:
        cause = f"{exc.args[0].str() if exc.args else exc}; is the broker reachable?"
    else:
        cause = f"the last error librdkafka reported: {last.name()}: {last.str()}"
        if last.code() in _FATAL_AT_START:
            cause += (
                "; check security.protocol, sasl.mechanism, sasl.username, "
                "sasl.password and ssl.ca.location in kafka.extra"
            )
    return KafkaSetupError(
        f"cannot read the metadata of topic {topic!r} {where}: {cause}"
    )


class KafkaSource:
    """Consumes both topics in batches until ``stop`` is set."""

    last_error: KafkaError | None = None
    """The newest error librdkafka reported through ``error_cb``."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        health: ConsumerHealth,
        stop: threading.Event,
        store: CheckpointStore,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.health = health
        self.stop = stop
        self.store = store
        self.checkpointing = config.state.store != "none"
        settings = consumer_settings(config.kafka, auto_commit=not self.checkpointing)
        settings["stats_cb"] = self._on_stats
        settings["error_cb"] = self._on_error
        settings["on_commit"] = self._on_commit
        self.consumer = Consumer(settings)
        self._held: set[int] = set()
        self.dead_letters = (
            DeadLetters(config.kafka.dead_letter_topic, config.kafka.client_settings())
            if config.kafka.dead_letter_topic
            else None
        )
        self._error_log = RateLimitedLog(log, "kafka error", KAFKA_ERROR_LOG_INTERVAL_S)
        self._commit_log = RateLimitedLog(
            log, "offset commit", KAFKA_ERROR_LOG_INTERVAL_S
        )
        self._next_checkpoint_s = time.monotonic() + config.state.checkpoint_interval_s

    def run(self) -> None:
        """Check the topics, subscribe, and consume until stopped; then close."""
        kafka = self.config.kafka
        try:
            partitions = check_copartitioned(
                self.consumer, kafka, last_error=lambda: self.last_error
            )
            self.health.kafka_reachable = True
            log.info(
                "topics co-partitioned predictions=%s outcomes=%s partitions=%d",
                kafka.predictions_topic,
                kafka.outcomes_topic,
                partitions,
            )
            self.store.prepare(partitions)
            self.consumer.subscribe(
                [kafka.predictions_topic, kafka.outcomes_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            with few_collections():
                self._loop()
            self._checkpoint(sorted(self._held))
        finally:
            if self.dead_letters is not None:
                self.dead_letters.close(timeout_s=10.0)
            self.consumer.close()
            self.store.close()
            log.info("consumer closed group=%s", kafka.group_id)

    def _loop(self) -> None:
        kafka = self.config.kafka
        while not self.stop.is_set():
            messages = self.consumer.consume(
                num_messages=kafka.consume_batch_size, timeout=kafka.consume_timeout_s
            )
            failed = [message for message in messages if message.error() is not None]
            valid = (
                [message for message in messages if not self._failed(message)]
                if failed
                else messages
            )
            if valid:
                self.health.kafka_reachable = True
                invalid = self.pipeline.process(valid)
                if self.dead_letters is not None:
                    self.dead_letters.send(invalid)
                if not self.checkpointing:
                    stored = self.pipeline.offsets_to_store
                    self.consumer.store_offsets(
                        offsets=[TopicPartition(*place) for place in stored]
                    )
            if self.dead_letters is not None:
                self.dead_letters.poll()
                self.health.dead_letters = self.dead_letters.sent
                self.health.dead_letter_failures = self.dead_letters.failures
            if self.checkpointing and time.monotonic() >= self._next_checkpoint_s:
                self._checkpoint(sorted(self._held))

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

    # -- checkpoints ------------------------------------------------------

    def _checkpoint(self, partitions: list[int]) -> bool:
        """Checkpoint ``partitions``, then commit what they cover; True if done."""
        self._next_checkpoint_s = (
            time.monotonic() + self.config.state.checkpoint_interval_s
        )
        if not self.checkpointing or not partitions:
            return True
        started = time.monotonic()
        written = 0
        commits: list[TopicPartition] = []
        try:
            for partition in partitions:
                exported = self.pipeline.export_partition(partition)
                if exported is None:
                    continue
                payload, offsets = exported
                self.store.save(partition, payload)
                written += len(payload)
                commits.extend(self._offsets_of(partition, offsets))
        except CheckpointError as exc:
            self.health.checkpoint_failures += 1
            # Kafka is where checkpoints go: a failed one says the cluster is
            # out of reach, and the next try waits, so consuming (and serving
            # librdkafka's callbacks) is not starved by flush timeouts.
            self.health.kafka_reachable = False
            self._next_checkpoint_s = time.monotonic() + max(
                self.config.state.checkpoint_interval_s, CHECKPOINT_RETRY_S
            )
            log.error("checkpoint failed; offsets not committed error=%s", exc)
            return False
        if commits and not self._commit(commits):
            return False
        duration_s = time.monotonic() - started
        self.health.last_checkpoint_wall_s = time.time()
        self.health.last_checkpoint_bytes = written
        self.health.last_checkpoint_duration_s = duration_s
        log.info(
            "checkpoint written partitions=%s bytes=%d duration_s=%.3f",
            partitions,
            written,
            duration_s,
        )
        return True

    def _offsets_of(
        self, partition: int, offsets: dict[Side, int]
    ) -> list[TopicPartition]:
        topics = {
            "prediction": self.config.kafka.predictions_topic,
            "outcome": self.config.kafka.outcomes_topic,
        }
        return [
            TopicPartition(topics[side], partition, offset)
            for side, offset in sorted(offsets.items())
        ]

    def _commit(self, offsets: list[TopicPartition]) -> bool:
        """Commit ``offsets`` asynchronously; :meth:`_on_commit` counts failures.

        A synchronous commit waits for the group coordinator without a time
        limit, so a broker outage would freeze the loop (no statistics, no
        ``kafka_reachable`` = 0, no shutdown). Asynchronous is enough: restore
        reads its offsets from the checkpoint, and a commit that is lost only
        leaves the group's committed offsets behind until the next one.
        ``close()`` waits for the commits still outstanding.
        """
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self.health.checkpoint_failures += 1
            log.error("commit after checkpoint failed error=%s", exc)
            return False
        return True

    def _on_commit(
        self, error: KafkaError | None, partitions: list[TopicPartition]
    ) -> None:
        failed = [tp for tp in partitions if tp.error is not None]
        if error is None and not failed:
            return
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            return
        self.health.checkpoint_failures += 1
        cause = error if error is not None else failed[0].error
        self._commit_log.note(
            "failed", "failed (the checkpoint before it is written) error=%s", cause
        )

    def _restore(self, partition: int) -> dict[Side, int]:
        """Load ``partition``'s checkpoint into the pipeline; its next offsets.

        State this process still holds (a partition lost in a broker outage
        and handed back) is kept when it is at least as far along as the
        checkpoint: it holds everything the checkpoint does, and its offsets
        keep the records consumed since from being counted again.
        """
        try:
            payload = self.store.load(partition)
            if payload is not None:
                return self.pipeline.adopt_checkpoint(partition, payload)
        except (CheckpointError, StateFormatError, KafkaException) as exc:
            self.health.restore_failures += 1
            log.error("checkpoint not restored partition=%d error=%s", partition, exc)
        return self.pipeline.keep_or_reset(partition)

    # -- the group --------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.rebalances += 1
        started = time.monotonic()
        numbers = sorted({tp.partition for tp in partitions})
        self.pipeline.revoke(set(self.pipeline.partitions) - set(numbers))
        offsets = {number: self._restore(number) for number in numbers}
        for tp in partitions:
            side: Side = (
                "prediction"
                if tp.topic == self.config.kafka.predictions_topic
                else "outcome"
            )
            restored = offsets[tp.partition].get(side)
            if restored is not None:
                tp.offset = restored
        consumer.assign(partitions)
        self._held = set(numbers)
        self.health.assigned = {(tp.topic, tp.partition) for tp in partitions}
        self.health.last_restore_duration_s = time.monotonic() - started
        log.info(
            "partitions assigned partitions=%s restored=%s duration_s=%.3f",
            numbers,
            sorted(number for number, found in offsets.items() if found),
            self.health.last_restore_duration_s,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions} & self._held)
        self._checkpoint(numbers)
        self._release(numbers)
        log.info("partitions revoked partitions=%s", numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them now, so no checkpoint; the state stays
        # until the next assignment says whether they came back to us.
        numbers = sorted({tp.partition for tp in partitions} & self._held)
        self._release(numbers, keep_state=True)
        log.warning("partitions lost (not checkpointed) partitions=%s", numbers)

    def _release(self, numbers: list[int], *, keep_state: bool = False) -> None:
        if not keep_state:
            self.pipeline.revoke(numbers)
        self._held -= set(numbers)
        self.health.assigned = {
            key for key in self.health.assigned if key[1] not in numbers
        }
        self.health.lag = {
            key: lag for key, lag in self.health.lag.items() if key[1] not in numbers
        }

    # -- librdkafka callbacks ---------------------------------------------

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.health.lag = _lags(stats, self.health.assigned)
        self.health.kafka_reachable = any(
            broker.get("state") == "UP" and broker.get("nodeid", -1) >= 0
            for broker in stats.get("brokers", {}).values()
        )

    def _on_error(self, error: KafkaError) -> None:
        self.last_error = error
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.kafka_reachable = False
        self._error_log.note(
            error.name(), "code=%s reason=%s", error.name(), error.str()
        )


GC_THRESHOLD: Final = 100_000
"""Net new container objects between two young-generation collections."""


_collections_lock = threading.Lock()
_loops_running = 0
_settings_before: tuple[int, ...] = ()


@contextlib.contextmanager
def few_collections() -> Iterator[None]:
    """Run the consume loop with the cyclic garbage collector mostly idle.

    Each batch makes ``consume_batch_size`` message objects, which live
    until the batch is done; at CPython's default threshold (700) they set
    off a dozen collections per batch that walk the live messages, about a
    tenth of the loop's CPU at full speed. Objects from start-up are frozen
    (left out of every collection) and a collection waits for
    :data:`GC_THRESHOLD` more container objects than were freed: the loop
    makes few reference cycles, and any it makes are still collected, just
    in larger rounds. The settings are the process's: the first loop to
    start changes them, the last to end puts the previous ones back.
    """
    global _loops_running, _settings_before
    with _collections_lock:
        if _loops_running == 0:
            _settings_before = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, *_settings_before[1:])
        _loops_running += 1
    try:
        yield
    finally:
        with _collections_lock:
            _loops_running -= 1
            if _loops_running == 0:
                gc.set_threshold(*_settings_before)
                gc.unfreeze()


def _lags(
    stats: dict[str, Any], assigned: set[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    lags: dict[tuple[str, int], int] = {}
    for topic, described in stats.get("topics", {}).items():
        for number, partition in described.get("partitions", {}).items():
            key = (topic, int(number))
            lag = _position_lag(partition)
            if key in assigned and lag is not None:
                lags[key] = lag
    return lags


def _position_lag(partition: dict[str, Any]) -> int | None:
    """Messages between the consumer's position and the end; None if unknown.

    librdkafka's own ``consumer_lag`` counts from the committed offset, which
    only moves at checkpoints; the position (``app_offset``) is what has been
    processed. An empty partition (low == high) lags by 0 before any fetch.
    """
    end = int(partition.get("ls_offset", -1))
    if end < 0:
        end = int(partition.get("hi_offset", -1))
    if end < 0:
        return None
    for name in ("app_offset", "committed_offset"):
        position = int(partition.get(name, -1))
        if position >= 0:
            return max(0, end - position)
    if partition.get("lo_offset", -1) == end:
        return 0
    return None


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
