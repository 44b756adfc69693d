"""The main job against the real broker: topics in, exact numbers on /metrics."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from confluent_kafka import Producer
from sklearn.metrics import log_loss

from streamer.config import Config
from streamer.localkafka import create_topics
from streamer.service import Service
from tests.scrape import Scrape, assert_promtool_accepts, scrape, wait_for

pytestmark = pytest.mark.integration

CLASSES = ["billing", "cancel", "other", "upgrade"]
MODELS = [("fraud", "7", None), ("churn", "3", None), ("intent", "2", CLASSES)]

INVALID_PREDICTIONS: list[tuple[bytes | None, bytes | None, str]] = [
    (b"k-bad-1", b"{not json", "invalid_json"),
    (b"k-bad-2", b"\xff\xfe\x00garbage", "not_utf8"),
    (b"k-bad-3", None, "tombstone"),
    (None, b'{"model": "fraud", "probability": 0.5}', "missing_event_id"),
    (b"k-bad-5", b'{"event_id": "x5", "probability": 0.5}', "missing_model"),
    (b"k-bad-6", b'{"event_id": "x6", "model": "fraud"}', "missing_probability"),
    (b"k-bad-7", b'{"event_id": "x7", "model": "fraud", "probability": NaN}',
     "invalid_json"),
    (b"k-bad-8", b'{"event_id": "x8", "model": "fraud", "probability": 1.5}',
     "bad_probability"),
    (b"k-bad-9", b'{"event_id": "x9", "model": "fraud", "probability": "0.3"}',
     "bad_probability"),
    (b"k-bad-10",
     b'{"event_id": "x10", "model": "intent", "probabilities": {"a": 0.5, "b": 0.4}}',
     "probabilities_not_normalised"),
    (b"k-bad-11", b'[1, 2, 3]', "not_an_object"),
    (b"k-bad-12",
     b'{"event_id": "x12", "model": "fraud", "probability": 0.2, "timestamp": "soon"}',
     "bad_timestamp"),
]  # fmt: skip

INVALID_OUTCOMES: list[tuple[bytes | None, bytes | None, str]] = [
    (b"k-bad-o1", b"", "invalid_json"),
    (b"k-bad-o2", b'{"event_id": "y2"}', "missing_label"),
    (b"k-bad-o3", b'{"event_id": "y3", "label": [1]}', "bad_label"),
    (b"k-bad-o4", None, "tombstone"),
    (None, b'{"label": 1}', "missing_event_id"),
    (b"k-bad-o6", b"\x80\x81", "not_utf8"),
]  # fmt: skip


@dataclass
class Stream:
    """The test's ground truth: what was produced and what must be scored."""

    predictions: list[dict[str, object]]
    outcomes: list[dict[str, object]]
    bad_labels: dict[str, object]


def _make_stream(seed: int, now_ms: int) -> Stream:
    rng = np.random.default_rng(seed)
    predictions: list[dict[str, object]] = []
    for index in range(1000):
        model, version, classes = MODELS[index % 3]
        ts = now_ms - int(rng.integers(60_000, 1_800_000))
        event: dict[str, object] = {
            "event_id": f"e-{index}",
            "model": model,
            "model_version": version,
            "timestamp": ts,
        }
        if classes is None:
            # Include the extremes: p = 0 and p = 1 must be clipped, not fatal.
            event["probability"] = float(rng.choice([0.0, 1.0, rng.random()]))
        else:
            weights = rng.dirichlet(np.ones(len(classes)))
            event["probabilities"] = dict(zip(classes, weights.tolist(), strict=True))
        predictions.append(event)
    outcomes = []
    for event in predictions[:900]:
        delay = int(rng.integers(0, 50_000))
        classes = MODELS[["fraud", "churn", "intent"].index(str(event["model"]))][2]
        label: object = str(rng.choice(classes)) if classes else int(rng.integers(0, 2))
        outcomes.append(
            {"event_id": event["event_id"], "label": label,
             "timestamp": _iso(int(str(event["timestamp"])) + delay)}
        )  # fmt: skip
    # Two valid-looking outcomes whose labels the model does not know.
    return Stream(predictions, outcomes, {"e-851": "dog", "e-850": 7})


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _produce(
    bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]]
):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in items:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _encoded(
    events: list[dict[str, object]],
) -> list[tuple[bytes | None, bytes | None]]:
    return [(str(e["event_id"]).encode(), json.dumps(e).encode()) for e in events]


@pytest.fixture
def service_factory(kafka_bootstrap: str) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def _config(bootstrap: str, predictions: str, outcomes: str) -> Config:
    return Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"g-{uuid.uuid4().hex[:8]}",
                "predictions_topic": predictions,
                "outcomes_topic": outcomes,
                "session_timeout_ms": 6000,
                "statistics_interval_ms": 500,
            },
            "metrics": {"host": "127.0.0.1", "port": 0},
        }
    )


def test_exact_counts_and_sklearn_log_loss(
    kafka_bootstrap: str, service_factory: list[Service]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"pred-{suffix}", f"out-{suffix}"
    create_topics(kafka_bootstrap, {predictions_topic: 4, outcomes_topic: 4})

    now_ms = int(time.time() * 1000)
    stream = _make_stream(seed=7, now_ms=now_ms)
    rng = np.random.default_rng(11)
    outcomes = [dict(o) for o in stream.outcomes]
    for event_id, label in stream.bad_labels.items():
        next(o for o in outcomes if o["event_id"] == event_id)["label"] = label
    order = rng.permutation(len(outcomes))
    shuffled = [outcomes[i] for i in order]
    early, late = shuffled[:300], shuffled[300:]
    duplicate_predictions = stream.predictions[10:25]
    duplicate_outcomes = [
        dict(o, label=0) for o in shuffled if o["event_id"] not in stream.bad_labels
    ][400:415]

    # Outcomes first for 300 events: the join must hold them until predictions.
    _produce(kafka_bootstrap, outcomes_topic, _encoded(early))
    _produce(
        kafka_bootstrap,
        predictions_topic,
        _encoded(stream.predictions) + [(k, v) for k, v, _ in INVALID_PREDICTIONS],
    )
    _produce(
        kafka_bootstrap,
        outcomes_topic,
        _encoded(late) + [(k, v) for k, v, _ in INVALID_OUTCOMES],
    )
    _produce(
        kafka_bootstrap,
        predictions_topic,
        _encoded(duplicate_predictions),
    )
    _produce(kafka_bootstrap, outcomes_topic, _encoded(duplicate_outcomes))

    service = Service(_config(kafka_bootstrap, predictions_topic, outcomes_topic))
    service.start()
    service_factory.append(service)

    expected_invalid = len(INVALID_PREDICTIONS) + len(INVALID_OUTCOMES) + 2
    expected_duplicates = len(duplicate_predictions) + len(duplicate_outcomes)
    assert expected_invalid == 20
    assert expected_duplicates == 30

    page = wait_for(
        service.metrics_url,
        lambda s: (
            s.total("driftstream_joined_total") == 898
            and s.total("driftstream_invalid_messages_total") == expected_invalid
            and s.total("driftstream_duplicates_total") == expected_duplicates
        ),
    )

    _assert_counts(page, stream, predictions_topic, outcomes_topic)
    _assert_log_loss_matches_sklearn(page, stream)


def _assert_counts(
    page: Scrape, stream: Stream, predictions_topic: str, outcomes_topic: str
) -> None:
    for model, version, _ in MODELS:
        produced = [p for p in stream.predictions if p["model"] == model]
        assert page.value("driftstream_predictions_total", model=model) == len(produced)
        joined = _joined(stream, model)
        assert page.value(
            "driftstream_joined_total", model=model, version=version
        ) == len(joined)
        for window in ("5m", "1h", "24h"):
            events = page.value("driftstream_window_events", model=model, window=window)
            if window != "5m":
                assert events == len(joined)
    assert page.value("driftstream_outcomes_total") == 900
    assert page.value("driftstream_duplicates_total", side="prediction") == 15
    assert page.value("driftstream_duplicates_total", side="outcome") == 15
    assert page.value("driftstream_pending_entries", side="prediction") == 100
    assert page.value("driftstream_pending_entries", side="outcome") == 0

    expected: dict[tuple[str, str], int] = {}
    for topic, table in ((predictions_topic, INVALID_PREDICTIONS),
                         (outcomes_topic, INVALID_OUTCOMES)):  # fmt: skip
        for _, _, reason in table:
            expected[(topic, reason)] = expected.get((topic, reason), 0) + 1
    expected[(outcomes_topic, "unknown_class")] = 1
    expected[(outcomes_topic, "bad_label")] = (
        expected.get((outcomes_topic, "bad_label"), 0) + 1
    )
    seen = {
        (labels["topic"], labels["reason"]): value
        for labels, value in page.samples["driftstream_invalid_messages_total"]
    }
    assert seen == expected
    assert page.value("driftstream_assigned_partitions") == 8


def _joined(stream: Stream, model: str) -> list[tuple[dict[str, object], object]]:
    by_id = {p["event_id"]: p for p in stream.predictions}
    return [
        (by_id[o["event_id"]], o["label"])
        for o in stream.outcomes
        if by_id[o["event_id"]]["model"] == model
        and o["event_id"] not in stream.bad_labels
    ]


def _assert_log_loss_matches_sklearn(page: Scrape, stream: Stream) -> None:
    for model, _, classes in MODELS:
        pairs = _joined(stream, model)
        if classes is None:
            y = [int(str(label)) for _, label in pairs]
            p = [float(str(pred["probability"])) for pred, _ in pairs]
            reference = log_loss(y, p, labels=[0, 1])
        else:
            y = [str(label) for _, label in pairs]
            matrix = [
                [dict(pred["probabilities"])[c] for c in classes]  # type: ignore[call-overload]
                for pred, _ in pairs
            ]
            reference = log_loss(y, matrix, labels=classes)
        for window in ("1h", "24h"):
            ours = page.value("driftstream_window_log_loss", model=model, window=window)
            assert ours == pytest.approx(reference, rel=1e-9, abs=1e-9), (model, window)


def test_metrics_pass_promtool(
    kafka_bootstrap: str, service_factory: list[Service]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"pred-{suffix}", f"out-{suffix}"
    create_topics(kafka_bootstrap, {predictions_topic: 2, outcomes_topic: 2})
    stream = _make_stream(seed=3, now_ms=int(time.time() * 1000))
    _produce(kafka_bootstrap, predictions_topic, _encoded(stream.predictions[:60]))
    _produce(kafka_bootstrap, outcomes_topic, _encoded(stream.outcomes[:60]))
    service = Service(_config(kafka_bootstrap, predictions_topic, outcomes_topic))
    service.start()
    service_factory.append(service)
    page = wait_for(
        service.metrics_url, lambda s: s.total("driftstream_joined_total") == 60
    )
    assert_promtool_accepts(page.text)
    assert scrape(service.metrics_url).total("driftstream_window_events") > 0


def test_partition_count_mismatch_fails_fast(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"pred-{suffix}", f"out-{suffix}"
    create_topics(kafka_bootstrap, {predictions_topic: 4, outcomes_topic: 3})
    service = Service(_config(kafka_bootstrap, predictions_topic, outcomes_topic))
    from streamer.errors import TopicLayoutError

    with pytest.raises(
        TopicLayoutError,
        match=rf"topic '{predictions_topic}' has 4 partitions but "
        rf"topic '{outcomes_topic}' has 3",
    ):
        service.run()


def _ready(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_ready_on_empty_topics_and_a_taken_port(
    kafka_bootstrap: str, service_factory: list[Service]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"pred-{suffix}", f"out-{suffix}"
    create_topics(kafka_bootstrap, {predictions_topic: 3, outcomes_topic: 3})
    config = _config(kafka_bootstrap, predictions_topic, outcomes_topic)
    service = Service(config)
    service.start()
    service_factory.append(service)

    deadline = time.monotonic() + 30
    while _ready(service.metrics_url) != 200:
        assert time.monotonic() < deadline, "never ready on empty partitions"
        time.sleep(0.2)

    from streamer.errors import EndpointError

    taken = config.model_copy(
        update={
            "metrics": config.metrics.model_copy(update={"port": service.server.port})
        }
    )
    with pytest.raises(
        EndpointError, match=rf"cannot listen on 127\.0\.0\.1:{service.server.port}"
    ):
        Service(taken)
