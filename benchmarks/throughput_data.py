"""The throughput benchmark's data set: ten models' predictions and outcomes on Kafka.

The data set is ``events`` predictions and exactly one outcome for each, so
``2 * events`` messages, on two topics of ``partitions`` partitions keyed by
event id (co-partitioned: one producer, one partitioner). It comes from
:class:`streamer.generate.SyntheticStream`, so the messages follow the
README's contracts: six binary and four multiclass models, 100 predictions
per simulated second, an outcome after a lognormal delay (median 5 s) capped
at 300 s, so outcomes are shuffled against the predictions within that
bounded delay. The same seed gives the same messages; only the start time
moves with the run, placed so the stream ends ten minutes before it (the
broker rejects timestamps more than an hour ahead, and driftstream counts
outcomes stamped in its future as invalid).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import confluent_kafka

from streamer.generate import (
    GeneratedMessage,
    GeneratorConfig,
    ModelSpec,
    SyntheticStream,
)
from streamer.localkafka import create_topics

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(name="fraud", version="7", positive_rate=0.05, separation=1.5),
    ModelSpec(name="churn", version="3", positive_rate=0.3, separation=1.0),
    ModelSpec(
        name="click", version="12", positive_rate=0.1, separation=0.8, traffic_share=2
    ),
    ModelSpec(name="spam", version="4", positive_rate=0.2, separation=2.0),
    ModelSpec(name="credit", version="2", positive_rate=0.15, separation=1.2),
    ModelSpec(name="upsell", version="1", positive_rate=0.25, separation=0.9),
    ModelSpec(
        name="intent",
        version="2",
        classes=("billing", "cancel", "other", "upgrade"),
        separation=2.0,
        traffic_share=2,
    ),
    ModelSpec(
        name="topic",
        version="5",
        classes=("art", "food", "news", "sport", "tech", "travel", "money", "home"),
        separation=1.5,
    ),
    ModelSpec(
        name="sentiment",
        version="9",
        classes=("negative", "neutral", "positive"),
        separation=1.2,
    ),
    ModelSpec(
        name="language",
        version="1",
        classes=("de", "en", "es", "fr", "it"),
        separation=2.5,
    ),
)

RATE_PER_S = 100.0
LABEL_DELAY_MEDIAN_S = 5.0
LABEL_DELAY_MAX_S = 300.0
END_BEFORE_NOW_MS = 600_000

_PRODUCER_SETTINGS: dict[str, Any] = {
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
    "enable.idempotence": True,
}


@dataclass(frozen=True)
class DataSet:
    """Where the data set lives and what a consumer of it must see."""

    bootstrap_servers: str
    predictions_topic: str
    outcomes_topic: str
    partitions: int
    events: int
    seed: int

    @property
    def messages(self) -> int:
        return 2 * self.events

    @property
    def labelled_events(self) -> int:
        return self.events


def generator_config(
    *, seed: int, missing_label_fraction: float = 0.0
) -> GeneratorConfig:
    """The stream of the ten models; endless, cut to size by the caller."""
    return GeneratorConfig(
        models=MODELS,
        rate_per_s=RATE_PER_S,
        label_delay_distribution="lognormal",
        label_delay_median_s=LABEL_DELAY_MEDIAN_S,
        label_delay_sigma=1.5,
        label_delay_max_s=LABEL_DELAY_MAX_S,
        missing_label_fraction=missing_label_fraction,
        seed=seed,
    )


def start_ms_for(events: int, *, now_ms: int | None = None) -> int:
    """A start time, on a whole hour, that ends the stream before ``now_ms``."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    span_ms = int(events / RATE_PER_S * 1000 * 1.05 + LABEL_DELAY_MAX_S * 1000)
    start_ms = now_ms - END_BEFORE_NOW_MS - span_ms
    return start_ms - start_ms % 3_600_000


def prepare(dataset: DataSet) -> dict[str, float]:
    """Create the topics and produce the data set; what it took, in seconds."""
    started_s = time.perf_counter()
    create_topics(
        dataset.bootstrap_servers,
        {
            dataset.predictions_topic: dataset.partitions,
            dataset.outcomes_topic: dataset.partitions,
        },
    )
    sent = _produce(dataset)
    _check_on_broker(dataset)
    return {"produce_s": time.perf_counter() - started_s, "messages": sent}


def _produce(dataset: DataSet) -> int:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": dataset.bootstrap_servers, **_PRODUCER_SETTINGS}
    )
    topics = {
        "predictions": dataset.predictions_topic,
        "outcomes": dataset.outcomes_topic,
    }
    sent = 0
    for message in data_set_messages(dataset.events, seed=dataset.seed):
        _send(producer, topics[message.topic_kind], message)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)

    unflushed = producer.flush(60.0)
    if unflushed:
        raise RuntimeError(f"{unflushed} messages of the data set were not delivered")
    return sent


def data_set_messages(events: int, *, seed: int) -> Iterator[GeneratedMessage]:
    """The data set's messages in the stream's order: ``events`` predictions
    and the outcome of each. Predictions past the first ``events`` are dropped
    with their outcomes; it ends once every kept prediction has had its
    outcome."""
    stream = SyntheticStream(generator_config(seed=seed), start_ms=start_ms_for(events))
    predicted = 0
    awaiting: set[bytes] = set()
    for message in stream:
        if message.topic_kind == "predictions":
            if predicted == events:
                if not awaiting:
                    return
                continue
            predicted += 1
            awaiting.add(message.key)
        elif message.key in awaiting:
            awaiting.remove(message.key)
        else:
            continue
        yield message


def _send(producer: confluent_kafka.Producer, topic: str, message: Any) -> None:
    while True:
        try:
            producer.produce(
                topic,
                value=message.value,
                key=message.key,
                timestamp=message.timestamp_ms,
            )
            return
        except BufferError:
            producer.poll(0.05)


def _check_on_broker(dataset: DataSet) -> None:
    """Each topic holds exactly ``events`` messages: none lost, none doubled."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": dataset.bootstrap_servers, "group.id": "bench-check"}
    )
    try:
        for topic in (dataset.predictions_topic, dataset.outcomes_topic):
            held = 0
            for partition in range(dataset.partitions):
                low, high = consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(topic, partition), timeout=10.0
                )
                held += high - low
            if held != dataset.events:
                raise RuntimeError(
                    f"topic {topic!r} holds {held} messages, expected "
                    f"{dataset.events}: the data set is not what the benchmark "
                    "counts on"
                )
    finally:
        consumer.close()
