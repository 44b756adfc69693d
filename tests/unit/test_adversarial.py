"""Hostile input through the pipeline: counted with a reason, never raised.

Each message goes through :meth:`Pipeline.process` as the consumer would hand
it over, so a decoder, join, window or scoring failure would surface here as
an exception, a wrong reason or a wrong count.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.metrics import log_loss

from streamer.config import Config, FieldsConfig
from streamer.events import ModelKey
from streamer.metrics import ConsumerHealth, PipelineCollector
from streamer.pipeline import Pipeline
from streamer.records import Invalid, decode_prediction
from tests import fakes

NOW_MS = 1_796_119_200_000  # 2026-12-01T10:00:00Z, the wall clock of these tests
DAY_MS = 86_400_000
EPS = 2.220446049250313e-16
_OFFSETS = itertools.count()


def Message(
    topic: str, partition: int, payload: bytes | None, key: bytes | None = b"k"
) -> fakes.Message:
    return fakes.Message(topic, partition, payload, key, timestamp_ms=NOW_MS)


def _pipeline() -> Pipeline:
    return Pipeline(Config.model_validate({}), wall_clock_ms=lambda: NOW_MS)


def _prediction(event_id: str, ts: int, p: float, partition: int = 0) -> Message:
    body = {"event_id": event_id, "model": "m", "timestamp": ts, "probability": p}
    return Message("predictions", partition, json.dumps(body).encode())


def _outcome(event_id: str, ts: int, label: object = 1, partition: int = 0) -> Message:
    body = {"event_id": event_id, "label": label, "timestamp": ts}
    return Message("outcomes", partition, json.dumps(body).encode())


def _pairs(count: int, ts: int, partition: int = 0) -> list[Message]:
    return [
        message
        for index in range(count)
        for message in (
            _prediction(f"e-{index}", ts - 1_000, 0.8, partition),
            _outcome(f"e-{index}", ts, 1, partition),
        )
    ]


def _events(pipeline: Pipeline, model: str = "m") -> dict[str, int]:
    return {
        row.window: row.stats.events
        for row in pipeline.window_rows()
        if row.model.model == model
    }


def _deep(depth: int) -> bytes:
    return b'{"event_id": "d", "model": "m", "probability": 0.5, "x": ' + (
        b"[" * depth + b"]" * depth + b"}"
    )


HOSTILE_PREDICTIONS: list[tuple[bytes | None, bytes | None, str]] = [
    (b"k", _deep(5_000), "invalid_json"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": 1e400}', "invalid_json"),
    (b"\xff\xfe", b'{"model": "m", "probability": 0.5}', "not_utf8"),
    (b"k", b'{"event_id": "", "model": "m", "probability": 0.5}', "missing_event_id"),
    (b"k", b'{"event_id": 1.5, "model": "m", "probability": 0.5}', "missing_event_id"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": "0.5"}',
     "bad_probability"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": false}',
     "bad_probability"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": [0.5]}',
     "bad_probability"),
    (b"k", b'{"event_id": "a", "model": "m", "probabilities": {"x": 0.5, "x": 0.5}}',
     "bad_probability"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": 0.5, "timestamp": '
     b'"9999-12-31T23:59:59-23:59"}', "bad_timestamp"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": 0.5, "timestamp": '
     b'"1969-12-31T23:59:59.999Z"}', "bad_timestamp"),
    (b"k", b'{"event_id": "a", "model": "m", "probability": 0.5, "timestamp": '
     b'"1796119200000"}', "bad_timestamp"),
    (b"k", b"\xef\xbb\xbf{}", "invalid_json"),
    (b"k", b"null", "not_an_object"),
]  # fmt: skip

HOSTILE_OUTCOMES: list[tuple[bytes | None, bytes | None, str]] = [
    (b"k", b'{"event_id": "o1", "label": null}', "missing_label"),
    (b"k", b'{"event_id": "o2", "label": 1.0}', "bad_label"),
    (b"k", b'{"event_id": "o3", "label": {"v": 1}}', "bad_label"),
    (b"k", b'{"event_id": "o4", "label": []}', "bad_label"),
    (b"\x80", b'{"label": 1}', "not_utf8"),
    (b"", b'{"label": 1}', "missing_event_id"),
]  # fmt: skip


def test_hostile_messages_are_counted_by_reason_and_never_raise() -> None:
    pipeline = _pipeline()
    messages = [Message("predictions", 0, v, k) for k, v, _ in HOSTILE_PREDICTIONS]
    messages += [Message("outcomes", 1, v, k) for k, v, _ in HOSTILE_OUTCOMES]
    pipeline.process(messages)

    expected: dict[tuple[str, str], int] = {}
    for topic, table in (("predictions", HOSTILE_PREDICTIONS),
                         ("outcomes", HOSTILE_OUTCOMES)):  # fmt: skip
        for _, _, reason in table:
            expected[(topic, reason)] = expected.get((topic, reason), 0) + 1
    assert dict(pipeline.counters.invalid) == expected
    assert pipeline.pending() == {"prediction": 0, "outcome": 0}


def test_valid_extremes_are_scored_once_with_sklearns_loss() -> None:
    """Extreme but valid values: each scored exactly once, as scikit-learn does."""
    classes = [f"c{index:03d}" for index in range(1000)]
    weights = np.random.default_rng(5).dirichlet(np.ones(len(classes)))
    big_id = "é-" + "x" * 100_000  # a 100 kB unicode event id
    rows: list[tuple[str, dict[str, object], object]] = [
        ("tiny", {"probability": 1e-320}, 1),
        ("tiny-neg", {"probability": 1e-320}, "FALSE"),
        ("almost-one", {"probability": 1 - 1e-17}, 0),
        ("one", {"probability": 1.0}, True),
        (big_id, {"probability": 0.25}, "1"),
        ("😀\u0000", {"probability": 0.75, "padding": "p" * 1_000_000}, 0),
        ("-5", {"probability": 0.5, "timestamp": "2026-12-01T15:44:59.999+05:45"}, 1),
    ]
    messages: list[Message] = []
    for event_id, fields, label in rows:
        body = {"event_id": event_id, "model": "m", "timestamp": NOW_MS, **fields}
        messages.append(Message("predictions", 0, json.dumps(body).encode()))
        messages.append(_outcome(event_id, NOW_MS, label))
    multiclass = {
        "event_id": 7,  # an integer id: the outcome's "7" matches it
        "model": "intent",
        "timestamp": NOW_MS,
        "probabilities": dict(zip(classes, weights.tolist(), strict=True)),
    }
    messages.append(Message("predictions", 0, json.dumps(multiclass).encode()))
    messages.append(_outcome("7", NOW_MS, "c500"))
    # A repeated key: the last value wins, as in every JSON parser we know of.
    messages.append(
        Message(
            "predictions",
            0,
            b'{"event_id": "dup", "model": "m", "probability": 0.9, '
            b'"probability": 0.1, "timestamp": 1796119200000}',
        )
    )
    messages.append(_outcome("dup", NOW_MS, 1))
    pipeline = _pipeline()
    pipeline.process(messages)

    assert dict(pipeline.counters.invalid) == {}
    assert pipeline.counters.joined == {ModelKey("m", ""): 8, ModelKey("intent", ""): 1}
    assert _events(pipeline) == {"5m": 8, "1h": 8, "24h": 8}
    p = [1e-320, 1e-320, 1 - 1e-17, 1.0, 0.25, 0.75, 0.5, 0.1]
    y = [1, 0, 0, 1, 1, 0, 1, 1]
    mean = next(
        r.stats.mean_loss
        for r in pipeline.window_rows()
        if r.model.model == "m" and r.window == "1h"
    )
    assert mean == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)
    intent = next(r.stats for r in pipeline.window_rows() if r.model.model == "intent")
    assert intent.mean_loss == pytest.approx(-math.log(weights[500]), rel=1e-12)


@pytest.mark.parametrize("ahead_ms", [10 * 60_000, 2 * DAY_MS])
def test_an_outcome_stamped_ahead_does_not_make_later_events_late(
    ahead_ms: int,
) -> None:
    """One outcome from a clock that runs ahead must not blind the windows.

    The README accepts any timestamp up to the year 9999 and says events ahead
    of "now" are kept and count once now reaches them. But the ring's head
    jumps to the future bucket, so every later, correctly stamped event of that
    model and partition is "older than the ring can hold" and dropped as late:
    with a 2-day skew all three windows stay at 0 for two days.
    """
    pipeline = _pipeline()
    pipeline.process(
        [_prediction("skewed", NOW_MS, 0.8), _outcome("skewed", NOW_MS + ahead_ms)]
    )
    pipeline.process(_pairs(20, NOW_MS))

    # The skewed event itself may be scored or refused; the 20 must be scored.
    assert pipeline.counters.joined[ModelKey("m", "")] >= 20
    events = _events(pipeline)
    assert all(events[window] >= 20 for window in ("5m", "1h", "24h")), events


def test_one_far_future_pair_does_not_expire_every_later_event() -> None:
    """A single pair stamped in 2100 (valid: before 9999) must not stop the join.

    The join clock of a partition is the older of the two topics' newest
    timestamps; one prediction and one outcome from 2100 push both to 2100,
    after which every correctly stamped record arrives already past its TTL and
    goes straight to ``expired``: the partition never scores again.
    """
    year_2100_ms = 4_102_444_800_000
    pipeline = _pipeline()
    pipeline.process(
        [_prediction("future", year_2100_ms, 0.5), _outcome("future", year_2100_ms)]
    )
    pipeline.process(_pairs(20, NOW_MS))

    assert pipeline.counters.joined[ModelKey("m", "")] >= 20
    assert dict(pipeline.counters.expired) == {}
    assert _events(pipeline) == {"5m": 20, "1h": 20, "24h": 20}


def test_a_null_class_probability_is_a_bad_probability() -> None:
    """README: ``missing_probability`` is "neither probability nor probabilities";
    a class whose probability is null is "not a number": ``bad_probability``."""
    value = b'{"event_id": "a", "model": "m", "probabilities": {"x": null, "y": 1.0}}'
    decoded = decode_prediction(
        value, b"k", NOW_MS, fields=FieldsConfig(), sum_tolerance=1e-6
    )
    assert decoded is Invalid.BAD_PROBABILITY


@pytest.mark.parametrize("field_name", ["model", "model_version"])
def test_a_1_mb_model_name_does_not_make_every_scrape_huge(field_name: str) -> None:
    """One 1 MB prediction must not cost ~40 MB on every scrape, forever.

    The name is a label value on every model series (three windows times
    three gauges, two 15-bucket histograms, the counters): 41 MB per such
    model, and ``metrics.max_models`` (200) of them make an 8 GB page. Either
    the message is refused (counted as invalid) or the page stays small.
    """
    body: dict[str, object] = {"event_id": "big", "model": "m", "probability": 0.5}
    body[field_name] = "n" * 1_000_000
    pipeline = _pipeline()
    pipeline.process(
        [Message("predictions", 0, json.dumps(body).encode()), _outcome("big", NOW_MS)]
    )
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline, ConsumerHealth()))
    page = generate_latest(registry)
    assert len(page) < 1_000_000, f"/metrics is {len(page) / 1e6:.0f} MB"
