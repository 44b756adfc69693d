"""The pipeline without a broker: messages in, windows and counters out."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss

from streamer.config import Config
from streamer.events import ModelKey
from streamer.pipeline import Pipeline
from tests import fakes

HOUR_MS = 3_600_000
T0 = 1_764_583_200_000
_OFFSETS = itertools.count()


Message = fakes.Message


def _config(**windows: object) -> Config:
    return Config.model_validate(
        {"windows": {"lengths": ["1h", "24h"], "clock": "event", **windows}}
    )


def _prediction(event_id: str, ts: int, p: float, partition: int = 0, model: str = "m"):
    body = {"event_id": event_id, "model": model, "timestamp": ts, "probability": p}
    return Message("predictions", partition, json.dumps(body).encode())


def _outcome(event_id: str, ts: int, label: object, partition: int = 0):
    body = {"event_id": event_id, "label": label, "timestamp": ts}
    return Message("outcomes", partition, json.dumps(body).encode())


def _window(pipeline: Pipeline, window: str, model: str = "m"):
    rows = [r for r in pipeline.window_rows() if r.model.model == model]
    return next(r.stats for r in rows if r.window == window)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 50),
    events=st.integers(1, 120),
)
def test_windows_equal_sklearn_whatever_the_order(
    seed: int, batch: int, events: int
) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.choice([0.0, 1.0, 0.5, 0.99], size=events) * rng.random(events)
    labels = rng.integers(0, 2, size=events)
    messages = []
    for index in range(events):
        ts = T0 + int(rng.integers(0, 600_000))
        partition = int(rng.integers(0, 3))
        messages.append(
            _prediction(f"e{index}", ts, float(probabilities[index]), partition)
        )
        messages.append(_outcome(f"e{index}", ts + 1000, int(labels[index]), partition))
    order = rng.permutation(len(messages))
    pipeline = Pipeline(_config())
    # Offsets follow the order of arrival, as in a real partition.
    shuffled = [replace(messages[i], offset_number=n) for n, i in enumerate(order)]
    for start in range(0, len(shuffled), batch):
        pipeline.process(shuffled[start : start + batch])

    stats = _window(pipeline, "1h")
    assert stats.events == events
    reference = log_loss(labels, probabilities, labels=[0, 1])
    assert stats.mean_loss == pytest.approx(reference, rel=1e-9, abs=1e-9)
    squared = np.mean(
        np.square(-np.log(np.clip(np.where(labels == 1, probabilities,
                                           1 - probabilities), 2**-52, 1 - 2**-52)))
    )  # fmt: skip
    assert stats.mean_squared_loss == pytest.approx(squared, rel=1e-9)
    assert pipeline.counters.joined[ModelKey("m", "")] == events


def test_multiclass_and_unknown_class() -> None:
    pipeline = Pipeline(_config())
    rows = [
        ("a", {"x": 0.7, "y": 0.2, "z": 0.1}, "x"),
        ("b", {"x": 0.1, "y": 0.1, "z": 0.8}, "y"),
        ("c", {"x": 0.0, "y": 0.0, "z": 1.0}, "x"),
    ]
    messages = []
    for event_id, probabilities, label in rows:
        body = {"event_id": event_id, "model": "intent", "timestamp": T0,
                "probabilities": probabilities}  # fmt: skip
        messages.append(Message("predictions", 0, json.dumps(body).encode()))
        messages.append(_outcome(event_id, T0 + 5, label))
    messages.append(Message("predictions", 0, json.dumps(
        {"event_id": "d", "model": "intent", "timestamp": T0,
         "probabilities": {"x": 0.5, "y": 0.5, "z": 0.0}}).encode()))  # fmt: skip
    messages.append(_outcome("d", T0 + 5, "w"))
    pipeline.process(messages)

    stats = _window(pipeline, "24h", model="intent")
    matrix = [[p[c] for c in "xyz"] for _, p, _ in rows]
    reference = log_loss([label for *_, label in rows], matrix, labels=list("xyz"))
    assert stats.events == 3
    assert stats.mean_loss == pytest.approx(reference, rel=1e-9)
    assert pipeline.counters.invalid == {("outcomes", "unknown_class"): 1}


def test_expiry_waits_for_both_topics() -> None:
    pipeline = Pipeline(_config())
    pipeline.process([_prediction("old", T0, 0.5)])
    # Predictions alone move on: the outcomes topic might just be behind.
    pipeline.process([_prediction("new", T0 + 200 * HOUR_MS, 0.5)])
    assert pipeline.counters.expired == {}
    # Once outcomes pass the TTL too, the old prediction has expired.
    pipeline.process([_outcome("other", T0 + 169 * HOUR_MS, 1)])
    assert pipeline.counters.expired == {("prediction", ModelKey("m", "")): 1}
    assert pipeline.pending() == {"prediction": 1, "outcome": 1}


def test_duplicates_are_never_scored_twice() -> None:
    pipeline = Pipeline(_config())
    batch = [
        _prediction("a", T0, 0.9),
        _prediction("a", T0, 0.1),
        _outcome("a", T0 + 1, 1),
        _outcome("a", T0 + 2, 0),
        _prediction("a", T0, 0.3),
    ]
    pipeline.process(batch)
    assert _window(pipeline, "1h").events == 1
    assert _window(pipeline, "1h").mean_loss == pytest.approx(-np.log(0.9))
    assert pipeline.counters.duplicates == {"prediction": 2, "outcome": 1}


def test_quiet_model_leaves_the_windows() -> None:
    now = [T0]
    pipeline = Pipeline(
        Config.model_validate({"windows": {"lengths": ["5m"], "buckets": 5}}),
        wall_clock_ms=lambda: now[0],
    )
    pipeline.process([_prediction("a", T0 - 1000, 0.8), _outcome("a", T0, 1)])
    assert [row.window for row in pipeline.window_rows()] == ["5m"]
    now[0] = T0 + 6 * 60_000
    assert pipeline.window_rows() == []


def test_bad_labels_and_model_cap_are_counted() -> None:
    pipeline = Pipeline(
        Config.model_validate(
            {
                "metrics": {"max_models": 1},
                "models": {"m": {"positive_label": "fraud", "negative_label": "ok"}},
            }
        )
    )
    pipeline.process([
        _prediction("a", T0, 0.8), _outcome("a", T0, "fraud"),
        _prediction("b", T0, 0.8), _outcome("b", T0, "maybe"),
        _prediction("c", T0, 0.8, model="other"),
        Message("outcomes", 0, b"\xff"),
    ])  # fmt: skip
    assert pipeline.counters.joined == {ModelKey("m", ""): 1}
    assert pipeline.counters.invalid == {
        ("outcomes", "bad_label"): 1,
        ("outcomes", "not_utf8"): 1,
    }
    assert pipeline.counters.over_model_limit == 1


def test_redelivered_offsets_change_no_count() -> None:
    pipeline = Pipeline(_config())
    first = [
        replace(_prediction("a", T0, 0.7), offset_number=0),
        replace(_outcome("a", T0 + 1, 1), offset_number=0),
        replace(_prediction("b", T0, 0.2), offset_number=1),
    ]
    pipeline.process(first)
    # A rebalance hands the same offsets out again, then new ones follow.
    pipeline.process([*first, replace(_outcome("b", T0 + 2, 0), offset_number=1)])
    stats = _window(pipeline, "1h")
    assert stats.events == 2
    assert stats.mean_loss == pytest.approx((-np.log(0.7) - np.log(0.8)) / 2)
    assert pipeline.counters.duplicates == {}
    assert pipeline.counters.redelivered == 3


def test_checkpoint_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(5)
    messages = []
    for index in range(400):
        ts = T0 + index * 1000
        messages.append(_prediction(f"e{index}", ts, float(rng.random())))
        if index % 4:
            messages.append(_outcome(f"e{index - 3}", ts, int(rng.integers(0, 2))))
    messages = [replace(m, offset_number=n) for n, m in enumerate(messages)]
    head, tail = messages[:300], messages[300:]

    uninterrupted = Pipeline(_config())
    uninterrupted.process(head)
    uninterrupted.process(tail)

    before = Pipeline(_config())
    before.process(head)
    exported = before.export_partition(0)
    assert exported is not None
    payload, offsets = exported
    assert offsets == {"prediction": 300, "outcome": 299}
    after = Pipeline(_config())
    assert after.adopt_checkpoint(0, payload) == offsets
    # The restored process sees the overlap again (at-least-once) and the rest.
    after.process(messages[250:])

    assert after.window_rows() == uninterrupted.window_rows()
    assert after.pending() == uninterrupted.pending()
    assert after.counters.redelivered == 50


def test_state_held_since_a_lost_partition_beats_an_older_checkpoint() -> None:
    pipeline = Pipeline(_config())
    pipeline.process([replace(_prediction("a", T0, 0.7), offset_number=0)])
    exported = pipeline.export_partition(0)
    assert exported is not None
    older, _ = exported
    pipeline.process([replace(_outcome("a", T0 + 1, 1), offset_number=0)])

    # Handed back after an outage: the held state is further along; keep it.
    assert pipeline.adopt_checkpoint(0, older) == {"prediction": 1, "outcome": 1}
    assert _window(pipeline, "1h").events == 1

    # A fresh process has nothing held: the checkpoint is taken.
    fresh = Pipeline(_config())
    assert fresh.adopt_checkpoint(0, older) == {"prediction": 1}
    assert fresh.pending() == {"prediction": 1, "outcome": 0}
