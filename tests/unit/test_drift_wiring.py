"""Drift through the pipeline and the collector, against independent references.

Messages in, /metrics text out; every number is recomputed here with
scikit-learn, scipy or plain numpy from the events sent.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy.stats import entropy
from sklearn.metrics import accuracy_score, brier_score_loss

from streamer.config import Config
from streamer.loss import DEFAULT_EPS
from streamer.metrics import ConsumerHealth, PipelineCollector
from streamer.pipeline import Pipeline
from tests import fakes
from tests.scrape import Scrape, parse

T0 = 1_764_583_200_000
_IDS = itertools.count()
EDGES = np.linspace(0.0, 1.0, 11)


def _config(**drift: object) -> Config:
    return Config.model_validate(
        {
            "windows": {"lengths": ["1h", "24h"], "clock": "event"},
            "drift": {"reference_events": 1_000, "reference_predictions": 500, **drift},
        }
    )


def _scrape(pipeline: Pipeline) -> Scrape:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline, ConsumerHealth()))
    return parse(generate_latest(registry).decode())


def _send_binary(
    pipeline: Pipeline,
    p: np.ndarray,
    y: np.ndarray,
    *,
    model: str = "m",
    start_ms: int = T0,
    partitions: int = 1,
    batch: int = 250,
) -> None:
    messages = []
    for index, (probability, label) in enumerate(zip(p, y, strict=True)):
        event_id = f"e{next(_IDS)}"
        ts = start_ms + index
        partition = index % partitions
        prediction = {"event_id": event_id, "model": model, "timestamp": ts,
                      "probability": float(probability)}  # fmt: skip
        outcome = {"event_id": event_id, "label": int(label), "timestamp": ts + 500}
        messages.append(fakes.Message("predictions", partition, _json(prediction)))
        messages.append(fakes.Message("outcomes", partition, _json(outcome)))
    for start in range(0, len(messages), batch):
        pipeline.process(messages[start : start + batch])


def _json(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


def _losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.where(y == 1, p, 1.0 - p), DEFAULT_EPS, 1.0 - DEFAULT_EPS)
    return -np.log(clipped)


def _ece(score: np.ndarray, hit: np.ndarray) -> float:
    bins = np.clip(np.searchsorted(EDGES[1:-1], score, side="left"), 0, 9)
    total = 0.0
    for b in range(10):
        inside = bins == b
        if inside.any():
            total += (
                inside.sum()
                / score.size
                * abs(score[inside].mean() - hit[inside].mean())
            )
    return total


def test_calibration_windows_equal_sklearn_and_numpy() -> None:
    rng = np.random.default_rng(7)
    p = rng.beta(1.0, 3.0, 3_000)
    y = (rng.random(3_000) < p).astype(int)
    pipeline = Pipeline(_config())
    _send_binary(pipeline, p, y, partitions=3)

    page = _scrape(pipeline)
    labels = {"model": "m", "window": "1h"}
    assert page.value("driftstream_window_brier_score", **labels) == pytest.approx(
        brier_score_loss(y, p), rel=1e-9
    )
    assert page.value("driftstream_window_positive_rate", **labels) == pytest.approx(
        y.mean(), rel=1e-12
    )
    assert page.value("driftstream_window_mean_probability", **labels) == pytest.approx(
        p.mean(), rel=1e-9
    )
    assert page.value(
        "driftstream_window_calibration_error", **labels
    ) == pytest.approx(_ece(p, y), rel=1e-9)


def test_multiclass_brier_accuracy_and_expected_loss() -> None:
    rng = np.random.default_rng(11)
    classes = ["a", "b", "c"]
    probabilities = rng.dirichlet([2.0, 1.0, 0.5], 800)
    labels = np.array([rng.choice(3, p=row) for row in probabilities])
    messages = []
    for index, (row, label) in enumerate(zip(probabilities, labels, strict=True)):
        event_id = f"mc{next(_IDS)}"
        ts = T0 + index
        shares = dict(zip(classes, row.tolist(), strict=True))
        body = {"event_id": event_id, "model": "intent", "timestamp": ts,
                "probabilities": shares}  # fmt: skip
        messages.append(fakes.Message("predictions", 0, _json(body)))
        outcome = {"event_id": event_id, "label": classes[label], "timestamp": ts + 1}
        messages.append(fakes.Message("outcomes", 0, _json(outcome)))
    pipeline = Pipeline(_config())
    pipeline.process(messages)

    # The decoder renormalises nothing, but rounds through JSON: read back.
    sent = np.array(
        [list(json.loads(m.payload)["probabilities"].values()) for m in messages[::2]]
    )
    one_hot = np.eye(3)[labels]
    page = _scrape(pipeline)
    window = {"model": "intent", "window": "24h"}
    assert page.value("driftstream_window_brier_score", **window) == pytest.approx(
        np.square(sent - one_hot).sum(axis=1).mean(), rel=1e-9
    )
    assert page.value("driftstream_window_positive_rate", **window) == pytest.approx(
        accuracy_score(labels, sent.argmax(axis=1)), rel=1e-12
    )
    assert page.value(
        "driftstream_prediction_window_expected_log_loss", **window
    ) == pytest.approx(entropy(sent, axis=1).mean(), rel=1e-9)
    assert page.value("driftstream_prediction_window_events", **window) == 800


def test_baseline_zscore_and_psi_from_the_reference() -> None:
    rng = np.random.default_rng(3)
    reference_p = rng.beta(1.0, 3.0, 1_000)
    reference_y = (rng.random(1_000) < reference_p).astype(int)
    later_p = rng.beta(2.0, 2.0, 600)
    later_y = (rng.random(600) < later_p).astype(int)
    pipeline = Pipeline(_config())
    _send_binary(pipeline, reference_p, reference_y, start_ms=T0)
    # The later events fall in the last hour only; the 24h window holds both.
    _send_binary(pipeline, later_p, later_y, start_ms=T0 + 5 * 3_600_000)

    page = _scrape(pipeline)
    losses = _losses(reference_p, reference_y)
    assert page.value("driftstream_baseline_log_loss", model="m") == pytest.approx(
        losses.mean(), rel=1e-9
    )
    std = page.value("driftstream_baseline_log_loss_std", model="m")
    assert std == pytest.approx(losses.std(), rel=1e-9)
    assert page.value("driftstream_reference_events", model="m") == 1_000

    later = _losses(later_p, later_y)
    window = {"model": "m", "window": "1h"}
    assert page.value("driftstream_window_log_loss_ratio", **window) == pytest.approx(
        later.mean() / losses.mean(), rel=1e-9
    )
    assert page.value("driftstream_window_log_loss_zscore", **window) == pytest.approx(
        (later.mean() - losses.mean()) / (std / math.sqrt(600)), rel=1e-9
    )

    reference_share = np.histogram(reference_p[:500], bins=EDGES)[0] / 500
    current_share = np.histogram(later_p, bins=EDGES)[0] / 600
    reference_share = np.maximum(reference_share, 1e-4)
    current_share = np.maximum(current_share, 1e-4)
    expected_psi = np.sum(
        (current_share - reference_share) * np.log(current_share / reference_share)
    )
    assert page.value("driftstream_prediction_window_psi", **window) == pytest.approx(
        expected_psi, rel=1e-9
    )
    assert expected_psi > 0.25  # the shift is one the default threshold sees


def test_change_detector_stays_quiet_when_stable_and_alarms_on_drift() -> None:
    rng = np.random.default_rng(5)
    pipeline = Pipeline(_config(arl0_events=1e5))
    p = rng.beta(1.0, 3.0, 21_000)
    y = (rng.random(21_000) < p).astype(int)
    _send_binary(pipeline, p, y, model="stable", batch=2_000)
    drift_p = rng.beta(1.0, 3.0, 21_000)
    drift_y = (rng.random(21_000) < drift_p).astype(int)
    # After the reference, the model turns overconfident: log-odds tripled.
    tail = slice(5_000, None)
    logit = np.log(drift_p[tail] / (1.0 - drift_p[tail]))
    drift_p[tail] = 1.0 / (1.0 + np.exp(-3.0 * logit))
    _send_binary(pipeline, drift_p, drift_y, model="drifting", batch=2_000)

    page = _scrape(pipeline)
    assert page.value("driftstream_loss_drift_alarms_total", model="stable") == 0
    assert page.value("driftstream_loss_drift_statistic", model="stable") < 1
    assert page.value("driftstream_loss_drift_alarms_total", model="drifting") > 0


def test_thresholds_exported_per_model_with_overrides() -> None:
    config = Config.model_validate(
        {
            "windows": {"clock": "event"},
            "models": {"m": {"thresholds": {"log_loss": 0.4, "psi": None}}},
            "drift": {"thresholds": {"log_loss_ratio": 1.5}},
        }
    )
    pipeline = Pipeline(config)
    _send_binary(pipeline, np.array([0.3]), np.array([1]), model="m")
    _send_binary(pipeline, np.array([0.3]), np.array([1]), model="other")

    page = _scrape(pipeline)
    assert page.value("driftstream_threshold_log_loss", model="m") == 0.4
    assert page.series("driftstream_threshold_log_loss") == [{"model": "m"}]
    assert page.series("driftstream_threshold_psi") == [{"model": "other"}]
    assert page.value("driftstream_threshold_log_loss_ratio", model="m") == 1.5
    assert page.value("driftstream_threshold_label_coverage", model="other") == 0.5


def test_a_configured_baseline_replaces_the_learned_one() -> None:
    config = Config.model_validate(
        {
            "windows": {"clock": "event"},
            "models": {"m": {"baseline_log_loss": 0.5, "baseline_log_loss_std": 0.25}},
        }
    )
    pipeline = Pipeline(config)
    _send_binary(pipeline, np.array([0.5, 0.5]), np.array([1, 0]))

    page = _scrape(pipeline)
    assert page.value("driftstream_baseline_log_loss", model="m") == 0.5
    assert page.value("driftstream_window_log_loss_zscore", model="m", window="1h") == (
        pytest.approx((math.log(2) - 0.5) / (0.25 / math.sqrt(2)), rel=1e-12)
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"baseline_log_loss": 0.5}, "set baseline_log_loss and baseline_log_loss_std"),
        ({"thresholds": {"psi_max": 0.3}}, r"unknown thresholds \['psi_max'\]"),
        ({"thresholds": {"psi": -1}}, "threshold psi must be > 0"),
    ],
)
def test_bad_model_drift_settings_are_refused(
    model: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Config.model_validate({"models": {"m": model}})


def test_drift_state_survives_a_checkpoint() -> None:
    rng = np.random.default_rng(9)
    p = rng.beta(1.0, 3.0, 4_000)
    y = (rng.random(4_000) < p).astype(int)
    config = _config(arl0_events=1e4)
    live = Pipeline(config)
    _send_binary(live, p[:2_500], y[:2_500], partitions=2)
    restored = Pipeline(config)
    for partition in (0, 1):
        exported = live.export_partition(partition)
        assert exported is not None
        restored.adopt_checkpoint(partition, exported[0])

    # Both go on with the same events; everything they export agrees.
    for pipeline in (live, restored):
        _send_binary(pipeline, p[2_500:], y[2_500:], partitions=2)
    # Counters are per process, not per partition: not in a checkpoint.
    kept = ("window", "prediction_window", "baseline", "reference", "loss_drift")
    drift_names = [
        name
        for name in _scrape(live).samples
        if name.removeprefix("driftstream_").startswith(kept)
    ]
    assert "driftstream_loss_drift_statistic" in drift_names
    assert "driftstream_prediction_window_psi" in drift_names
    for name in drift_names:
        assert sorted(map(_key, _scrape(live).samples[name])) == sorted(
            map(_key, _scrape(restored).samples[name])
        ), name


def _key(sample: tuple[dict[str, str], float]) -> tuple[tuple[str, str], ...]:
    labels, value = sample
    return (*sorted(labels.items()), ("value", repr(value)))
