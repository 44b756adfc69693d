"""A series' reference, baseline and detector, and their state."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from streamer.drift import Baseline
from streamer.reference import DriftSettings, SeriesDrift, pooled_baseline

SETTINGS = DriftSettings(
    reference_events=1_000,
    reference_predictions=100,
    arl0_events=1e4,
    shift=0.5,
    calibration_events=100_000,
)


def _losses(seed: int, count: int, scale: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).exponential(scale, count)


def _round_trip(drift: SeriesDrift, settings: DriftSettings = SETTINGS) -> SeriesDrift:
    plain = orjson.loads(orjson.dumps(drift.to_state()))
    return SeriesDrift.from_state(plain, settings, drift.configured)


def test_the_baseline_is_the_first_reference_events_losses() -> None:
    losses = _losses(1, 1_500)
    drift = SeriesDrift(SETTINGS, configured=None)
    for chunk in np.array_split(losses, 7):
        drift.observe_losses(chunk)

    reference = losses[:1_000]
    assert drift.baseline is not None
    assert drift.baseline.mean_loss == pytest.approx(reference.mean(), rel=1e-12)
    assert drift.baseline.std_loss == pytest.approx(reference.std(), rel=1e-9)
    assert drift.detector is not None and drift.detector.events == 500


@pytest.mark.parametrize("split", [0, 400, 999, 1_000, 1_700])
def test_state_round_trips_at_any_point(split: int) -> None:
    losses = np.concatenate([_losses(2, 2_000), _losses(3, 1_000, scale=1.5)])
    bins = np.random.default_rng(4).integers(0, 10, 300)
    # The same batches without the round trip: sums in the same order.
    whole = SeriesDrift(SETTINGS, configured=None)
    for part in (slice(None, split), slice(split, None)):
        whole.observe_losses(losses[part])
    whole.observe_predictions(bins[: split // 10])
    whole.observe_predictions(bins[split // 10 :])

    first = SeriesDrift(SETTINGS, configured=None)
    first.observe_losses(losses[:split])
    first.observe_predictions(bins[: split // 10])
    second = _round_trip(first)
    second.observe_losses(losses[split:])
    second.observe_predictions(bins[split // 10 :])

    assert second.to_state() == whole.to_state()
    assert whole.detector is not None and whole.detector.alarms > 0
    assert (
        second.reference_bins.tolist() == np.bincount(bins[:100], minlength=10).tolist()
    )


def test_a_completed_reference_is_not_learned_again_under_new_settings() -> None:
    drift = SeriesDrift(SETTINGS, configured=None)
    drift.observe_losses(_losses(5, 1_200))
    larger = DriftSettings(5_000, 100, 1e4, 0.5, 100_000)

    restored = _round_trip(drift, larger)
    assert not restored.learning
    assert restored.baseline == drift.baseline
    assert restored.detector is not None
    assert restored.observe_losses(_losses(6, 10)) == 0
    assert restored.detector.events == 210


def test_a_changed_configured_baseline_starts_the_detector_again() -> None:
    drift = SeriesDrift(SETTINGS, configured=Baseline(0.5, 0.5))
    drift.observe_losses(_losses(7, 1_100))
    assert drift.detector is not None
    plain = orjson.loads(orjson.dumps(drift.to_state()))

    same = SeriesDrift.from_state(plain, SETTINGS, Baseline(0.5, 0.5))
    changed = SeriesDrift.from_state(plain, SETTINGS, Baseline(0.4, 0.5))
    assert same.detector is not None
    assert changed.detector is None


def test_a_reference_that_never_varies_runs_no_detector() -> None:
    drift = SeriesDrift(SETTINGS, configured=None)
    drift.observe_losses(np.full(1_000, 0.3))
    assert drift.detector is None
    # Formed from sums, the variance may keep a rounding residue; either
    # way the reason is kept.
    assert drift.detector_error is not None


def test_pooled_baseline_adds_the_partitions_sums() -> None:
    parts = [SeriesDrift(SETTINGS, configured=None) for _ in range(3)]
    losses = [_losses(10 + i, 1_000 + 200 * i) for i in range(3)]
    for drift, part in zip(parts, losses, strict=True):
        drift.observe_losses(part)
    learning = SeriesDrift(SETTINGS, configured=None)
    learning.observe_losses(_losses(20, 10))

    baseline, events = pooled_baseline([*parts, learning])
    reference = np.concatenate([part[:1_000] for part in losses])
    assert baseline is not None
    assert baseline.mean_loss == pytest.approx(reference.mean(), rel=1e-12)
    assert baseline.std_loss == pytest.approx(reference.std(), rel=1e-9)
    assert events == 3_010


def test_a_small_reference_of_a_skewed_loss_still_runs_a_detector() -> None:
    # A rare-positive model: mean loss far below its deviation, so 20 % of the
    # mean is a shift smaller than what 1 000 events can tell apart.
    rng = np.random.default_rng(12)
    p = rng.beta(0.3, 3.0, 1_000)
    y = rng.random(1_000) < p
    losses = -np.log(np.where(y, p, 1.0 - p).clip(1e-15, 1.0))
    drift = SeriesDrift(dataclasses.replace(SETTINGS, shift=0.2), configured=None)
    drift.observe_losses(losses)

    assert drift.detector_error is None
    assert drift.detector is not None
    assert drift.detector.shift_std == pytest.approx(6 / np.sqrt(1_000))
