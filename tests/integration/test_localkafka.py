"""The local broker: messages round-trip, restarts keep data, failures explain.

The first tests need the real broker; the last ones (fetching the jars,
refusing a taken port) need neither Java nor the network.
"""

from __future__ import annotations

import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from streamer.errors import KafkaSetupError
from streamer.localkafka import (
    BrokerStartError,
    KafkaJarsError,
    LocalKafka,
    create_topics,
    ensure_kafka_jars,
)

Record = tuple[int, bytes, bytes]
"""(partition, key, value) of one message."""


def _records(topic_tag: str, *, partitions: int, per_partition: int) -> list[Record]:
    return [
        (partition, f"k-{partition}-{index}".encode(), f"{topic_tag} {index}".encode())
        for partition in range(partitions)
        for index in range(per_partition)
    ]


def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error)

    for partition, key, value in records:
        producer.produce(
            topic, key=key, value=value, partition=partition, on_delivery=on_delivery
        )
    assert producer.flush(30) == 0, "messages still in flight after 30 s"
    assert failures == []


def _consume(bootstrap: str, topic: str, count: int) -> list[Record]:
    """Read ``count`` messages from the start of ``topic``, then check for more."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + 30.0
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(_records_of(consumer.consume(count, timeout=0.5)))
        records.extend(_records_of(consumer.consume(count, timeout=0.5)))
    finally:
        consumer.close()
    return records


def _records_of(messages: list[Message]) -> Iterator[Record]:
    for message in messages:
        assert message.error() is None, message.error()
        partition, key, value = message.partition(), message.key(), message.value()
        assert partition is not None and key is not None and value is not None
        yield partition, key, value


def _by_partition(records: list[Record]) -> dict[int, list[Record]]:
    """Kafka orders messages within a partition only; compare them that way."""
    grouped: dict[int, list[Record]] = {}
    for record in records:
        grouped.setdefault(record[0], []).append(record)
    return grouped


# --------------------------------------------------------------------------
# With a broker


@pytest.mark.integration
def test_messages_round_trip_through_four_partitions(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    create_topics(kafka_bootstrap, {topic: 4})
    sent = _records("round-trip", partitions=4, per_partition=5)

    _produce(kafka_bootstrap, topic, sent)
    received = _consume(kafka_bootstrap, topic, len(sent))

    assert len(received) == len(sent)
    assert _by_partition(received) == _by_partition(sent)


@pytest.mark.integration
@pytest.mark.parametrize("kill", [False, True], ids=["clean-stop", "sigkill"])
def test_restart_keeps_data_and_address(kill: bool) -> None:
    with LocalKafka() as kafka:
        bootstrap = kafka.bootstrap_servers
        topic = "kept"
        create_topics(bootstrap, {topic: 2})
        before = _records("before", partitions=2, per_partition=3)
        _produce(bootstrap, topic, before)

        kafka.restart(kill=kill)

        assert kafka.bootstrap_servers == bootstrap
        after = _records("after", partitions=2, per_partition=2)
        _produce(bootstrap, topic, after)
        received = _consume(bootstrap, topic, len(before) + len(after))
        assert _by_partition(received) == _by_partition(before + after)


@pytest.mark.integration
def test_second_broker_gets_its_own_port_and_cleans_up(kafka_bootstrap: str) -> None:
    with LocalKafka() as kafka:
        assert kafka.bootstrap_servers != kafka_bootstrap
        create_topics(kafka.bootstrap_servers, {"only-here": 1})
        data_dir = kafka.data_dir
        assert (data_dir / "broker.log").is_file()

    assert not kafka.running
    assert not data_dir.exists()


@pytest.mark.integration
def test_create_topics_names_an_existing_topic(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.twice"
    create_topics(kafka_bootstrap, {topic: 1})

    with pytest.raises(KafkaSetupError, match=rf"could not create topic '{topic}'"):
        create_topics(kafka_bootstrap, {topic: 1})


@pytest.mark.integration
def test_broker_that_dies_fails_start_at_once_with_its_log() -> None:
    kafka = LocalKafka(heap_mb=1)  # too small a heap: the JVM refuses to start
    started = time.monotonic()

    with pytest.raises(BrokerStartError, match=r"exited with code 1") as raised:
        kafka.start()

    assert time.monotonic() - started < 20
    assert "Too small" in str(raised.value)
    assert not kafka.running


# --------------------------------------------------------------------------
# Without a broker


def _fake_mvn(tmp_path: Path, script: str) -> Path:
    mvn = tmp_path / "mvn"
    mvn.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    return mvn


def test_fetch_failure_says_maven_central_is_out_of_reach(tmp_path: Path) -> None:
    mvn = _fake_mvn(
        tmp_path, "echo 'Could not transfer artifact: Unknown host' >&2\nexit 1\n"
    )

    with pytest.raises(KafkaJarsError, match="Maven Central could not be reached"):
        ensure_kafka_jars(cache_dir=tmp_path / "cache", mvn=str(mvn))
    with pytest.raises(KafkaJarsError, match="Unknown host"):
        ensure_kafka_jars(cache_dir=tmp_path / "cache", mvn=str(mvn))


def test_fetch_without_maven_says_to_install_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mvn"

    with pytest.raises(KafkaJarsError, match=r"is not on PATH. Install Maven"):
        ensure_kafka_jars(cache_dir=tmp_path / "cache", mvn=str(missing))


def test_half_done_fetch_is_redone_and_a_complete_one_kept(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    # Copies two jars into the -DoutputDirectory=... argument, like Maven.
    mvn = _fake_mvn(
        tmp_path,
        f'echo call >> "{calls}"\n'
        'for arg; do case "$arg" in -DoutputDirectory=*) out="${arg#*=}";; esac; done\n'
        'mkdir -p "$out" && touch "$out/a.jar" "$out/b.jar"\n',
    )
    cache_dir = tmp_path / "cache"
    (cache_dir / "libs").mkdir(parents=True)
    (cache_dir / "libs" / "a.jar").touch()  # an interrupted fetch: no marker

    libs_dir = ensure_kafka_jars(cache_dir=cache_dir, mvn=str(mvn))
    assert ensure_kafka_jars(cache_dir=cache_dir, mvn=str(mvn)) == libs_dir

    assert sorted(path.name for path in libs_dir.glob("*.jar")) == ["a.jar", "b.jar"]
    assert calls.read_text().count("call") == 1


def test_taken_port_is_refused_before_java_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kafka = LocalKafka(port=port, libs_dir=tmp_path)

        with pytest.raises(BrokerStartError, match=rf"port {port} on 127.0.0.1"):
            kafka.start()
