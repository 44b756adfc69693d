"""Resilience against the real broker: hostile input, bursts, restarts, rebalances.

Each test states what the README promises and checks only that: nothing
crashes, every bad message is counted once under a sensible reason, valid
events are scored exactly once by the process that scores them, and the HTTP
endpoints keep telling the truth while Kafka misbehaves.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from confluent_kafka import Producer

from streamer.config import Config
from streamer.localkafka import LocalKafka, create_topics
from streamer.service import Service
from tests.scrape import Scrape, parse, scrape, wait_for

pytestmark = pytest.mark.integration

Item = tuple[bytes | None, bytes | None]
"""(key, value) of one message for the default partitioner."""


def _topics(bootstrap: str, partitions: int) -> tuple[str, str]:
    """A fresh co-partitioned pair: (predictions topic, outcomes topic)."""
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"pred-{suffix}", f"out-{suffix}"
    create_topics(
        bootstrap, {predictions_topic: partitions, outcomes_topic: partitions}
    )
    return predictions_topic, outcomes_topic


def _config(bootstrap: str, predictions: str, outcomes: str, group: str = "") -> Config:
    return Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": group or f"g-{uuid.uuid4().hex[:8]}",
                "predictions_topic": predictions,
                "outcomes_topic": outcomes,
                "session_timeout_ms": 6000,
                "statistics_interval_ms": 500,
            },
            "metrics": {"host": "127.0.0.1", "port": 0},
        }
    )


def _produce(
    bootstrap: str,
    topic: str,
    items: Sequence[Item],
    *,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "message.max.bytes": 1_048_576,
        }
    )
    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    if headers is not None:
        extra["headers"] = headers
    for key, value in items:
        producer.produce(topic, key=key, value=value, **extra)
        producer.poll(0)
    assert producer.flush(30) == 0


def _prediction(event_id: str, ts: int, **fields: object) -> Item:
    body = {"event_id": event_id, "model": "fraud", "timestamp": ts, **fields}
    body.setdefault("probability", 0.8)
    return event_id.encode(), json.dumps(body).encode()


def _outcome(event_id: str, ts: int, label: object = 1) -> Item:
    body = {"event_id": event_id, "label": label, "timestamp": ts}
    return event_id.encode(), json.dumps(body).encode()


def _produce_pairs(
    bootstrap: str, topics: tuple[str, str], ids: Sequence[str], ts: int
) -> None:
    _produce(bootstrap, topics[0], [_prediction(i, ts - 1_000) for i in ids])
    _produce(bootstrap, topics[1], [_outcome(i, ts) for i in ids])


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services a test started; stopped (re-raising their failure) at the end."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def _start(services: list[Service], config: Config) -> Service:
    service = Service(config)
    service.start()
    services.append(service)
    return service


def _alive(service: Service) -> bool:
    thread = service._thread
    return thread is not None and thread.is_alive() and service.failure is None


def _spy_on_scoring(service: Service) -> list[str]:
    """The event ids this process scores, in order (one entry per scoring).

    Only the Python per-message path scores event by event (``_collect``), so
    the spied process takes it for every message; the compiled path, which
    gathers columns without ids, is checked against this one message for
    message in ``tests/unit/test_native_path.py``. Partition handover,
    checkpoints and offsets, what this module tests, are the same code either
    way.
    """
    scored: list[str] = []
    pipeline = service.pipeline
    pipeline.native = False
    original: Callable[..., Any] = pipeline._collect  # type: ignore[attr-defined]

    def collect(prediction: Any, *args: Any, **kwargs: Any) -> Any:
        scored.append(prediction.event_id)
        return original(prediction, *args, **kwargs)

    pipeline._collect = collect  # type: ignore[attr-defined,method-assign]
    return scored


def _invalid(page: Scrape) -> dict[tuple[str, str], float]:
    return {
        (labels["topic"], labels["reason"]): value
        for labels, value in page.samples.get("driftstream_invalid_messages_total", [])
    }


# -- hostile messages -----------------------------------------------------


def test_hostile_messages_over_kafka_are_counted_and_valid_ones_scored_once(
    kafka_bootstrap: str, services: list[Service]
) -> None:
    topics = _topics(kafka_bootstrap, 2)
    predictions_topic, outcomes_topic = topics
    ts = _now_ms()
    classes = {f"c{index:03d}": 0.001 for index in range(1000)}
    offset_zone = timezone(-timedelta(hours=9, minutes=30))
    iso_with_offset = datetime.fromtimestamp((ts - 500) / 1000, offset_zone)
    bad_key_prediction = {"event_id": "bad-key", "model": "fraud",
                          "probability": 0.5, "timestamp": ts}  # fmt: skip
    valid_predictions = [
        _prediction("big", ts, padding="p" * 1_000_000),  # a 1 MB message
        _prediction("é-ü-😀", ts, probability=1e-320),
        _prediction("x" * 20_000, ts, probability=1 - 1e-17),
        _prediction("intent-1", ts, model="intent", probabilities=classes),
        _prediction("intent-2", ts, model="intent", probabilities=classes),
        (b"\xff\xfe", json.dumps(bad_key_prediction).encode()),
        _prediction("offset", ts, timestamp=iso_with_offset.isoformat()),
    ]
    valid_outcomes = [
        _outcome("big", ts, 0),
        _outcome("é-ü-😀", ts, 1),
        _outcome("x" * 20_000, ts, "FALSE"),
        _outcome("intent-1", ts, "c500"),
        _outcome("intent-2", ts, 999),  # not a class: c000..c999 are
        (b"\xff\xfe", _outcome("bad-key", ts, True)[1]),
        _outcome("offset", ts, "1"),
    ]
    invalid_predictions: list[tuple[Item, str]] = [
        ((b"k1", b'{"event_id": "n", "model": "m", "x": ' + b"[" * 2000
          + b"]" * 2000 + b"}"), "invalid_json"),
        ((b"k2", b'"' + b"s" * 1_000_000 + b'"'), "not_an_object"),
        ((b"\xc3\x28", b'{"model": "fraud", "probability": 0.5}'), "not_utf8"),
        ((b"k4", b"\xc3\x28{}"), "not_utf8"),
        (_prediction("s", ts, probability="0.5"), "bad_probability"),
        (_prediction("b", ts, probability=True), "bad_probability"),
        (_prediction("t", ts, timestamp="2026-13-01T00:00:00Z"), "bad_timestamp"),
        ((b"k8", None), "tombstone"),
    ]  # fmt: skip
    invalid_outcomes: list[tuple[Item, str]] = [
        (_outcome("o1", ts, None), "missing_label"),
        (_outcome("o2", ts, 0.0), "bad_label"),
        (_outcome("o3", ts, [1]), "bad_label"),
        (_outcome("o4", ts, {"v": 1}), "bad_label"),
    ]
    headers = [("trace-id", b"\x00\xff"), ("trace-id", b"dup"), ("empty", b"")]
    _produce(kafka_bootstrap, predictions_topic, valid_predictions, headers=headers)
    _produce(kafka_bootstrap, predictions_topic, [i for i, _ in invalid_predictions])
    _produce(kafka_bootstrap, outcomes_topic, valid_outcomes, headers=headers)
    _produce(kafka_bootstrap, outcomes_topic, [i for i, _ in invalid_outcomes])
    # A prediction and an outcome of one id, on partitions that never meet.
    _produce(
        kafka_bootstrap, predictions_topic, [_prediction("orphan", ts)], partition=0
    )
    _produce(kafka_bootstrap, outcomes_topic, [_outcome("orphan", ts)], partition=1)

    service = _start(services, _config(kafka_bootstrap, *topics))
    expected = Counter(
        [(predictions_topic, r) for _, r in invalid_predictions]
        + [(outcomes_topic, r) for _, r in invalid_outcomes]
        + [(outcomes_topic, "unknown_class")]
    )
    wait_for(
        service.metrics_url,
        lambda s: (
            _invalid(s) == expected
            and s.total("driftstream_joined_total") >= 6
            and s.total("driftstream_pending_entries") >= 2
        ),
        timeout_s=45,
    )
    time.sleep(1.0)
    page = scrape(service.metrics_url)
    assert _alive(service)
    assert _invalid(page) == expected
    assert page.value("driftstream_joined_total", model="fraud") == 5
    assert page.value("driftstream_joined_total", model="intent") == 1
    assert page.value("driftstream_pending_entries", side="prediction") == 1
    assert page.value("driftstream_pending_entries", side="outcome") == 1
    assert page.total("driftstream_duplicates_total") == 0


# -- process level --------------------------------------------------------


def test_service_survives_a_burst_of_50000_invalid_messages_and_logs_sparingly(
    kafka_bootstrap: str, services: list[Service], caplog: pytest.LogCaptureFixture
) -> None:
    topics = _topics(kafka_bootstrap, 2)
    predictions_topic, outcomes_topic = topics
    garbage: list[tuple[str, Item, str]] = [
        (predictions_topic, (b"k", b"{oops"), "invalid_json"),
        (predictions_topic, (b"k", b"\xff\xff"), "not_utf8"),
        (predictions_topic, (b"k", b"[]"), "not_an_object"),
        (predictions_topic, (b"k", b'{"event_id": "a", "model": "m"}'),
         "missing_probability"),
        (outcomes_topic, (b"k", b'{"event_id": "a"}'), "missing_label"),
    ]  # fmt: skip
    per_kind = 10_000
    expected = Counter({(topic, reason): per_kind for topic, _, reason in garbage})
    for topic, item, _ in garbage:
        _produce(kafka_bootstrap, topic, [item] * per_kind)
    _produce_pairs(kafka_bootstrap, topics, [f"v-{i}" for i in range(20)], _now_ms())

    caplog.set_level(logging.WARNING, logger="streamer")
    started = time.monotonic()
    service = _start(services, _config(kafka_bootstrap, *topics))
    page = wait_for(
        service.metrics_url,
        lambda s: (
            s.total("driftstream_invalid_messages_total") >= 50_000
            and s.total("driftstream_joined_total") >= 20
        ),
        timeout_s=60,
    )
    elapsed_s = time.monotonic() - started
    assert _alive(service)
    assert _invalid(page) == expected
    assert page.value("driftstream_joined_total", model="fraud") == 20

    logged = [r for r in caplog.records if "invalid message" in r.getMessage()]
    allowed = len(garbage) * (1 + int(elapsed_s // 10) + 1)
    assert 1 <= len(logged) <= allowed, [r.getMessage() for r in logged]
    assert all("offset=" in r.getMessage() for r in logged)


def test_a_restart_on_the_same_group_resumes_without_counting_twice(
    kafka_bootstrap: str, services: list[Service]
) -> None:
    """The new process counts what came after the old one, windows hold both."""
    topics = _topics(kafka_bootstrap, 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    _produce_pairs(kafka_bootstrap, topics, [f"a-{i}" for i in range(100)], _now_ms())
    _produce(kafka_bootstrap, topics[0], [(b"k", b"{bad")] * 5)
    first = Service(_config(kafka_bootstrap, *topics, group=group))
    first.start()
    try:
        wait_for(
            first.metrics_url,
            lambda s: (
                s.total("driftstream_joined_total") == 100
                and s.total("driftstream_invalid_messages_total") == 5
            ),
        )
    finally:
        first.stop()

    _produce_pairs(kafka_bootstrap, topics, [f"b-{i}" for i in range(50)], _now_ms())
    _produce(kafka_bootstrap, topics[1], [(b"k", b"{bad")] * 3)
    second = _start(services, _config(kafka_bootstrap, *topics, group=group))
    wait_for(
        second.metrics_url,
        lambda s: (
            s.total("driftstream_joined_total") >= 50
            and s.total("driftstream_invalid_messages_total") >= 3
        ),
    )
    time.sleep(2.0)
    page = scrape(second.metrics_url)
    assert _alive(second)
    assert _counts(page) == {
        "joined": 50,
        "predictions": 50,
        "outcomes": 50,
        "duplicates": 0,
        "invalid": {(topics[1], "invalid_json"): 3},
    }
    # Windows are checkpointed: the new process reports all 150 events.
    assert page.value("driftstream_window_events", window="24h") == 150


@pytest.fixture
def own_kafka() -> Iterator[LocalKafka]:
    """A broker of this test's own, free to restart."""
    with LocalKafka() as kafka:
        yield kafka


def test_broker_restart_mid_stream_keeps_serving_and_counts_once(
    own_kafka: LocalKafka, services: list[Service]
) -> None:
    bootstrap = own_kafka.bootstrap_servers
    topics = _topics(bootstrap, 2)
    _produce_pairs(bootstrap, topics, [f"a-{i}" for i in range(100)], _now_ms())
    _produce(bootstrap, topics[0], [(b"k", b"{bad")] * 10)
    service = _start(services, _config(bootstrap, *topics))
    url = service.metrics_url
    wait_for(
        url,
        lambda s: (
            s.total("driftstream_joined_total") == 100
            and s.total("driftstream_invalid_messages_total") == 10
        ),
    )

    # SIGKILL: a crash, and an outage longer than the 6 s session timeout (the
    # restarted broker waits for its old registration to expire), so the
    # consumer loses its partitions and rejoins, as it would in production.
    restart = threading.Thread(target=own_kafka.restart, kwargs={"kill": True})
    restart.start()
    seen: list[tuple[int, int, str]] = []
    while restart.is_alive():
        metrics_status, text = _get(url + "/metrics")
        parse(text)  # still a well-formed page
        health_status, _ = _get(url + "/healthz")
        ready_status, reason = _get(url + "/readyz")
        seen.append((metrics_status, health_status, f"{ready_status} {reason}"))
        time.sleep(0.5)
    restart.join()
    assert all(m == 200 and h == 200 for m, h, _ in seen), seen
    assert any(r.startswith("503") and "unreachable" in r for *_, r in seen), seen
    assert _alive(service)

    _produce_pairs(bootstrap, topics, [f"b-{i}" for i in range(100)], _now_ms())
    _produce(bootstrap, topics[1], [(b"k", b"{bad")] * 5)
    wait_for(
        url,
        lambda s: (
            s.total("driftstream_joined_total") >= 200
            and s.total("driftstream_invalid_messages_total") >= 15
        ),
    )
    time.sleep(5.0)  # room for a late rejoin and whatever it replays
    page = scrape(url)
    assert _alive(service)
    ready = _get(url + "/readyz")
    deadline = time.monotonic() + 15
    while ready[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        ready = _get(url + "/readyz")
    # One process, one broker restart: nothing it already counted counts again,
    # and once it has caught up it says it is ready again.
    assert {"counts": _counts(page), "readyz": ready} == {
        "counts": {
            "joined": 200,
            "predictions": 200,
            "outcomes": 200,
            "duplicates": 0,
            "invalid": {
                (topics[0], "invalid_json"): 10,
                (topics[1], "invalid_json"): 5,
            },
        },
        "readyz": (200, "ready\n"),
    }


def test_a_broker_outage_does_not_flood_the_log(
    own_kafka: LocalKafka,
    services: list[Service],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """While the broker is down the log says so a few times, not 20 times a second.

    Counted: records of the ``streamer`` loggers (the broker's own start and
    stop lines aside) and librdkafka's lines on stderr (``%3|...|FAIL|...``).
    """
    bootstrap = own_kafka.bootstrap_servers
    topics = _topics(bootstrap, 2)
    _produce_pairs(bootstrap, topics, [f"a-{i}" for i in range(10)], _now_ms())
    service = _start(services, _config(bootstrap, *topics))
    wait_for(service.metrics_url, lambda s: s.total("driftstream_joined_total") == 10)
    caplog.set_level(logging.INFO)
    caplog.clear()
    capfd.readouterr()

    started = time.monotonic()
    own_kafka.restart(kill=True)
    outage_s = time.monotonic() - started
    time.sleep(1.0)
    ours = [
        f"{r.name} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("streamer") and r.name != "streamer.localkafka"
    ]
    librdkafka = [
        line for line in capfd.readouterr().err.splitlines() if line.startswith("%")
    ]
    assert _alive(service)
    lines = ours + librdkafka
    assert len(lines) <= 25, (
        f"{len(lines)} log lines in a {outage_s:.0f} s outage ({len(ours)} through "
        f"logging, {len(librdkafka)} from librdkafka on stderr):\n"
        + "\n".join(line[:160] for line in lines[:40])
    )


def _counts(page: Scrape) -> dict[str, object]:
    return {
        "joined": page.total("driftstream_joined_total"),
        "predictions": page.total("driftstream_predictions_total"),
        "outcomes": page.total("driftstream_outcomes_total"),
        "duplicates": page.total("driftstream_duplicates_total"),
        "invalid": _invalid(page),
    }


def test_a_second_member_joining_and_leaving_scores_each_event_once(
    kafka_bootstrap: str, services: list[Service]
) -> None:
    """Events keep flowing while a second member joins, takes half, and leaves."""
    topics = _topics(kafka_bootstrap, 4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _start(services, _config(kafka_bootstrap, *topics, group=group))
    scored_first = _spy_on_scoring(first)
    produced: list[str] = []
    stop_producing = threading.Event()

    def produce_continuously() -> None:
        while not stop_producing.is_set():
            ids = [f"r-{len(produced) + i}" for i in range(20)]
            _produce_pairs(kafka_bootstrap, topics, ids, _now_ms())
            produced.extend(ids)
            time.sleep(0.05)

    producer = threading.Thread(target=produce_continuously)
    producer.start()
    second = Service(_config(kafka_bootstrap, *topics, group=group))
    scored_second = _spy_on_scoring(second)
    try:
        wait_for(first.metrics_url, lambda s: s.total("driftstream_joined_total") > 0)
        second.start()
        try:
            _wait(lambda: (len(first.health.assigned), len(second.health.assigned))
                  == (4, 4))  # fmt: skip
            time.sleep(3.0)
            assert scored_second, "the second member scored nothing"
        finally:
            second.stop()
        _wait(lambda: len(first.health.assigned) == 8)
        time.sleep(2.0)
    finally:
        stop_producing.set()
        producer.join()

    _wait(lambda: len(set(scored_first) | set(scored_second)) >= len(produced))
    time.sleep(2.0)
    assert _alive(first)
    for scored in (scored_first, scored_second):
        twice = [i for i, n in Counter(scored).items() if n > 1]
        assert twice == [], f"scored twice by one process: {twice[:10]}"
    assert set(scored_first) | set(scored_second) == set(produced)
    # The partitions moved with their checkpoints: no replay across members.
    assert len(scored_first) + len(scored_second) == len(produced)


def _wait(condition: Callable[[], bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


# -- readiness and start-up errors ----------------------------------------


def test_readyz_turns_ready_when_some_partitions_are_empty(
    kafka_bootstrap: str, services: list[Service]
) -> None:
    """README: ready once assigned, reachable and every partition lags <= max.

    An empty partition lags by 0. Only partition 0 of both topics gets data
    here, as with a quiet key space; partition 1 never has a committed offset,
    which must not read as "lag not known" forever (it did until f57ee2e, and
    partition 0 did too until its first checkpoint, 30 s in).
    """
    topics = _topics(kafka_bootstrap, 2)
    ts = _now_ms()
    _produce(kafka_bootstrap, topics[0], [_prediction(f"e{i}", ts) for i in range(10)],
             partition=0)  # fmt: skip
    _produce(kafka_bootstrap, topics[1], [_outcome(f"e{i}", ts) for i in range(10)],
             partition=0)  # fmt: skip
    service = _start(services, _config(kafka_bootstrap, *topics))
    url = service.metrics_url
    status, reason = _get(url + "/readyz")
    assert status == 503 and reason.startswith("not ready"), reason
    assert _get(url + "/healthz")[0] == 200

    wait_for(url, lambda s: s.total("driftstream_joined_total") == 10)
    deadline = time.monotonic() + 20
    while (current := _get(url + "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, f"/readyz still says {current}"
        time.sleep(0.5)
    assert current == (200, "ready\n")
    assert _get(url + "/healthz")[0] == 200


@pytest.mark.parametrize("layout", ["missing", "mismatch"])
def test_bad_topic_layout_exits_2_naming_topics_and_counts(
    kafka_bootstrap: str, layout: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"pred-{suffix}", f"out-{suffix}"
    if layout == "missing":
        create_topics(kafka_bootstrap, {predictions_topic: 3})
        wanted = [f"topic '{outcomes_topic}' does not exist"]
    else:
        create_topics(kafka_bootstrap, {predictions_topic: 4, outcomes_topic: 3})
        wanted = [
            f"topic '{predictions_topic}' has 4 partitions",
            f"topic '{outcomes_topic}' has 3",
        ]
    env = {
        **os.environ,
        "DRIFTSTREAM__KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTSTREAM__KAFKA__GROUP_ID": f"g-{suffix}",
        "DRIFTSTREAM__KAFKA__PREDICTIONS_TOPIC": predictions_topic,
        "DRIFTSTREAM__KAFKA__OUTCOMES_TOPIC": outcomes_topic,
        "DRIFTSTREAM__METRICS__HOST": "127.0.0.1",
        "DRIFTSTREAM__METRICS__PORT": "0",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert time.monotonic() - started < 30
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("driftstream: "), done.stderr[-2000:]
    for text in wanted:
        assert text in last_line, last_line
    assert "Traceback" not in done.stderr
