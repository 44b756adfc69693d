"""The drift metric families: read from the pipeline at each scrape.

Per window of joined events: ratio and z-score against the series' baseline,
Brier score, calibration error, positive rate and mean probability. Per window
of predictions (label-free): events, expected log loss, mean probability and
PSI against the reference histogram. Per series: the baseline, the reference
size, the change detector's statistic and alarms. Per model: the thresholds
from the configuration, so that one alert rule serves every model.

Only series with a live window are exported, so a model that goes quiet
leaves the output with its windows, drift series included.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streamer.columns import calibration_sums, prediction_sums
from streamer.config import THRESHOLD_NAMES
from streamer.drift import Baseline, psi, ratio, z_score
from streamer.pipeline import Pipeline, WindowRow
from streamer.reference import SeriesDrift, pooled_baseline
from streamer.state import SeriesKey

PREFIX = "driftstream_"
MODEL_LABELS = ("model", "version")


def drift_families(
    pipeline: Pipeline, joined_rows: list[WindowRow]
) -> Iterator[Metric]:
    """Every drift family, given the joined window rows just exported."""
    config = pipeline.config
    segment_keys = list(config.segments.keys)
    series_labels = [*MODEL_LABELS, *segment_keys]
    window_labels = [*series_labels, "window"]
    min_events = config.windows.min_events
    prediction_rows = pipeline.prediction_window_rows()
    with pipeline.lock:
        drift = pipeline.series_drift()
        baselines = {
            series: pooled_baseline(states) for series, states in drift.items()
        }
        references = {
            series: _reference_histogram(states) for series, states in drift.items()
        }
        detectors = {series: _detector(states) for series, states in drift.items()}
        models = sorted({model.model for model in pipeline.known_models})

    yield from _joined(joined_rows, baselines, window_labels, min_events)
    yield from _predictions(prediction_rows, references, window_labels, min_events)
    live = {(row.model, row.segment) for row in [*joined_rows, *prediction_rows]}
    yield from _series(live, baselines, detectors, series_labels)
    yield from _thresholds(pipeline, models)


JOINED_FAMILIES = {
    "window_log_loss_ratio": "Window mean log loss over the baseline's.",
    "window_log_loss_zscore": (
        "Standard errors the window mean log loss is above the baseline."
    ),
    "window_brier_score": "Mean Brier score of the window's joined events.",
    "window_calibration_error": (
        "Expected calibration error of the window's joined events "
        "(10 equal-width bins)."
    ),
    "window_positive_rate": (
        "Share of joined events whose label is the positive class "
        "(multiclass: the top class, i.e. accuracy)."
    ),
    "window_mean_probability": (
        "Mean scored probability of the joined events (binary: p; "
        "multiclass: the top class's)."
    ),
}
PREDICTION_FAMILIES = {
    "prediction_window_events": (
        "Predictions in the rolling window (event time of the prediction)."
    ),
    "prediction_window_expected_log_loss": (
        "Mean entropy of the window's predictions (nats): the log loss the "
        "model expects of itself; needs no labels."
    ),
    "prediction_window_mean_probability": (
        "Mean scored probability of the window's predictions."
    ),
    "prediction_window_psi": (
        "PSI of the window's predicted probabilities against the reference."
    ),
}
SERIES_FAMILIES = {
    "baseline_log_loss": (
        "Baseline mean log loss (nats): configured, or learned from the reference."
    ),
    "baseline_log_loss_std": (
        "Baseline standard deviation of the per-event log loss (nats)."
    ),
    "reference_events": (
        "Joined events in the learned reference so far (each partition stops "
        "at drift.reference_events)."
    ),
    "loss_drift_statistic": (
        "Change detector (CUSUM) statistic over its threshold, the largest of "
        "this process's partitions: 1 or more is an alarm."
    ),
}


def _joined(
    rows: list[WindowRow],
    baselines: dict[SeriesKey, tuple[Baseline | None, int]],
    labels: list[str],
    min_events: int,
) -> Iterator[Metric]:
    families = _gauges(JOINED_FAMILIES, labels)
    for row in rows:
        stats = row.stats
        if stats.events < min_events or not stats.extra_sums:
            continue
        calibration = calibration_sums(stats.extra_sums)
        readings = {
            "window_brier_score": calibration.brier_score,
            "window_calibration_error": calibration.calibration_error,
            "window_positive_rate": calibration.positive_rate,
            "window_mean_probability": calibration.mean_probability,
        }
        baseline = baselines.get((row.model, row.segment), (None, 0))[0]
        if baseline is not None:
            readings["window_log_loss_ratio"] = ratio(stats.mean_loss, baseline)
            readings["window_log_loss_zscore"] = z_score(
                stats.events, stats.loss_sum, baseline
            )
        _add(families, _window_values(row), readings)
    yield from families.values()


def _predictions(
    rows: list[WindowRow],
    references: dict[SeriesKey, tuple[int, ...] | None],
    labels: list[str],
    min_events: int,
) -> Iterator[Metric]:
    families = _gauges(PREDICTION_FAMILIES, labels)
    for row in rows:
        readings: dict[str, float | None] = {
            "prediction_window_events": row.stats.events
        }
        if row.stats.events >= min_events:
            sums = prediction_sums(row.stats.loss_sum, row.stats.extra_sums)
            reference = references.get((row.model, row.segment))
            readings["prediction_window_expected_log_loss"] = sums.expected_log_loss
            readings["prediction_window_mean_probability"] = sums.mean_probability
            readings["prediction_window_psi"] = (
                None if reference is None else psi(sums.bin_counts, reference)
            )
        _add(families, _window_values(row), readings)
    yield from families.values()


def _series(
    live: set[SeriesKey],
    baselines: dict[SeriesKey, tuple[Baseline | None, int]],
    detectors: dict[SeriesKey, tuple[float | None, int]],
    labels: list[str],
) -> Iterator[Metric]:
    families = _gauges(SERIES_FAMILIES, labels)
    alarms = CounterMetricFamily(
        PREFIX + "loss_drift_alarms",
        "Alarms of the change detector on the per-event log loss.",
        labels=labels,
    )
    for series in sorted(live & set(baselines), key=_series_sort):
        values = [series[0].model, series[0].version, *series[1]]
        baseline, events = baselines[series]
        detector_ratio, alarm_count = detectors[series]
        _add(
            families,
            values,
            {
                "reference_events": events,
                "baseline_log_loss": None if baseline is None else baseline.mean_loss,
                "baseline_log_loss_std": None
                if baseline is None
                else baseline.std_loss,
                "loss_drift_statistic": detector_ratio,
            },
        )
        if detector_ratio is not None:
            alarms.add_metric(values, alarm_count)
    yield from (*families.values(), alarms)


def _gauges(
    documented: dict[str, str], labels: list[str]
) -> dict[str, GaugeMetricFamily]:
    return {
        name: GaugeMetricFamily(PREFIX + name, text, labels=labels)
        for name, text in documented.items()
    }


def _add(
    families: dict[str, GaugeMetricFamily],
    values: list[str],
    readings: Mapping[str, float | None],
) -> None:
    """Add each reading that exists to its family."""
    for name, value in readings.items():
        if value is not None:
            families[name].add_metric(values, value)


def _window_values(row: WindowRow) -> list[str]:
    return [row.model.model, row.model.version, *row.segment, row.window]


def _thresholds(pipeline: Pipeline, models: list[str]) -> Iterator[Metric]:
    families = {
        name: GaugeMetricFamily(
            PREFIX + "threshold_" + name,
            f"Alert threshold {name} of the model, from the configuration "
            "(models.<name>.thresholds, else drift.thresholds).",
            labels=["model"],
        )
        for name in THRESHOLD_NAMES
    }
    for model in models:
        for name, value in pipeline.config.thresholds_for(model).items():
            families[name].add_metric([model], value)
    yield from families.values()


def _reference_histogram(states: list[SeriesDrift]) -> tuple[int, ...] | None:
    complete = [drift.reference_bins for drift in states if drift.reference_complete]
    if not complete:
        return None
    return tuple(np.sum(complete, axis=0).tolist())


def _detector(states: list[SeriesDrift]) -> tuple[float | None, int]:
    ratios = [r for r in (drift.drift_ratio() for drift in states) if r is not None]
    alarms = sum(drift.detector.alarms for drift in states if drift.detector)
    return (max(ratios) if ratios else None), alarms


def _series_sort(series: SeriesKey) -> tuple[str, str, tuple[str, ...]]:
    return (series[0].model, series[0].version, series[1])
