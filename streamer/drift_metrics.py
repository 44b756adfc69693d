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

from collections.abc import Iterator

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


def _joined(
    rows: list[WindowRow],
    baselines: dict[SeriesKey, tuple[Baseline | None, int]],
    labels: list[str],
    min_events: int,
) -> Iterator[Metric]:
    families = {
        name: GaugeMetricFamily(PREFIX + name, text, labels=labels)
        for name, text in (
            ("window_log_loss_ratio", "Window mean log loss over the baseline's."),
            (
                "window_log_loss_zscore",
                "Standard errors the window mean log loss is above the baseline.",
            ),
            ("window_brier_score", "Mean Brier score of the window's joined events."),
            (
                "window_calibration_error",
                "Expected calibration error of the window's joined events "
                "(10 equal-width bins).",
            ),
            (
                "window_positive_rate",
                "Share of joined events whose label is the positive class "
                "(multiclass: the top class, i.e. accuracy).",
            ),
            (
                "window_mean_probability",
                "Mean scored probability of the joined events (binary: p; "
                "multiclass: the top class's).",
            ),
        )
    }
    for row in rows:
        stats = row.stats
        if stats.events < min_events or not stats.extra_sums:
            continue
        values = [row.model.model, row.model.version, *row.segment, row.window]
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
        for name, value in readings.items():
            if value is not None:
                families[name].add_metric(values, value)
    yield from families.values()


def _predictions(
    rows: list[WindowRow],
    references: dict[SeriesKey, tuple[int, ...] | None],
    labels: list[str],
    min_events: int,
) -> Iterator[Metric]:
    events = GaugeMetricFamily(
        PREFIX + "prediction_window_events",
        "Predictions in the rolling window (event time of the prediction).",
        labels=labels,
    )
    expected = GaugeMetricFamily(
        PREFIX + "prediction_window_expected_log_loss",
        "Mean entropy of the window's predictions (nats): the log loss the "
        "model expects of itself; needs no labels.",
        labels=labels,
    )
    mean_probability = GaugeMetricFamily(
        PREFIX + "prediction_window_mean_probability",
        "Mean scored probability of the window's predictions.",
        labels=labels,
    )
    stability = GaugeMetricFamily(
        PREFIX + "prediction_window_psi",
        "PSI of the window's predicted probabilities against the reference.",
        labels=labels,
    )
    for row in rows:
        values = [row.model.model, row.model.version, *row.segment, row.window]
        events.add_metric(values, row.stats.events)
        if row.stats.events < min_events:
            continue
        sums = prediction_sums(row.stats.loss_sum, row.stats.extra_sums)
        expected.add_metric(values, sums.expected_log_loss or 0.0)
        mean_probability.add_metric(values, sums.mean_probability or 0.0)
        reference = references.get((row.model, row.segment))
        index = psi(sums.bin_counts, reference) if reference is not None else None
        if index is not None:
            stability.add_metric(values, index)
    yield from (events, expected, mean_probability, stability)


def _series(
    live: set[SeriesKey],
    baselines: dict[SeriesKey, tuple[Baseline | None, int]],
    detectors: dict[SeriesKey, tuple[float | None, int]],
    labels: list[str],
) -> Iterator[Metric]:
    mean = GaugeMetricFamily(
        PREFIX + "baseline_log_loss",
        "Baseline mean log loss (nats): configured, or learned from the reference.",
        labels=labels,
    )
    std = GaugeMetricFamily(
        PREFIX + "baseline_log_loss_std",
        "Baseline standard deviation of the per-event log loss (nats).",
        labels=labels,
    )
    reference = GaugeMetricFamily(
        PREFIX + "reference_events",
        "Joined events in the learned reference so far (each partition stops "
        "at drift.reference_events).",
        labels=labels,
    )
    statistic = GaugeMetricFamily(
        PREFIX + "loss_drift_statistic",
        "Change detector (CUSUM) statistic over its threshold, the largest of "
        "this process's partitions: 1 or more is an alarm.",
        labels=labels,
    )
    alarms = CounterMetricFamily(
        PREFIX + "loss_drift_alarms",
        "Alarms of the change detector on the per-event log loss.",
        labels=labels,
    )
    for series in sorted(live & set(baselines), key=_series_sort):
        values = [series[0].model, series[0].version, *series[1]]
        baseline, events = baselines[series]
        reference.add_metric(values, events)
        if baseline is not None:
            mean.add_metric(values, baseline.mean_loss)
            std.add_metric(values, baseline.std_loss)
        detector_ratio, alarm_count = detectors[series]
        if detector_ratio is not None:
            statistic.add_metric(values, detector_ratio)
            alarms.add_metric(values, alarm_count)
    yield from (mean, std, reference, statistic, alarms)


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
