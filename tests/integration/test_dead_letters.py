"""The dead-letter topic: every invalid message copied with its reason."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer

from streamer.config import Config
from streamer.localkafka import create_topics
from streamer.service import Service
from tests.scrape import wait_for

pytestmark = pytest.mark.integration


def _config(bootstrap: str, topics: tuple[str, str], dead_letters: str) -> Config:
    return Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"dl-{uuid.uuid4().hex[:8]}",
                "predictions_topic": topics[0],
                "outcomes_topic": topics[1],
                "session_timeout_ms": 6000,
                "dead_letter_topic": dead_letters,
            },
            "metrics": {"host": "127.0.0.1", "port": 0},
            "state": {"store": "none"},
        }
    )


def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, timestamp_ms in items:
        producer.produce(topic, key=key, value=value, timestamp=timestamp_ms)
    assert producer.flush(30) == 0


def _read_all(bootstrap: str, topic: str, count: int) -> list[object]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    found: list[object] = []
    for _ in range(60):
        found += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        if len(found) >= count:
            break
    consumer.close()
    return found


def test_invalid_messages_are_copied_with_headers(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = (f"pred-{suffix}", f"out-{suffix}")
    dead = f"dead-{suffix}"
    create_topics(kafka_bootstrap, {topics[0]: 2, topics[1]: 2, dead: 1})
    invalid = [
        (b"k1", b"{broken", 1_700_000_000_001),
        (
            b"k2",
            b'{"event_id": "a", "model": "m", "probability": 7}',
            1_700_000_000_002,
        ),
    ]
    _produce(kafka_bootstrap, topics[0], invalid)
    _produce(
        kafka_bootstrap, topics[1], [(b"k3", b'{"event_id": "b"}', 1_700_000_000_003)]
    )
    service = Service(_config(kafka_bootstrap, topics, dead))
    service.start()
    try:
        wait_for(
            service.metrics_url,
            lambda p: p.total("driftstream_dead_letters_total") == 3,
        )
    finally:
        service.stop()

    copies = _read_all(kafka_bootstrap, dead, 3)
    seen = {}
    for message in copies:
        headers = {name: value.decode() for name, value in message.headers()}
        seen[message.key()] = (message.value(), message.timestamp()[1], headers)
    assert seen[b"k1"][0] == b"{broken"
    assert seen[b"k1"][1] == 1_700_000_000_001
    assert seen[b"k1"][2]["driftstream.reason"] == "invalid_json"
    assert seen[b"k1"][2]["driftstream.source.topic"] == topics[0]
    assert seen[b"k2"][2]["driftstream.reason"] == "bad_probability"
    assert seen[b"k3"][2]["driftstream.reason"] == "missing_label"
    assert seen[b"k3"][2]["driftstream.source.topic"] == topics[1]
    for _, _, headers in seen.values():
        assert int(headers["driftstream.source.offset"]) >= 0
        assert int(headers["driftstream.source.partition"]) in (0, 1)


def test_an_unreachable_dead_letter_topic_is_counted_not_fatal(
    kafka_bootstrap: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = (f"pred-{suffix}", f"out-{suffix}")
    create_topics(kafka_bootstrap, {topics[0]: 1, topics[1]: 1})
    _produce(kafka_bootstrap, topics[0], [(b"k", b"nope", 1_700_000_000_000)])
    prediction = b'{"event_id": "e", "model": "m", "probability": 0.5}'
    _produce(kafka_bootstrap, topics[0], [(b"e", prediction, 1_700_000_000_000)])
    _produce(
        kafka_bootstrap,
        topics[1],
        [(b"e", b'{"event_id": "e", "label": 1}', 1_700_000_000_001)],
    )
    # The broker does not create topics on demand, so this one never exists.
    service = Service(_config(kafka_bootstrap, topics, f"missing-{suffix}"))
    service.start()
    try:
        page = wait_for(
            service.metrics_url,
            lambda p: p.total("driftstream_dead_letter_failures_total") == 1,
            timeout_s=60,
        )
        assert page.total("driftstream_joined_total") == 1
        assert page.total("driftstream_dead_letters_total") == 0
    finally:
        service.stop()
