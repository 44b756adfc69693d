"""Per-segment windows under a bounded budget of values per key."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.metrics import log_loss

from streamer.config import Config, SegmentsConfig
from streamer.metrics import ConsumerHealth, PipelineCollector
from streamer.pipeline import Pipeline
from streamer.segments import SegmentBudget
from tests.fakes import Message
from tests.scrape import parse


def _prediction(event_id: str, ts: int, p: float, segment: object) -> Message:
    body = {"event_id": event_id, "model": "m", "timestamp": ts, "probability": p,
            "segment": segment}  # fmt: skip
    return Message("predictions", 0, json.dumps(body).encode())


def _outcome(event_id: str, ts: int, label: int) -> Message:
    body = {"event_id": event_id, "label": label, "timestamp": ts}
    return Message("outcomes", 0, json.dumps(body).encode())


def test_budget_keeps_the_first_values_then_folds_into_other() -> None:
    budget = SegmentBudget(
        SegmentsConfig(
            keys=("country", "tier"), max_values=2, allow={"tier": ("gold",)}
        )
    )
    assert budget.admit(("DE", "gold")) == ("DE", "gold")
    assert budget.admit(("FR", "silver")) == ("FR", "other")
    assert budget.admit(("IT", "")) == ("other", "")
    assert budget.admit(("DE", "gold")) == ("DE", "gold")
    assert budget.dropped == {"country": 1, "tier": 1}


def test_ten_thousand_values_stay_within_the_budget() -> None:
    now = int(time.time() * 1000)
    config = Config.model_validate(
        {"segments": {"keys": ["country", "device"], "max_values": 5,
                      "allow": {"device": ["ios", "android"]}}}
    )  # fmt: skip
    pipeline = Pipeline(config)
    rng = np.random.default_rng(1)
    messages, truth = [], {}
    for index in range(10_000):
        segment = {
            "country": f"c{index}",
            "device": ["ios", "web", "android"][index % 3],
        }
        p, y = float(rng.random()), int(rng.integers(0, 2))
        messages += [_prediction(f"e{index}", now, p, segment),
                     _outcome(f"e{index}", now, y)]  # fmt: skip
        country = f"c{index}" if index < 5 else "other"
        device = segment["device"] if segment["device"] != "web" else "other"
        truth.setdefault((country, device), []).append((p, y))
    pipeline.process(messages)

    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline, ConsumerHealth()))
    page = parse(generate_latest(registry).decode())
    series = page.series("driftstream_window_events")
    # At most (5 kept + other) countries x (2 allowed + other) devices x 3 windows.
    assert len(series) == len(truth) * 3 <= 6 * 3 * 3
    assert (
        page.value("driftstream_segment_values_dropped_total", key="country") == 9_995
    )
    web = sum(1 for index in range(10_000) if index % 3 == 1)
    assert page.value("driftstream_segment_values_dropped_total", key="device") == web
    for (country, device), pairs in truth.items():
        labels = {"country": country, "device": device, "window": "1h"}
        assert page.value("driftstream_window_events", **labels) == len(pairs)
        if len({y for _, y in pairs}) == 2:
            reference = log_loss(
                [y for _, y in pairs], [p for p, _ in pairs], labels=[0, 1]
            )
            assert page.value("driftstream_window_log_loss", **labels) == pytest.approx(
                reference, rel=1e-9
            )


def test_missing_or_odd_segments_are_empty_or_other() -> None:
    now = int(time.time() * 1000)
    pipeline = Pipeline(Config.model_validate({"segments": {"keys": ["country"]}}))
    pipeline.process([
        _prediction("a", now, 0.5, None), _outcome("a", now, 1),
        _prediction("b", now, 0.5, {"country": ["DE"]}), _outcome("b", now, 1),
        _prediction("c", now, 0.5, {"country": "x" * 500}), _outcome("c", now, 1),
        _prediction("d", now, 0.5, {"country": 49}), _outcome("d", now, 1),
    ])  # fmt: skip
    rows = {
        (row.segment, row.window): row.stats.events for row in pipeline.window_rows()
    }
    assert rows[(("",), "1h")] == 2
    assert rows[(("other",), "1h")] == 1
    assert rows[(("49",), "1h")] == 1


def test_segments_survive_a_checkpoint() -> None:
    now = int(time.time() * 1000)
    config = Config.model_validate({"segments": {"keys": ["country"]}})
    pipeline = Pipeline(config)
    pipeline.process([_prediction("a", now, 0.9, {"country": "DE"}),
                      _prediction("b", now, 0.2, {"country": "FR"}),
                      _outcome("a", now, 1)])  # fmt: skip
    exported = pipeline.export_partition(0)
    assert exported is not None
    restored = Pipeline(config)
    restored.adopt_checkpoint(0, exported[0])
    restored.process([_outcome("b", now, 0)])
    rows = {row.segment: row.stats.events for row in restored.window_rows()
            if row.window == "1h"}  # fmt: skip
    assert rows == {("DE",): 1, ("FR",): 1}
