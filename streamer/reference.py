"""The drift state of one series in one partition: reference, baseline, detector.

A series (model, version, segment values) starts by learning. Its first
``reference_events`` joined losses become its reference: their mean and
standard deviation are the baseline (unless one is configured for the model),
and the detector's threshold is calibrated on them for the target number of
events between false alarms (:func:`~streamer.drift.calibrate_threshold`).
Every later loss goes to the change detector, a
:class:`~streamer.drift.LossCusum`. Independently, its first
``reference_predictions`` predictions make the probability histogram that
PSI compares later windows with.

Like everything kept per partition, this moves with the partition
(:meth:`SeriesDrift.to_state`). It is pure arithmetic: no clock, no I/O, and
the calibration's randomness comes from a fixed seed, so a replay of the same
topics learns the same threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamer.drift import PROBABILITY_BINS, Baseline, LossCusum, calibrate_threshold

__all__ = ["DriftSettings", "SeriesDrift", "pooled_baseline", "resolvable_shift_std"]

CALIBRATION_SEED = 20261204
"""Seed of the threshold calibration's resampling: fixed, so replays agree."""


def resolvable_shift_std(reference_events: int) -> float:
    """The smallest shift, in baseline deviations, a reference can tell apart.

    A baseline learned from ``n`` events is off by about ``1 / sqrt(n)``
    deviations, and the threshold calibration allows for twice that
    (:func:`~streamer.drift.calibrate_threshold`'s margin); a detector whose
    allowance ``k = shift / 2`` were below that margin would drift upwards
    with no change at all. So the detector is tuned for at least
    ``6 / sqrt(n)``: ``k`` is then 1.5 margins.

    >>> round(resolvable_shift_std(10_000), 3)
    0.06
    """
    return 6.0 / math.sqrt(reference_events)


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """What a series needs to learn its reference; from ``drift.*``."""

    reference_events: int
    reference_predictions: int
    arl0_events: float
    shift: float
    calibration_events: int


class SeriesDrift:
    """Reference, baseline and change detector of one series in one partition.

    Parameters
    ----------
    settings
        The reference sizes and the detector's targets.
    configured
        The model's configured baseline, or ``None`` to learn it.

    Examples
    --------
    >>> settings = DriftSettings(1_000, 100, 1e4, 0.5, 100_000)
    >>> drift = SeriesDrift(settings, configured=None)
    >>> rng = np.random.default_rng(1)
    >>> drift.observe_losses(rng.exponential(0.5, 999))
    0
    >>> drift.baseline is None, drift.reference_events
    (True, 999)
    >>> drift.observe_losses(rng.exponential(0.5, 2_001))
    0
    >>> round(drift.baseline.mean_loss, 2), drift.detector is not None
    (0.5, True)
    >>> drift.observe_losses(rng.exponential(1.5, 2_000)) > 0
    True
    """

    def __init__(self, settings: DriftSettings, configured: Baseline | None) -> None:
        self.settings = settings
        self.configured = configured
        self.reference_target = settings.reference_events
        """Events the loss reference takes; a completed one keeps its own."""
        self.reference_events = 0
        self.reference_loss_sum = 0.0
        self.reference_loss_squared_sum = 0.0
        self._reference_losses: list[NDArray[np.float64]] = []
        self.detector: LossCusum | None = None
        self.detector_error: str | None = None
        """Why no detector runs after the reference (a loss that never varies)."""
        self.reference_bins = np.zeros(PROBABILITY_BINS, dtype=np.int64)

    @property
    def learning(self) -> bool:
        """Whether the loss reference is still being collected."""
        return self.reference_events < self.reference_target

    @property
    def learned(self) -> Baseline | None:
        """The baseline of the loss reference, once it is complete."""
        if self.learning or self.reference_events < 2:
            return None
        return Baseline.from_window(
            self.reference_events,
            self.reference_loss_sum,
            self.reference_loss_squared_sum,
        )

    @property
    def baseline(self) -> Baseline | None:
        """The configured baseline, else the learned one once complete."""
        return self.configured if self.configured is not None else self.learned

    @property
    def reference_predictions(self) -> int:
        """Predictions in the PSI reference histogram so far."""
        return int(self.reference_bins.sum())

    @property
    def reference_complete(self) -> bool:
        """Whether the PSI reference histogram is complete."""
        return self.reference_predictions >= self.settings.reference_predictions

    def observe_losses(self, losses: NDArray[np.float64]) -> int:
        """Take a batch of joined losses, in join order; return the alarms raised."""
        rest = losses
        if self.learning:
            needed = self.reference_target - self.reference_events
            taken, rest = losses[:needed], losses[needed:]
            self._learn(taken)

        if self.detector is None or rest.size == 0:
            return 0
        before = self.detector.alarms
        self.detector.update(rest)
        return self.detector.alarms - before

    def observe_predictions(self, bins: NDArray[np.intp]) -> None:
        """Take a batch of predictions' probability bins, in arrival order."""
        needed = self.settings.reference_predictions - self.reference_predictions
        if needed <= 0 or bins.size == 0:
            return
        self.reference_bins += np.bincount(bins[:needed], minlength=PROBABILITY_BINS)

    def drift_ratio(self) -> float | None:
        """The detector's statistic over its threshold: 1 or more is an alarm."""
        if self.detector is None:
            return None
        return self.detector.statistic / self.detector.threshold

    def _learn(self, losses: NDArray[np.float64]) -> None:
        self.reference_events += losses.size
        self.reference_loss_sum += float(losses.sum())
        self.reference_loss_squared_sum += float(np.square(losses).sum())
        self._reference_losses.append(losses.copy())
        if self.learning:
            return

        reference = np.concatenate(self._reference_losses)
        self._reference_losses = []
        self._start_detector(reference)

    def _start_detector(self, reference: NDArray[np.float64]) -> None:
        baseline = self.baseline
        assert baseline is not None
        if not (baseline.std_loss > 0.0 and baseline.mean_loss > 0.0):
            self.detector_error = (
                f"the reference loss does not vary (mean={baseline.mean_loss}, "
                f"std={baseline.std_loss}): no change detector"
            )
            return
        shift_std = max(
            self.settings.shift * baseline.mean_loss / baseline.std_loss,
            resolvable_shift_std(self.reference_events),
        )
        try:
            calibration = calibrate_threshold(
                reference,
                baseline=baseline,
                shift_std=shift_std,
                arl0_events=self.settings.arl0_events,
                simulated_events=self.settings.calibration_events,
                # About 500 pilot alarms: ARL0 measured to some 5 %.
                pilot_arl0_events=min(
                    1_000.0,
                    self.settings.calibration_events / 500,
                    self.settings.arl0_events / 10,
                ),
                seed=CALIBRATION_SEED,
            )
        except ValueError as exc:
            self.detector_error = f"threshold calibration failed: {exc}"
            return
        self.detector = LossCusum(
            baseline, shift_std=shift_std, threshold=calibration.threshold
        )

    # -- state ------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain JSON data that :meth:`from_state` rebuilds this from."""
        reference = (
            np.concatenate(self._reference_losses).tolist()
            if self._reference_losses
            else []
        )
        return {
            "reference_events": self.reference_events,
            "reference_target": self.reference_target,
            "reference_loss_sum": self.reference_loss_sum,
            "reference_loss_squared_sum": self.reference_loss_squared_sum,
            "reference_losses": reference,
            "detector": None if self.detector is None else self.detector.to_state(),
            "detector_error": self.detector_error,
            "reference_bins": self.reference_bins.tolist(),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        settings: DriftSettings,
        configured: Baseline | None,
    ) -> SeriesDrift:
        """Rebuild from :meth:`to_state` output, under today's configuration.

        A detector saved with another baseline than today's configured one is
        dropped, and the loss reference is learned again to calibrate a new
        one on.

        Raises
        ------
        ValueError
            If the state is malformed.
        """
        drift = cls(settings, configured)
        drift.reference_events = int(state["reference_events"])
        saved_target = int(state.get("reference_target", settings.reference_events))
        if drift.reference_events >= saved_target:
            drift.reference_target = saved_target
        drift.reference_loss_sum = float(state["reference_loss_sum"])
        drift.reference_loss_squared_sum = float(state["reference_loss_squared_sum"])
        losses = np.asarray(state["reference_losses"], dtype=np.float64)
        if losses.size:
            drift._reference_losses = [losses]
        bins = np.asarray(state["reference_bins"], dtype=np.int64)
        if bins.shape != (PROBABILITY_BINS,) or (bins < 0).any():
            raise ValueError(f"reference_bins must be {PROBABILITY_BINS} counts")
        drift.reference_bins = bins
        drift.detector_error = state.get("detector_error")
        saved = state.get("detector")
        if saved is not None:
            detector = LossCusum.from_state(saved)
            if detector.baseline == drift.baseline:
                drift.detector = detector
            elif not drift.learning:
                # The configured baseline changed since: the reference's
                # losses are gone, so learn a new one to calibrate on.
                drift._forget_loss_reference()
        return drift

    def _forget_loss_reference(self) -> None:
        self.reference_target = self.settings.reference_events
        self.reference_events = 0
        self.reference_loss_sum = 0.0
        self.reference_loss_squared_sum = 0.0
        self._reference_losses = []
        self.detector = None
        self.detector_error = None


def pooled_baseline(series: list[SeriesDrift]) -> tuple[Baseline | None, int]:
    """One baseline from several partitions' references, and their event count.

    The configured baseline if any; else the learned references pooled (the
    sums add up), over the partitions whose reference is complete.
    """
    seen = sum(drift.reference_events for drift in series)
    for drift in series:
        if drift.configured is not None:
            return drift.configured, seen
    complete = [drift for drift in series if not drift.learning]
    events = sum(drift.reference_events for drift in complete)
    loss_sum = sum(drift.reference_loss_sum for drift in complete)
    squared_sum = sum(drift.reference_loss_squared_sum for drift in complete)
    if events < 2 or not (math.isfinite(loss_sum) and math.isfinite(squared_sum)):
        return None, seen
    return Baseline.from_window(events, loss_sum, squared_sum), seen
