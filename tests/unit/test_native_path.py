"""The compiled per-message path gives what the Python path gives.

``Pipeline(native=True)`` (the default) decodes, joins and judges the common
messages in ``native/src/batch.rs`` and leaves every other message to the
Python path; ``Pipeline(native=False)`` sends all of them through Python.
Fed the same batches, the two must end in the same counters, windows,
checkpoints, invalid messages and histograms: the Python path is the
reference the compiled one is checked against, message stream by message
stream (hostile ones included).
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import confluent_kafka
import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.config import Config
from streamer.pipeline import Pipeline
from streamer.state import encode
from tests.fakes import Message

NOW_MS = 1_796_119_200_000
CLASSES = ("billing", "cancel", "other")


def iso(ms: int, form: int) -> str | int:
    instant = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return [
        ms,
        instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z",
        instant.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00",
        instant.isoformat(),  # +00:00 with microseconds: the Python path's
        instant.strftime("%Y%m%dT%H%M%SZ"),  # basic format: the Python path's
    ][form]


@st.composite
def prediction_body(draw: st.DrawFn, event_id: str, ms: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "model": draw(st.sampled_from(["fraud", "churn", "intent", "é-model"])),
        "timestamp": iso(ms, draw(st.integers(0, 4))),
    }
    if draw(st.booleans()):
        body["model_version"] = draw(st.sampled_from(["1", 2, "", 3.5]))
    if body["model"] == "intent":
        weights = draw(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3))
        total = sum(weights)
        body["probabilities"] = {
            c: w / total for c, w in zip(CLASSES, weights, strict=True)
        }
    else:
        body["probability"] = draw(
            st.sampled_from([0.0, 1.0, 0.5, 0.999, 1e-9, 0, 1]) | st.floats(0.0, 1.0)
        )
    _fall_back_on_the_message(draw, body)
    if draw(st.booleans()):
        body["segment"] = {
            "country": draw(st.sampled_from(["de", "fr", "us", "", 7, True, None])),
            "tier": draw(st.sampled_from(["gold", "x" * 130, 1.5])),
        }
    return body


def _fall_back_on_the_message(draw: st.DrawFn, body: dict[str, Any]) -> None:
    """Now and then no event id or timestamp: the key or Kafka timestamp's."""
    for field in ("event_id", "timestamp"):
        if draw(st.integers(0, 5)) == 0:
            if draw(st.booleans()):
                del body[field]
            else:
                body[field] = None


@st.composite
def outcome_body(draw: st.DrawFn, event_id: str, ms: int) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "label": draw(
            st.sampled_from(
                [1, 0, True, False, "1", "TRUE", "no", "fraud", "legit", 2, *CLASSES]
            )
        ),
        "timestamp": iso(ms, draw(st.integers(0, 4))),
    }
    _fall_back_on_the_message(draw, body)
    return body


HOSTILE = [
    None,
    b"",
    b"{",
    b"[]",
    b'{"event_id": "x"}',
    b'{"event_id": 1.5, "model": "m", "probability": 0.5}',
    b'{"event_id": "h", "model": "fraud", "probability": 1.5}',
    b'{"event_id": "h", "model": "fraud", "probability": -0}',
    b'{"event_id": "h", "label": 1.0}',
    b'{"event_id": "h", "label": null}',
    b"\xff\xfe",
]


@st.composite
def streams(draw: st.DrawFn) -> list[Message]:
    messages: list[Message] = []
    offsets: dict[tuple[str, int], int] = {}
    ms = NOW_MS - 3_600_000
    partitions = draw(st.integers(1, 3))
    for _ in range(draw(st.integers(1, 60))):
        ms += draw(st.integers(-5_000, 60_000))
        event_id = str(draw(st.integers(0, 30)))
        partition = int(event_id) % partitions
        kind = draw(st.sampled_from(["prediction", "outcome", "both", "hostile"]))
        bodies: list[tuple[str, bytes | None]] = []
        if kind in ("prediction", "both"):
            body = draw(prediction_body(event_id, ms))
            bodies.append(("predictions", json.dumps(body).encode()))
        if kind in ("outcome", "both"):
            delay = draw(st.integers(-1_000, 400_000))
            body = draw(outcome_body(event_id, ms + delay))
            bodies.append(("outcomes", json.dumps(body).encode()))
        if kind == "hostile":
            topic = draw(st.sampled_from(["predictions", "outcomes"]))
            bodies.append((topic, draw(st.sampled_from(HOSTILE))))
        for topic, value in bodies:
            offset = offsets.get((topic, partition), 0)
            if draw(st.integers(0, 9)) == 0 and offset > 0:
                offset -= 1  # a redelivery
            else:
                offsets[(topic, partition)] = offset + 1
            key = event_id.encode() if draw(st.booleans()) else None
            messages.append(Message(topic, partition, value, key, offset, ms))
    return messages


@st.composite
def configs(draw: st.DrawFn) -> Config:
    raw: dict[str, Any] = {
        "windows": {"lengths": ["5m", "1h"], "clock": "event"},
        "join": {
            "max_pending": draw(st.integers(1, 50)),
            "prediction_ttl_s": draw(st.sampled_from([30, 600, 86400])),
            "outcome_ttl_s": draw(st.sampled_from([30, 600])),
        },
        "metrics": {"max_models": draw(st.integers(1, 6))},
        "scoring": {"max_future_skew_s": draw(st.sampled_from([0, 60, 3600]))},
    }
    if draw(st.booleans()):
        raw["segments"] = {"keys": ["country", "tier"], "max_values": 2}
    if draw(st.booleans()):
        raw["models"] = {
            "fraud": {"positive_label": "fraud", "negative_label": "legit"}
        }
    return Config.model_validate(raw)


def _plain(checkpoint: bytes) -> Any:
    """A checkpoint as its plain data, so that a difference shows where."""
    return orjson.loads(zlib.decompress(checkpoint))


def _snapshot(pipeline: Pipeline) -> dict[str, Any]:
    counters = pipeline.counters
    plain = {
        name: dict(value) if isinstance(value, dict) else value
        for name, value in vars(counters).items()
        if name not in ("loss", "join_delay")
    }
    for name in ("loss", "join_delay"):
        table = getattr(counters, name)
        plain[name] = {
            model: (histogram.counts.tolist(), histogram.total)
            for model, histogram in table.items()
        }
    return {
        "counters": plain,
        "windows": pipeline.window_rows(),
        "prediction_windows": pipeline.prediction_window_rows(),
        "states": {p: _plain(encode(s)) for p, s in pipeline.partitions.items()},
        "known_models": pipeline.known_models,
        "segments_dropped": dict(pipeline.segments.dropped),
        "pending": pipeline.pending(),
    }


@settings(max_examples=150, deadline=None)
@given(config=configs(), messages=streams(), cuts=st.lists(st.integers(1, 30)))
def test_native_and_python_paths_agree(
    config: Config, messages: list[Message], cuts: list[int]
) -> None:
    native = Pipeline(config, wall_clock_ms=lambda: NOW_MS)
    python = Pipeline(config, wall_clock_ms=lambda: NOW_MS, native=False)
    start = 0
    for size in [*cuts, len(messages)]:
        batch = messages[start : start + size]
        start += size
        found_native = native.process(batch)
        found_python = python.process(batch)
        assert [(id(m), r) for m, r in found_native] == [
            (id(m), r) for m, r in found_python
        ]
        if start >= len(messages):
            break
    found, expected = _snapshot(native), _snapshot(python)
    assert found == expected, _first_difference(found, expected)


def _first_difference(found: Any, expected: Any, path: str = "") -> str:
    """Where two nested values first differ, for a readable failure."""
    if isinstance(found, dict) and isinstance(expected, dict):
        for key in sorted(set(found) | set(expected), key=repr):
            if found.get(key) != expected.get(key):
                return _first_difference(
                    found.get(key), expected.get(key), f"{path}/{key}"
                )
    elif (
        isinstance(found, list)
        and isinstance(expected, list)
        and len(found) == len(expected)
    ):
        for index, (left, right) in enumerate(zip(found, expected, strict=True)):
            if left != right:
                return _first_difference(left, right, f"{path}[{index}]")
    return f"{path}: {found!r} != {expected!r}"


def test_the_common_messages_take_the_compiled_path() -> None:
    """Only the first message of each model goes through Python (admission)."""
    config = Config.model_validate({"windows": {"clock": "event"}})
    pipeline = Pipeline(config, wall_clock_ms=lambda: NOW_MS)
    rng = np.random.default_rng(7)
    messages = []
    for index in range(2000):
        ms = NOW_MS - 3_600_000 + index * 1000
        model = ["fraud", "churn", "intent"][index % 3]
        body: dict[str, Any] = {
            "event_id": f"e-{index}",
            "model": model,
            "model_version": "3",
            "timestamp": iso(ms, index % 3),
        }
        if model == "intent":
            body["probabilities"] = dict(zip(CLASSES, (0.2, 0.5, 0.3), strict=True))
        else:
            body["probability"] = float(rng.random())
        messages.append(Message("predictions", index % 4, json.dumps(body).encode()))
        outcome = {
            "event_id": f"e-{index}",
            "label": "cancel" if model == "intent" else 1,
        }
        messages.append(Message("outcomes", index % 4, json.dumps(outcome).encode()))
    with mock.patch.object(
        Pipeline, "_route", autospec=True, side_effect=Pipeline._route
    ) as route:
        for start in range(0, len(messages), 500):
            pipeline.process(messages[start : start + 500])
    assert sum(pipeline.counters.joined.values()) == 2000
    # The first prediction of each model (admission) and each partition's first
    # message (no state yet) are the only ones Python saw.
    assert route.call_count <= 3 + 4


def test_a_squared_error_is_python_s_to_the_last_bit() -> None:
    # (p - 1) ** 2 in Python is libm's pow, an ulp off p * p here: found by
    # the test above (the compiled path once multiplied).
    config = Config.model_validate({"windows": {"clock": "event"}})
    ms = NOW_MS - 60_000
    body = {
        "event_id": "e",
        "model": "m",
        "timestamp": ms,
        "probability": 0.7103599736383558,
    }
    messages = [
        Message("predictions", 0, json.dumps(body).encode(), None, 0, ms),
        Message(
            "predictions",
            0,
            json.dumps({**body, "event_id": "f"}).encode(),
            None,
            1,
            ms,
        ),
        Message("outcomes", 0, b'{"event_id": "f", "label": 1}', None, 0, ms),
    ]
    native = Pipeline(config, wall_clock_ms=lambda: NOW_MS)
    python = Pipeline(config, wall_clock_ms=lambda: NOW_MS, native=False)
    native.process(messages)
    python.process(messages)
    assert _snapshot(native) == _snapshot(python)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["predictions", "outcomes", None]),
            st.integers(0, 3) | st.none(),
            st.integers(-2, 50) | st.none(),
            st.booleans(),
        ),
        max_size=60,
    ),
    cuts=st.lists(st.integers(1, 30)),
)
def test_offsets_to_store_are_one_past_the_newest_per_partition(
    rows: list[tuple[str | None, int | None, int | None, bool]],
    cuts: list[int],
) -> None:
    """Per batch, whichever path took each message (the compiled one, with
    its redeliveries, or Python's for the rest)."""
    ms = NOW_MS - 60_000
    common = {"model": "m", "timestamp": ms, "probability": 0.5}
    messages: list[Any] = [
        Message(
            topic,
            partition,
            json.dumps({"event_id": f"e{at}", **common}).encode() if valid else b"{",
            None,
            offset,
            ms,
        )
        for at, (topic, partition, offset, valid) in enumerate(rows)
    ]
    config = Config.model_validate({"windows": {"clock": "event"}})
    for native in (True, False):
        pipeline = Pipeline(config, wall_clock_ms=lambda: NOW_MS, native=native)
        for batch in _cut(messages, cuts):
            expected: dict[tuple[str, int], int] = {}
            for message in batch:
                topic, partition, offset = (
                    message.topic(),
                    message.partition(),
                    message.offset(),
                )
                if topic is None or partition is None or offset is None:
                    continue
                expected[(topic, partition)] = max(
                    expected.get((topic, partition), -2), offset + 1
                )
            pipeline.process(batch)
            found = pipeline.offsets_to_store
            assert {(t, p): o for t, p, o in found} == expected
            assert [(t, p) for t, p, _ in found] == list(expected)  # first seen


def _cut(messages: list[Any], cuts: list[int]) -> list[list[Any]]:
    batches, start = [], 0
    for size in [*cuts, len(messages)]:
        if start >= len(messages):
            break
        batches.append(messages[start : start + size])
        start += size
    return batches


def test_a_raising_message_leaves_the_messages_before_it_counted() -> None:
    class Broken(Message):
        # value(): the one method the compiled path always calls (it asks
        # for the key and Kafka timestamp only when the value lacks them).
        def value(self) -> bytes:
            raise RuntimeError("a broken message object")

    config = Config.model_validate({"windows": {"clock": "event"}})
    pipeline = Pipeline(config, wall_clock_ms=lambda: NOW_MS)
    ms = NOW_MS - 60_000

    def prediction(
        event_id: str, offset: int, kind: type[Message] = Message
    ) -> Message:
        body = {"event_id": event_id, "model": "m", "timestamp": ms, "probability": 0.5}
        return kind("predictions", 0, json.dumps(body).encode(), None, offset, ms)

    pipeline.process([prediction("a", 0)])  # admits the model, makes the state
    try:
        pipeline.process(
            [prediction("b", 1), prediction("c", 2), prediction("d", 3, Broken)]
        )
    except RuntimeError:
        pass
    else:
        raise AssertionError("the broken message's error was swallowed")
    state = pipeline.partitions[0]
    assert state.next_offsets == {"prediction": 3}
    assert state.prediction_watermark_ms == ms
    assert state.join.pending_predictions == 3


def test_a_batch_that_raised_leaves_no_offsets_to_the_next() -> None:
    """Offsets noted before a message raised are not stored with the next batch."""

    class Broken(Message):
        def value(self) -> bytes:
            raise RuntimeError("a broken message object")

    ms = NOW_MS - 60_000
    body = json.dumps({"event_id": "a", "model": "m", "timestamp": ms}).encode()
    config = Config.model_validate({"windows": {"clock": "event"}})
    for native in (True, False):
        pipeline = Pipeline(config, wall_clock_ms=lambda: NOW_MS, native=native)
        pipeline.process([Message("predictions", 0, body, None, 0, ms)])
        try:
            pipeline.process([Broken("predictions", 0, body, None, 7, ms)])
        except RuntimeError:
            pass
        else:
            raise AssertionError("the broken message's error was swallowed")
        pipeline.process([Message("predictions", 5, body, None, 0, ms)])
        assert pipeline.offsets_to_store == [("predictions", 5, 1)]


def _kafka_message(fake: Message, kind: type[Any] = confluent_kafka.Message) -> Any:
    """The fake as confluent-kafka's own Message (a C type), or a subclass."""
    return kind(
        topic=fake.topic(),
        partition=fake.partition(),
        offset=fake.offset(),
        key=fake.key(),
        value=fake.value(),
        timestamp=fake.timestamp(),
    )


@settings(max_examples=60, deadline=None)
@given(config=configs(), messages=streams(), cuts=st.lists(st.integers(1, 30)))
def test_confluent_kafka_messages_read_as_the_fakes_are(
    config: Config, messages: list[Message], cuts: list[int]
) -> None:
    """The compiled path calls a real Message's methods without looking them up.

    Fed confluent-kafka's own Message objects (or, for the subclass case, a
    subclass whose methods it must look up by name), it ends where the
    Python path does with the fakes.
    """

    class Subclass(confluent_kafka.Message):  # type: ignore[misc]
        pass

    real = Pipeline(config, wall_clock_ms=lambda: NOW_MS)
    python = Pipeline(config, wall_clock_ms=lambda: NOW_MS, native=False)
    for number, batch in enumerate(_cut(messages, cuts)):
        kind = Subclass if number % 3 == 2 else confluent_kafka.Message
        kafka_batch = [_kafka_message(fake, kind) for fake in batch]
        found = real.process(kafka_batch)
        expected = python.process(batch)
        position = {id(m): at for at, m in enumerate(kafka_batch)}
        assert [(position[id(m)], r) for m, r in found] == [
            (batch.index(m), r) for m, r in expected
        ]
    found_snapshot, expected_snapshot = _snapshot(real), _snapshot(python)
    assert found_snapshot == expected_snapshot, _first_difference(
        found_snapshot, expected_snapshot
    )


def test_a_message_subclass_s_own_methods_are_called() -> None:
    """A subclass of Message may override a method: its own answer counts."""
    ms = NOW_MS - 60_000

    def body(event_id: str, model: str) -> bytes:
        fields = {"event_id": event_id, "model": model, "timestamp": ms}
        return json.dumps({**fields, "probability": 0.5}).encode()

    class Overridden(confluent_kafka.Message):  # type: ignore[misc]
        def value(self) -> bytes:
            return body("b", "n")

    config = Config.model_validate({"windows": {"clock": "event"}})
    pipeline = Pipeline(config, wall_clock_ms=lambda: NOW_MS)
    first = Message("predictions", 0, body("a", "m"), None, 0, ms)
    pipeline.process([_kafka_message(first)])  # admits "m", makes the state
    second = Message("predictions", 0, body("b", "m"), None, 1, ms)
    pipeline.process([_kafka_message(second, Overridden)])
    predictions = {
        key.model: count for key, count in pipeline.counters.predictions.items()
    }
    assert predictions == {"m": 1, "n": 1}
