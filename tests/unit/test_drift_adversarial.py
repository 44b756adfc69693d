"""Trying to break the drift layer through the pipeline, without a broker.

Messages go through :meth:`Pipeline.process` as the consumer hands them over,
and the collector's text is read back, so the decoder, the join, the windows,
the reference and the exporter are all in the path. Numbers are recomputed
here with scikit-learn, scipy or plain numpy from the events sent; the
metamorphic tests (batch boundaries, duplicates, redelivery, restore) compare
two pipelines fed the same events in different ways.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy.stats import entropy
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from streamer.config import Config
from streamer.drift import Baseline
from streamer.events import ModelKey
from streamer.loss import DEFAULT_EPS
from streamer.metrics import ConsumerHealth, PipelineCollector
from streamer.pipeline import Pipeline
from streamer.state import StateFormatError
from tests import fakes
from tests.scrape import Scrape, assert_promtool_accepts, parse

T0 = 1_764_583_200_000
DAY_MS = 86_400_000
WALL_MS = T0 + 30 * DAY_MS
"""The wall clock of these tests: every event time is before it."""

EDGES = np.linspace(0.0, 1.0, 11)
MAX_LOSS = -math.log(DEFAULT_EPS)
_IDS = itertools.count()

WINDOW_FAMILIES = (
    "driftstream_window_events",
    "driftstream_window_log_loss",
    "driftstream_window_log_loss_squared",
)
DRIFT_FAMILIES = (
    "driftstream_window_log_loss_ratio",
    "driftstream_window_log_loss_zscore",
    "driftstream_window_brier_score",
    "driftstream_window_calibration_error",
    "driftstream_window_positive_rate",
    "driftstream_window_mean_probability",
    "driftstream_prediction_window_events",
    "driftstream_prediction_window_expected_log_loss",
    "driftstream_prediction_window_mean_probability",
    "driftstream_prediction_window_psi",
    "driftstream_baseline_log_loss",
    "driftstream_baseline_log_loss_std",
    "driftstream_reference_events",
    "driftstream_loss_drift_statistic",
    "driftstream_loss_drift_alarms_total",
)
DETECTOR_FAMILIES = DRIFT_FAMILIES[-2:]


# -- driving the pipeline ------------------------------------------------------


def _config(drift: dict[str, object] | None = None, **sections: object) -> Config:
    """Small references (the smallest the configuration allows), event clock."""
    return Config.model_validate(
        {
            "windows": {"lengths": ["1h", "24h"], "clock": "event"},
            "drift": {
                "reference_events": 1_000,
                "reference_predictions": 500,
                "calibration_events": 100_000,
                **(drift or {}),
            },
            **sections,
        }
    )


def _pipeline(config: Config | None = None) -> Pipeline:
    return Pipeline(config or _config(), wall_clock_ms=lambda: WALL_MS)


def _json(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


def _prediction(
    event_id: str,
    ts: int,
    probability: float | None = None,
    *,
    model: str = "m",
    partition: int = 0,
    probabilities: dict[str, float] | None = None,
    segment: dict[str, object] | None = None,
) -> fakes.Message:
    body: dict[str, object] = {"event_id": event_id, "model": model, "timestamp": ts}
    if probabilities is not None:
        body["probabilities"] = probabilities
    else:
        body["probability"] = probability
    if segment is not None:
        body["segment"] = segment
    return fakes.Message("predictions", partition, _json(body))


def _outcome(
    event_id: str, ts: int, label: object, *, partition: int = 0
) -> fakes.Message:
    body = {"event_id": event_id, "label": label, "timestamp": ts}
    return fakes.Message("outcomes", partition, _json(body))


def _pairs(
    p: Sequence[float] | np.ndarray,
    y: Sequence[int] | np.ndarray,
    *,
    model: str = "m",
    start_ms: int = T0,
    partitions: int = 1,
    delay_ms: int = 500,
    segment: Callable[[int], dict[str, object]] | None = None,
) -> list[fakes.Message]:
    """A prediction then its outcome for each event; event i in partition i % P."""
    messages = []
    for index, (probability, label) in enumerate(zip(p, y, strict=True)):
        event_id = f"e{next(_IDS)}"
        ts = start_ms + index
        partition = index % partitions
        messages.append(
            _prediction(
                event_id,
                ts,
                float(probability),
                model=model,
                partition=partition,
                segment=segment(index) if segment else None,
            )
        )
        messages.append(
            _outcome(event_id, ts + delay_ms, int(label), partition=partition)
        )
    return messages


def _in_order(messages: list[fakes.Message]) -> list[fakes.Message]:
    """The messages with offsets increasing in list order, as Kafka hands them out."""
    return [
        dataclasses.replace(message, offset_number=offset)
        for offset, message in enumerate(messages)
    ]


def _feed(pipeline: Pipeline, messages: list[fakes.Message], batch: int) -> None:
    for start in range(0, len(messages), batch):
        pipeline.process(messages[start : start + batch])


def _scrape(pipeline: Pipeline) -> Scrape:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline, ConsumerHealth()))
    return parse(generate_latest(registry).decode())


def _families(
    page: Scrape, names: Sequence[str]
) -> dict[str, list[tuple[tuple[tuple[str, str], ...], float]]]:
    return {
        name: sorted(
            (tuple(sorted(labels.items())), value)
            for labels, value in page.samples.get(name, [])
        )
        for name in names
    }


# -- independent references ----------------------------------------------------


def _losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.where(y == 1, p, 1.0 - p), DEFAULT_EPS, 1.0 - DEFAULT_EPS)
    return -np.log(clipped)


def _bin(score: float) -> int:
    """The bin of one probability, written out: edge[b] < p <= edge[b + 1]."""
    for b in range(10):
        if score <= EDGES[b + 1]:
            return b
    raise AssertionError(f"probability {score} above 1")


def _ece(score: np.ndarray, hit: np.ndarray) -> float:
    bins = np.array([_bin(float(s)) for s in score])
    total = 0.0
    for b in range(10):
        inside = bins == b
        if inside.any():
            total += abs(score[inside].sum() - hit[inside].sum())
    return total / score.size


def _psi(current: np.ndarray, reference: np.ndarray) -> float:
    def shares(scores: np.ndarray) -> np.ndarray:
        counts = np.bincount([_bin(float(s)) for s in scores], minlength=10)
        return np.maximum(counts / counts.sum(), 1e-4)

    c, r = shares(current), shares(reference)
    return float(np.sum((c - r) * np.log(c / r)))


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    return entropy(np.stack([p, 1.0 - p], axis=1), axis=1)


def _stable(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.0, 3.0, size)
    return p, (rng.random(size) < p).astype(int)


def _overconfident(p: np.ndarray, power: float = 3.0) -> np.ndarray:
    logit = np.log(p / (1.0 - p))
    return 1.0 / (1.0 + np.exp(-power * logit))


def _drifting(seed: int, size: int, drift_from: int) -> tuple[np.ndarray, np.ndarray]:
    p, y = _stable(seed, size)
    p[drift_from:] = _overconfident(p[drift_from:])
    return p, y


# -- inputs at the edges -------------------------------------------------------

EDGE_PROBABILITIES = [
    0.0, 1.0, 5e-324, 1.0 - 2.0**-53, 2.0**-52, 1e-300, 0.1, 0.2, 0.3,
    0.5, 0.9, 1.0 - 1e-12,
]  # fmt: skip


def test_edge_probabilities_give_sklearns_loss_and_calibration() -> None:
    p = np.array(EDGE_PROBABILITIES * 2)
    y = np.array([1] * len(EDGE_PROBABILITIES) + [0] * len(EDGE_PROBABILITIES))
    pipeline = _pipeline()
    pipeline.process(_pairs(p, y))

    page = _scrape(pipeline)
    window = {"model": "m", "window": "1h"}
    assert page.value("driftstream_window_events", **window) == p.size
    assert page.value("driftstream_window_log_loss", **window) == pytest.approx(
        log_loss(y, p, labels=[0, 1]), rel=1e-12
    )
    assert page.value("driftstream_window_brier_score", **window) == pytest.approx(
        brier_score_loss(y, p), rel=1e-12
    )
    assert page.value("driftstream_window_positive_rate", **window) == 0.5
    assert page.value("driftstream_window_mean_probability", **window) == (
        pytest.approx(p.mean(), rel=1e-12)
    )
    assert page.value("driftstream_window_calibration_error", **window) == (
        pytest.approx(_ece(p, y.astype(bool)), rel=1e-12)
    )
    # The entropy clips its logs at eps; scipy does not: they differ by
    # less than p * 700 for the tiniest p.
    assert page.value(
        "driftstream_prediction_window_expected_log_loss", **window
    ) == pytest.approx(_binary_entropy(p).mean(), abs=1e-12)
    assert page.value("driftstream_prediction_window_mean_probability", **window) == (
        pytest.approx(p.mean(), rel=1e-12)
    )


def _multiclass_rows(classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random rows, rows with a tie for the top class, and awkward labels.

    Returns the probability rows (columns in the order the names are sent)
    and each row's label index.
    """
    rng = np.random.default_rng(seed)
    random_rows = rng.dirichlet(np.full(classes, 0.3), 300)
    random_labels = np.array([rng.choice(classes, p=row) for row in random_rows])
    # The label is the least likely class.
    lowest_labels = random_rows[:100].argmin(axis=1)

    tie = np.full(classes, 0.0 if classes == 2 else 0.5 / (classes - 2))
    tie[[classes - 1, 0]] = 0.5 if classes == 2 else 0.25
    tie_rows = np.tile(tie, (40, 1))
    # Half the tied rows are labelled with one tied class, half with the other.
    tie_labels = np.array([classes - 1, 0] * 20)

    rows = np.concatenate([random_rows, random_rows[:100], tie_rows])
    labels = np.concatenate([random_labels, lowest_labels, tie_labels])
    return rows, labels


@pytest.mark.parametrize(
    "names",
    [
        ["yes", "no"],
        # Sorted as strings, c10 comes before c2: the order must not matter.
        [f"c{i}" for i in range(50)],
    ],
    ids=["2 classes", "50 classes"],
)
def test_multiclass_edges_equal_sklearn_and_numpy(names: list[str]) -> None:
    rows, labels = _multiclass_rows(len(names), seed=len(names))
    messages = []
    for index, (row, label) in enumerate(zip(rows, labels, strict=True)):
        event_id = f"mc{next(_IDS)}"
        shares = dict(zip(names, row.tolist(), strict=True))
        messages.append(_prediction(event_id, T0 + index, probabilities=shares))
        messages.append(_outcome(event_id, T0 + index + 1, names[label]))
    pipeline = _pipeline()
    pipeline.process(messages)

    # The same events as the decoder saw them: through JSON, classes sorted.
    ordered = sorted(names)
    matrix = np.array(
        [
            [json.loads(m.payload or b"")["probabilities"][c] for c in ordered]
            for m in messages[::2]
        ]
    )
    truth = np.array([ordered.index(names[label]) for label in labels])
    one_hot = np.eye(len(names))[truth]
    # Ties go to the first tied class in sorted order, as numpy's argmax does.
    hit = matrix.argmax(axis=1) == truth
    top = matrix.max(axis=1)

    page = _scrape(pipeline)
    window = {"model": "m", "window": "24h"}
    assert page.value("driftstream_window_log_loss", **window) == pytest.approx(
        log_loss([ordered[t] for t in truth], matrix, labels=ordered), rel=1e-9
    )
    assert page.value("driftstream_window_brier_score", **window) == pytest.approx(
        np.square(matrix - one_hot).sum(axis=1).mean(), rel=1e-9
    )
    assert page.value("driftstream_window_positive_rate", **window) == pytest.approx(
        accuracy_score(truth, matrix.argmax(axis=1)), rel=1e-12
    )
    assert page.value("driftstream_window_mean_probability", **window) == (
        pytest.approx(top.mean(), rel=1e-12)
    )
    assert page.value("driftstream_window_calibration_error", **window) == (
        pytest.approx(_ece(top, hit), rel=1e-9)
    )
    assert page.value(
        "driftstream_prediction_window_expected_log_loss", **window
    ) == pytest.approx(entropy(matrix, axis=1).mean(), rel=1e-9)
    # The tied rows count as hits exactly when labelled with the first tied class.
    assert hit[-40:].sum() == 20


def test_a_loss_that_never_varies_runs_no_detector_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # p = 0.5 whatever the label: every loss is ln 2.
    size = 3_000
    y = np.arange(size) % 2
    pipeline = _pipeline()
    with caplog.at_level(logging.WARNING, logger="streamer.pipeline"):
        _feed(pipeline, _pairs(np.full(size, 0.5), y, partitions=2), batch=100)

    page = _scrape(pipeline)
    for name in DETECTOR_FAMILIES:
        assert page.series(name) == [], name
    assert page.value("driftstream_reference_events", model="m") == 2_000
    assert page.value("driftstream_baseline_log_loss", model="m") == pytest.approx(
        math.log(2), rel=1e-12
    )
    assert page.value("driftstream_baseline_log_loss_std", model="m") == (
        pytest.approx(0.0, abs=1e-7)
    )
    # Formed from sums, the variance may keep a rounding residue, and a
    # z-score is then exported: it must read 0, not noise over the residue.
    for _, z in page.samples.get("driftstream_window_log_loss_zscore", []):
        assert abs(z) < 1e-6
    assert page.value(
        "driftstream_window_log_loss_ratio", model="m", window="1h"
    ) == pytest.approx(1.0, rel=1e-12)
    assert page.total("driftstream_joined_total") == size
    told = [r for r in caplog.records if "no change detector" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in told]


def test_a_certain_and_wrong_model_is_scored_at_the_clip_without_a_detector() -> None:
    # Every prediction is certain and wrong: each loss is -log(eps) = 36.04.
    size = 1_500
    y = np.arange(size) % 3 == 0
    p = np.where(y, 0.0, 1.0)
    pipeline = _pipeline()
    _feed(pipeline, _pairs(p, y.astype(int)), batch=256)

    page = _scrape(pipeline)
    window = {"model": "m", "window": "1h"}
    assert page.value("driftstream_window_log_loss", **window) == pytest.approx(
        log_loss(y, p, labels=[0, 1]), rel=1e-12
    )
    assert page.value("driftstream_window_log_loss", **window) == pytest.approx(
        MAX_LOSS, rel=1e-12
    )
    assert page.value("driftstream_window_brier_score", **window) == 1.0
    assert page.value("driftstream_window_calibration_error", **window) == 1.0
    assert page.value("driftstream_window_positive_rate", **window) == (
        pytest.approx(y.mean(), rel=1e-12)
    )
    assert page.value("driftstream_baseline_log_loss", model="m") == pytest.approx(
        MAX_LOSS, rel=1e-12
    )
    # From sums, the variance keeps a residue of about 1e-16 * mean**2.
    assert page.value("driftstream_baseline_log_loss_std", model="m") < 1e-5
    for name in DETECTOR_FAMILIES:
        assert page.series(name) == [], name
    assert page.total("driftstream_joined_total") == size


def test_a_model_whose_labels_are_all_positive_is_watched_quietly() -> None:
    rng = np.random.default_rng(21)
    size = 21_000
    p = rng.uniform(0.9, 0.999, size)
    pipeline = _pipeline(_config(drift={"arl0_events": 1e6}))
    _feed(pipeline, _pairs(p, np.ones(size, dtype=int)), batch=3_000)

    page = _scrape(pipeline)
    window = {"model": "m", "window": "24h"}
    assert page.value("driftstream_window_positive_rate", **window) == 1.0
    assert page.value("driftstream_window_calibration_error", **window) == (
        pytest.approx(1.0 - p.mean(), rel=1e-9)
    )
    assert page.value("driftstream_window_brier_score", **window) == pytest.approx(
        brier_score_loss(np.ones(size), p), rel=1e-9
    )
    reference = -np.log(p[:1_000])
    assert page.value("driftstream_baseline_log_loss_std", model="m") == (
        pytest.approx(reference.std(), rel=1e-9)
    )
    statistic = page.value("driftstream_loss_drift_statistic", model="m")
    assert 0.0 <= statistic < 1.0
    assert page.value("driftstream_loss_drift_alarms_total", model="m") == 0


# -- reference edge cases ------------------------------------------------------


def _state_summary(pipeline: Pipeline) -> dict[str, Any]:
    """Per partition and series: window sums, reference and detector."""
    now_ms = pipeline.now_ms()
    summary: dict[str, Any] = {}
    for partition, state in sorted(pipeline.partitions.items()):
        for kind, table in (
            ("joined", state.windows),
            ("predicted", state.prediction_windows),
        ):
            for series, windows in table.items():
                for name, stats in windows.stats(now_ms).items():
                    summary[f"{partition}/{series}/{kind}/{name}"] = (
                        stats.events,
                        stats.loss_sum,
                        stats.loss_squared_sum,
                        stats.extra_sums,
                    )
        for series, drift in state.drift.items():
            detector = drift.detector
            summary[f"{partition}/{series}/drift"] = (
                drift.reference_events,
                tuple(drift.reference_bins.tolist()),
                drift.baseline,
                None
                if detector is None
                else (
                    detector.events,
                    detector.alarms,
                    detector.first_alarm_event,
                    detector.last_alarm_event,
                    detector.threshold,
                    detector.statistic,
                ),
            )
    return summary


def _assert_close(left: Any, right: Any, path: str = "") -> None:
    """Equal, floats up to summation order; ints, None and counts exactly."""
    if isinstance(left, float) and isinstance(right, float):
        assert left == pytest.approx(right, rel=1e-9, abs=1e-9), path
    elif isinstance(left, tuple | list):
        assert isinstance(right, tuple | list) and len(left) == len(right), path
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_close(a, b, f"{path}[{index}]")
    elif hasattr(left, "mean_loss"):
        _assert_close(
            (left.mean_loss, left.std_loss), (right.mean_loss, right.std_loss), path
        )
    else:
        assert left == right, path


@pytest.mark.parametrize("batch", [1, 7, 333, 1_999])
def test_batch_boundaries_change_no_result(batch: int) -> None:
    # Two partitions of 2 500 events each: each reference completes in the
    # middle of a batch, and the tail drifts so the detectors alarm.
    p, y = _drifting(seed=31, size=5_000, drift_from=3_000)
    messages = _pairs(p, y, partitions=2)
    config = _config(drift={"arl0_events": 1e4})
    whole, split = _pipeline(config), _pipeline(config)
    whole.process(messages)
    _feed(split, messages, batch=batch)

    expected, found = _state_summary(whole), _state_summary(split)
    assert sorted(found) == sorted(expected)
    for key in expected:
        _assert_close(found[key], expected[key], key)
    alarms = [v[3][1] for k, v in expected.items() if k.endswith("drift") and v[3]]
    assert len(alarms) == 2 and min(alarms) > 0
    assert split.counters.joined == whole.counters.joined

    # And the pooled baseline is numpy's over each partition's first 1 000.
    losses = _losses(p, y)
    reference = np.concatenate([losses[0::2][:1_000], losses[1::2][:1_000]])
    page = _scrape(split)
    assert page.value("driftstream_baseline_log_loss", model="m") == pytest.approx(
        reference.mean(), rel=1e-12
    )
    assert page.value("driftstream_baseline_log_loss_std", model="m") == (
        pytest.approx(reference.std(), rel=1e-9)
    )


def test_predictions_long_before_their_outcomes() -> None:
    p, y = _stable(seed=41, size=1_200)
    pipeline = _pipeline()
    # Predictions now, their outcomes three hours later, all in one batch.
    pipeline.process(_pairs(p, y, delay_ms=3 * 3_600_000))

    page = _scrape(pipeline)
    # The clock is the newest event, three hours after the predictions: they
    # have left the 1h prediction window, not the 24h one.
    assert page.value("driftstream_prediction_window_events", window="1h") == 0
    assert page.value("driftstream_prediction_window_events", window="24h") == 1_200
    assert page.series("driftstream_prediction_window_psi") == [
        {"model": "m", "version": "", "window": "24h"}
    ]
    assert page.value("driftstream_window_events", window="1h") == 1_200
    losses = _losses(p, y)
    assert page.value("driftstream_baseline_log_loss", model="m") == pytest.approx(
        losses[:1_000].mean(), rel=1e-12
    )
    assert page.value(
        "driftstream_prediction_window_psi", window="24h"
    ) == pytest.approx(_psi(p, p[:500]), rel=1e-9)


def test_outcomes_long_before_their_predictions() -> None:
    p, y = _stable(seed=42, size=1_200)
    pairs = _pairs(p, y, delay_ms=-1_800_000)  # outcomes stamped 30 min earlier
    outcomes, predictions = pairs[1::2], pairs[0::2]
    pipeline = _pipeline()
    # Every outcome first (they wait, outcome_ttl_s is an hour), then the
    # predictions, in small batches.
    _feed(pipeline, [*outcomes, *predictions], batch=97)

    page = _scrape(pipeline)
    assert page.total("driftstream_joined_total") == 1_200
    assert page.value("driftstream_reference_events", model="m") == 1_000
    assert page.value("driftstream_baseline_log_loss", model="m") == pytest.approx(
        _losses(p, y)[:1_000].mean(), rel=1e-12
    )
    assert page.value("driftstream_window_brier_score", window="24h") == (
        pytest.approx(brier_score_loss(y, p), rel=1e-9)
    )


def _with_duplicates(messages: list[fakes.Message]) -> list[fakes.Message]:
    """Each message followed by a later copy (new offset) that differs.

    A repeated prediction says another probability and a repeated outcome the
    other label, so a duplicate that got in would move every number.
    """
    doubled = []
    for message in messages:
        body = json.loads(message.payload or b"")
        if "probability" in body:
            body["probability"] = 1.0 - body["probability"]
        else:
            body["label"] = 1 - body["label"]
        again = fakes.Message(message.topic_name, message.partition_number, _json(body))
        doubled.extend([message, again])
    return _in_order(doubled)


def test_duplicates_enter_neither_the_reference_nor_the_histograms() -> None:
    p, y = _drifting(seed=51, size=4_000, drift_from=2_400)
    messages = _pairs(p, y, partitions=2)
    config = _config(drift={"arl0_events": 1e4})
    clean, doubled = _pipeline(config), _pipeline(config)
    _feed(clean, _in_order(messages), batch=400)
    _feed(doubled, _with_duplicates(messages), batch=800)

    assert _families(_scrape(doubled), WINDOW_FAMILIES + DRIFT_FAMILIES) == (
        _families(_scrape(clean), WINDOW_FAMILIES + DRIFT_FAMILIES)
    )
    assert dict(doubled.counters.duplicates) == {"prediction": 4_000, "outcome": 4_000}
    for partition in (0, 1):
        drift = doubled.partitions[partition].drift[(ModelKey("m", ""), ())]
        first = p[partition::2][:500]
        expected_bins = np.bincount([_bin(float(s)) for s in first], minlength=10)
        assert drift.reference_bins.tolist() == expected_bins.tolist()
        assert drift.reference_events == 1_000
    page = _scrape(doubled)
    assert page.value("driftstream_loss_drift_alarms_total", model="m") > 0


def test_invalid_messages_enter_nothing() -> None:
    p, y = _stable(seed=61, size=1_500)
    valid = _pairs(p, y)
    # Predictions whose outcome turns out invalid: valid predictions, no loss.
    used_up = [_prediction(f"bad{i}", T0 + 10_000 + i, 0.9) for i in range(3)]
    hostile = [
        fakes.Message("predictions", 0, b"{not json"),
        _prediction("x1", T0, 1.5),
        _prediction("x2", T0, None),
        fakes.Message("predictions", 0, _json({"event_id": "x3", "probability": 0.5})),
        _prediction("x4", T0, probabilities={"a": 0.7, "b": 0.7}),
        _prediction("x5", T0, probabilities={"a": 1.0}),
        _outcome("bad0", T0 + 10_500, "maybe"),
        _outcome("bad1", T0 + 10_500, None),
        _outcome("bad2", WALL_MS + 3_600_000, 1),  # in the future
        fakes.Message("outcomes", 0, None),
    ]
    clean, dirty = _pipeline(), _pipeline()
    clean.process(_in_order([*valid, *used_up]))
    mixed: list[fakes.Message] = []
    for index, message in enumerate([*valid, *used_up]):
        mixed.append(message)
        if index % 300 == 0 and hostile:
            mixed.append(hostile.pop())
    mixed.extend(hostile)
    dirty.process(_in_order(mixed))

    assert sum(dirty.counters.invalid.values()) == 10
    assert _families(_scrape(dirty), WINDOW_FAMILIES + DRIFT_FAMILIES) == (
        _families(_scrape(clean), WINDOW_FAMILIES + DRIFT_FAMILIES)
    )
    drift = dirty.partitions[0].drift[(ModelKey("m", ""), ())]
    assert drift.reference_events == 1_000
    assert drift.reference_predictions == 500


def test_redelivery_after_a_restore_counts_nothing_twice() -> None:
    p, y = _drifting(seed=71, size=3_000, drift_from=2_200)
    messages = _pairs(p, y, partitions=2)
    batches = [messages[i : i + 200] for i in range(0, len(messages), 200)]
    config = _config(drift={"arl0_events": 1e4})
    live = _pipeline(config)
    checkpoint: dict[int, bytes] = {}
    for index, batch in enumerate(batches):
        live.process(batch)
        if index == 12:
            for partition in (0, 1):
                exported = live.export_partition(partition)
                assert exported is not None
                checkpoint[partition] = exported[0]

    restored = _pipeline(config)
    for partition, payload in checkpoint.items():
        restored.adopt_checkpoint(partition, payload)
    # The consumer hands out again what the checkpoint already holds.
    for batch in batches[9:]:
        restored.process(batch)

    assert restored.counters.redelivered == sum(len(b) for b in batches[9:13])
    names = WINDOW_FAMILIES + DRIFT_FAMILIES
    assert _families(_scrape(restored), names) == _families(_scrape(live), names)
    page = _scrape(restored)
    assert page.value("driftstream_prediction_window_events", window="24h") == 3_000
    assert page.value("driftstream_reference_events", model="m") == 2_000
    assert page.value("driftstream_loss_drift_alarms_total", model="m") > 0
    first = np.concatenate([p[0::2][:500], p[1::2][:500]])
    assert page.value(
        "driftstream_prediction_window_psi", window="24h"
    ) == pytest.approx(_psi(p, first), rel=1e-9)


# -- checkpoint compatibility --------------------------------------------------


def _recode(payload: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    plain = orjson.loads(zlib.decompress(payload))
    change(plain)
    return zlib.compress(orjson.dumps(plain))


def _as_before_drift(plain: dict[str, Any]) -> None:
    """What a checkpoint of the release before drift detection held."""
    del plain["prediction_windows"]
    del plain["drift"]
    for _, _, _, saved in plain["windows"]:
        for ring in saved["windows"].values():
            ring.pop("extra_sums", None)


def test_a_checkpoint_from_before_drift_restores() -> None:
    """Windows come back; calibration then reads only the events since.

    The old windows carry no calibration sums, so Brier score, calibration
    error, positive rate and mean probability are absent until new events
    arrive, then cover those new events only, while window_events and the
    log loss cover the whole window. The reference is learned afresh.
    """
    p, y = _stable(seed=81, size=1_500)
    config = _config()
    old = _pipeline(config)
    old.process(_pairs(p, y))
    exported = old.export_partition(0)
    assert exported is not None

    restored = _pipeline(config)
    restored.adopt_checkpoint(0, _recode(exported[0], _as_before_drift))
    page = _scrape(restored)
    assert page.value("driftstream_window_events", window="1h") == 1_500
    assert page.value("driftstream_window_log_loss", window="1h") == pytest.approx(
        log_loss(y, p, labels=[0, 1]), rel=1e-9
    )
    for name in DRIFT_FAMILIES:
        assert page.series(name) == [], name

    q, z = _stable(seed=82, size=300)
    restored.process(_pairs(q, z, start_ms=T0 + 2_000))
    page = _scrape(restored)
    window = {"model": "m", "window": "1h"}
    assert page.value("driftstream_window_events", **window) == 1_800
    assert page.value("driftstream_window_log_loss", **window) == pytest.approx(
        log_loss(np.concatenate([y, z]), np.concatenate([p, q]), labels=[0, 1]),
        rel=1e-9,
    )
    assert page.value("driftstream_window_brier_score", **window) == pytest.approx(
        brier_score_loss(z, q), rel=1e-9
    )
    assert page.value("driftstream_window_positive_rate", **window) == (
        pytest.approx(z.mean(), rel=1e-12)
    )
    assert page.value("driftstream_window_calibration_error", **window) == (
        pytest.approx(_ece(q, z.astype(bool)), rel=1e-9)
    )
    assert page.value("driftstream_prediction_window_events", **window) == 300
    assert page.value("driftstream_reference_events", model="m") == 300
    assert page.series("driftstream_window_log_loss_ratio") == []
    assert page.series("driftstream_prediction_window_psi") == []


def _drift_state(plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = plain["drift"][0][3]
    return state


def _ring(plain: dict[str, Any], table: str) -> dict[str, Any]:
    ring: dict[str, Any] = plain[table][0][3]["windows"]["1h"]
    return ring


MALFORMED: dict[str, Callable[[dict[str, Any]], object]] = {
    "drift is null": lambda s: s.update(drift=None),
    "drift is a mapping": lambda s: s.update(drift={"abcd": 1}),
    "series entry too short": lambda s: s.update(drift=[["m", ""]]),
    "series state null": lambda s: s["drift"][0].__setitem__(3, None),
    "series state empty": lambda s: s["drift"][0].__setitem__(3, {}),
    "segment is null": lambda s: s["drift"][0].__setitem__(2, None),
    "reference_events text": lambda s: _drift_state(s).update(reference_events="x"),
    "reference_target null": lambda s: _drift_state(s).update(reference_target=None),
    "loss sum null": lambda s: _drift_state(s).update(reference_loss_sum=None),
    "loss sum negative": lambda s: _drift_state(s).update(reference_loss_sum=-5.0),
    "losses text": lambda s: _drift_state(s).update(reference_losses="x"),
    "losses ragged": lambda s: _drift_state(s).update(reference_losses=[[1], [1, 2]]),
    "bins short": lambda s: _drift_state(s).update(reference_bins=[1, 2]),
    "bins negative": lambda s: _drift_state(s).update(reference_bins=[-1] * 10),
    "bins null": lambda s: _drift_state(s).update(reference_bins=None),
    "detector a list": lambda s: _drift_state(s).update(detector=[1]),
    "detector statistic over threshold": lambda s: _drift_state(s)["detector"].update(
        statistic=1e9
    ),
    "detector threshold negative": lambda s: _drift_state(s)["detector"].update(
        threshold=-1.0
    ),
    "detector without events": lambda s: _drift_state(s)["detector"].pop("events"),
    "prediction_windows null": lambda s: s.update(prediction_windows=None),
    "prediction extra sums misshapen": lambda s: _ring(s, "prediction_windows").update(
        extra_sums=[[1.0]]
    ),
    "joined extra sums text": lambda s: _ring(s, "windows").update(extra_sums="abc"),
}


@pytest.fixture(scope="module")
def drift_checkpoint() -> bytes:
    p, y = _stable(seed=91, size=1_200)
    pipeline = _pipeline()
    pipeline.process(_pairs(p, y))
    exported = pipeline.export_partition(0)
    assert exported is not None
    plain = orjson.loads(zlib.decompress(exported[0]))
    assert _drift_state(plain)["detector"] is not None
    return exported[0]


@pytest.mark.parametrize("change", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_drift_state_is_a_state_format_error(
    drift_checkpoint: bytes, change: Callable[[dict[str, Any]], object]
) -> None:
    pipeline = _pipeline()
    with pytest.raises(StateFormatError, match="checkpoint is malformed"):
        pipeline.adopt_checkpoint(0, _recode(drift_checkpoint, change))
    assert pipeline.partitions == {}


@pytest.mark.parametrize(
    "change",
    [
        lambda s: _drift_state(s).update(reference_bins=[1e30] * 10),
        lambda s: _ring(s, "prediction_windows").update(
            events=[1e30] * len(_ring(s, "prediction_windows")["events"])
        ),
    ],
    ids=["reference bins", "prediction window events"],
)
def test_an_out_of_range_count_is_a_state_format_error(
    drift_checkpoint: bytes, change: Callable[[dict[str, Any]], object]
) -> None:
    with pytest.raises(StateFormatError):
        _pipeline().adopt_checkpoint(0, _recode(drift_checkpoint, change))


def test_configuring_a_baseline_after_the_reference_keeps_a_detector() -> None:
    # The runbook's advice for a learned baseline that was unusually good.
    p, y = _stable(seed=101, size=1_500)
    learned = _pipeline()
    learned.process(_pairs(p, y))
    assert _scrape(learned).series("driftstream_loss_drift_statistic") != []
    exported = learned.export_partition(0)
    assert exported is not None

    configured = _pipeline(
        _config(models={"m": {"baseline_log_loss": 0.6, "baseline_log_loss_std": 0.7}})
    )
    configured.adopt_checkpoint(0, exported[0])
    q, z = _stable(seed=102, size=3_000)
    configured.process(_pairs(q, z, start_ms=T0 + 2_000))

    page = _scrape(configured)
    assert page.value("driftstream_baseline_log_loss", model="m") == 0.6
    # from_state promises the detector is "started again on the next
    # reference"; 3 000 events later there is none, and no reason either.
    drift = configured.partitions[0].drift[(ModelKey("m", ""), ())]
    assert drift.detector is not None, drift.detector_error
    assert drift.detector.baseline == Baseline(0.6, 0.7)
    assert page.series("driftstream_loss_drift_statistic") != []


@pytest.mark.parametrize(("before", "after"), [(["country"], []), ([], ["country"])])
def test_a_checkpoint_under_other_segment_keys_exports_well_formed_series(
    before: list[str], after: list[str]
) -> None:
    p, y = _stable(seed=111, size=200)
    old = _pipeline(_config(segments={"keys": before}))
    old.process(_pairs(p, y, segment=lambda i: {"country": "US" if i % 2 else "DE"}))
    exported = old.export_partition(0)
    assert exported is not None

    new = _pipeline(_config(segments={"keys": after}))
    new.adopt_checkpoint(0, exported[0])
    page = _scrape(new)
    expected = {"model", "version", *after, "window"}
    for name in (*WINDOW_FAMILIES, *DRIFT_FAMILIES[:10]):
        for labels in page.series(name):
            assert set(labels) == expected, (name, labels)
            assert labels["window"] in ("1h", "24h"), (name, labels)


# -- metrics -------------------------------------------------------------------


def test_many_segment_values_keep_the_drift_series_bounded() -> None:
    size = 3_000
    p, y = _stable(seed=121, size=size)
    config = _config(segments={"keys": ["country"], "max_values": 20})
    pipeline = _pipeline(config)
    _feed(
        pipeline,
        _pairs(p, y, segment=lambda i: {"country": f"c{i}"}),
        batch=500,
    )

    page = _scrape(pipeline)
    kept = {f"c{i}" for i in range(20)} | {"other"}
    for name in WINDOW_FAMILIES + DRIFT_FAMILIES:
        countries = {labels["country"] for labels in page.series(name)}
        assert countries <= kept, name
    # 21 series, two windows each.
    assert len(page.series("driftstream_prediction_window_events")) == 42
    assert len(page.series("driftstream_reference_events")) == 21
    assert page.value("driftstream_segment_values_dropped_total", key="country") == (
        size - 20
    )
    # The overflow series is a series like any other, with its own reference.
    other = {"model": "m", "country": "other"}
    assert page.value("driftstream_reference_events", **other) == 1_000
    assert page.value("driftstream_baseline_log_loss", **other) == pytest.approx(
        _losses(p[20:], y[20:])[:1_000].mean(), rel=1e-12
    )


def test_a_quiet_model_leaves_every_window_and_drift_series() -> None:
    quiet_p, quiet_y = _stable(seed=131, size=1_500)
    busy_p, busy_y = _stable(seed=132, size=50)
    pipeline = _pipeline()
    pipeline.process(_pairs(quiet_p, quiet_y, model="quiet"))
    before = _scrape(pipeline)
    for name in DRIFT_FAMILIES:
        assert {"model": "quiet"}.items() <= before.series(name)[0].items(), name

    # Two days later, in event time, only another model speaks.
    pipeline.process(_pairs(busy_p, busy_y, model="busy", start_ms=T0 + 2 * DAY_MS))
    page = _scrape(pipeline)
    for name in WINDOW_FAMILIES + DRIFT_FAMILIES:
        models = {labels["model"] for labels in page.series(name)}
        assert "quiet" not in models, name
    assert {labels["model"] for labels in page.series("driftstream_window_events")} == {
        "busy"
    }
    # Thresholds are configuration, exported per model seen (bounded by
    # metrics.max_models), not per live window: they stay.
    assert page.value("driftstream_threshold_psi", model="quiet") == 0.25

    # The reference is kept while quiet: back, the model is not learning again.
    pipeline.process(
        _pairs(quiet_p[:10], quiet_y[:10], model="quiet", start_ms=T0 + 2 * DAY_MS)
    )
    page = _scrape(pipeline)
    assert page.value("driftstream_reference_events", model="quiet") == 1_000
    assert page.value("driftstream_baseline_log_loss", model="quiet") == (
        pytest.approx(_losses(quiet_p, quiet_y)[:1_000].mean(), rel=1e-12)
    )
    assert page.series("driftstream_loss_drift_statistic") != []


def _every_family_populated() -> Pipeline:
    config = _config(
        drift={"arl0_events": 1e4, "thresholds": {"log_loss": 0.8}},
        segments={"keys": ["country"]},
        models={"intent": {"thresholds": {"psi": None}}},
    )
    pipeline = _pipeline(config)
    p, y = _drifting(seed=141, size=6_000, drift_from=3_300)
    _feed(
        pipeline,
        _pairs(
            p,
            y,
            model="fraud",
            segment=lambda i: {"country": ["US", "DE", None][i % 3]},
        ),
        batch=600,
    )
    rng = np.random.default_rng(142)
    messages = []
    for index, row in enumerate(rng.dirichlet([2.0, 1.0, 0.5], 600)):
        event_id = f"i{next(_IDS)}"
        shares = dict(zip(["a", "b", "c"], row.tolist(), strict=True))
        messages.append(
            _prediction(event_id, T0 + index, model="intent", probabilities=shares)
        )
        messages.append(_outcome(event_id, T0 + index + 5, "abc"[index % 3]))
    pipeline.process(messages)
    return pipeline


def test_the_exposition_passes_promtool_with_every_drift_family() -> None:
    pipeline = _every_family_populated()
    page = _scrape(pipeline)
    for name in (*WINDOW_FAMILIES, *DRIFT_FAMILIES):
        assert page.series(name), name
    assert page.total("driftstream_loss_drift_alarms_total") > 0
    for threshold in ("log_loss", "log_loss_ratio", "psi"):
        assert page.series(f"driftstream_threshold_{threshold}"), threshold

    assert_promtool_accepts(page.text)
    # Every sample line is one series: no name and label set twice.
    lines = [
        line.rsplit(" ", 1)[0]
        for line in page.text.splitlines()
        if line and not line.startswith("#")
    ]
    assert len(lines) == len(set(lines))


# -- thresholds ----------------------------------------------------------------


def test_null_overrides_and_unknown_models_in_the_thresholds() -> None:
    config = _config(
        drift={"thresholds": {"log_loss": 0.6, "psi": 0.2}},
        models={
            "m": {"thresholds": {"log_loss": None, "psi": None, "log_loss_ratio": 2}},
            "ghost": {"thresholds": {"psi": 0.1}},
            "M": {"thresholds": {"log_loss": 9.0}},
        },
    )
    pipeline = _pipeline(config)
    pipeline.process(_pairs([0.3], [1], model="m"))
    pipeline.process(_pairs([0.3], [1], model="n"))

    page = _scrape(pipeline)
    assert page.series("driftstream_threshold_log_loss") == [{"model": "n"}]
    assert page.value("driftstream_threshold_log_loss", model="n") == 0.6
    assert page.series("driftstream_threshold_psi") == [{"model": "n"}]
    assert page.value("driftstream_threshold_log_loss_ratio", model="m") == 2.0
    assert page.value("driftstream_threshold_log_loss_ratio", model="n") == 1.25
    for name in page.samples:
        if name.startswith("driftstream_threshold_"):
            models = {labels["model"] for labels in page.series(name)}
            assert models <= {"m", "n"}, name


def test_a_null_thresholds_section_is_refused_with_its_key() -> None:
    with pytest.raises(ValueError, match=r"models\.m\.thresholds"):
        _config(models={"m": {"thresholds": None}})


# -- performance sanity --------------------------------------------------------


def test_a_batch_where_every_event_alarms_completes_and_counts_each() -> None:
    p, y = _stable(seed=151, size=1_000)
    pipeline = _pipeline(_config(drift={"arl0_events": 1e4}))
    pipeline.process(_pairs(p, y))
    detector = pipeline.partitions[0].drift[(ModelKey("m", ""), ())].detector
    assert detector is not None

    # Then 50 000 certain-and-wrong events, in one batch.
    size = 50_000
    pipeline.process(
        _pairs(np.zeros(size), np.ones(size, dtype=int), start_ms=T0 + 5_000)
    )

    # The per-event recursion, written out, with the detector's parameters.
    baseline = detector.baseline
    statistic, alarms = 0.0, 0
    increment = (MAX_LOSS - baseline.mean_loss) / baseline.std_loss
    for _ in range(size):
        statistic = max(0.0, statistic + increment - detector.shift_std / 2)
        if statistic > detector.threshold:
            alarms, statistic = alarms + 1, 0.0
    assert alarms == size
    page = _scrape(pipeline)
    assert page.value("driftstream_loss_drift_alarms_total", model="m") == alarms
    assert page.value("driftstream_loss_drift_statistic", model="m") == 0.0


# -- timestamps ----------------------------------------------------------------


@pytest.mark.parametrize("ahead_ms", [10 * 60_000, 2 * DAY_MS])
def test_a_prediction_stamped_ahead_does_not_blind_the_prediction_windows(
    ahead_ms: int,
) -> None:
    pipeline = Pipeline(
        Config.model_validate({"windows": {"clock": "wall"}}),
        wall_clock_ms=lambda: WALL_MS,
    )
    pipeline.process([_prediction("skewed", WALL_MS + ahead_ms, 0.5)])
    p = np.random.default_rng(161).random(20)
    pipeline.process(
        [_prediction(f"ok{i}", WALL_MS - 1_000, float(q)) for i, q in enumerate(p)]
    )

    page = _scrape(pipeline)
    for window in ("5m", "1h", "24h"):
        assert page.value("driftstream_prediction_window_events", window=window) >= 20
    assert sum(pipeline.counters.late_predictions.values()) == 0


def test_a_prediction_older_than_the_ring_is_counted_late_not_windowed() -> None:
    pipeline = _pipeline()
    p = np.random.default_rng(171).random(10)
    pipeline.process(
        [_prediction(f"n{i}", T0 + 3 * DAY_MS, float(q)) for i, q in enumerate(p)]
    )
    pipeline.process([_prediction("old", T0, 0.99)])

    page = _scrape(pipeline)
    assert pipeline.counters.late_predictions == {"1h": 1, "24h": 1}
    assert page.value("driftstream_late_predictions_total", window="24h") == 1
    assert page.value("driftstream_prediction_window_events", window="24h") == 10
    assert page.value(
        "driftstream_prediction_window_mean_probability", window="24h"
    ) == pytest.approx(p.mean(), rel=1e-12)
