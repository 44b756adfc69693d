"""Drift statistics of a model: baseline, change detection, PSI and calibration.

Everything here is arithmetic on the numbers and arrays passed in: no I/O, no
clock, no global state, randomness only from a seed passed in. Three parts:

Baseline and z-score
    A :class:`Baseline` is the mean and standard deviation of the per-event
    loss of a model while it was healthy, configured or learned from the
    additive sums of a reference window. :func:`ratio` and :func:`z_score`
    compare a window's mean with it.

Change detection
    :class:`LossCusum` is a one-sided CUSUM over the per-event loss stream for
    an upward shift of the mean loss. Its threshold comes from a target number
    of events between false alarms (ARL0): :func:`siegmund_threshold` assumes
    Gaussian losses, :func:`calibrate_threshold` uses the baseline's own loss
    distribution, which is what skewed log losses need.

Prediction and calibration sums
    :class:`PredictionSums` (label-free, over every prediction) and
    :class:`CalibrationSums` (over joined events) are additive like
    :class:`~streamer.windows.WindowStats`: shards add up with ``+`` and the
    statistics are derived from the sums when asked for. :func:`psi` compares
    two probability histograms.

Why not a library's detector. The Page-Hinkley and CUSUM detectors of
river (0.26) and its kin take their threshold as a fixed number and compare
each value with the running mean of the stream itself, which follows the
drift it should detect; none sets the threshold from a target false-alarm
rate, and they update one value at a time in Python. Here the baseline is
fixed by the reference, the threshold is calibrated on the reference's own
loss distribution, and a batch is one vectorised pass.

Probability bins. Both sums keep :data:`PROBABILITY_BINS` equal-width bins of
the scored probability (binary: ``p`` of the positive class; multiclass: the
top class's probability). The edges are ``numpy.linspace(0, 1, 11)`` and bin
``b`` holds ``edge[b] < p <= edge[b + 1]``, the first bin also ``p = 0``:
scikit-learn's ``calibration_curve(strategy="uniform")`` binning. Fixed edges
are what keep histograms additive across partitions and replicas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from streamer import _native
from streamer.loss import DEFAULT_EPS, binary_log_loss, multiclass_log_loss

__all__ = [
    "PROBABILITY_BINS",
    "PSI_EPS",
    "SIEGMUND_OVERSHOOT_STD",
    "Baseline",
    "CalibrationSums",
    "LossCusum",
    "PredictionSums",
    "ThresholdCalibration",
    "calibrate_threshold",
    "probability_bins",
    "psi",
    "ratio",
    "siegmund_arl0",
    "siegmund_threshold",
    "z_score",
]

PROBABILITY_BINS: int = 10
"""Equal-width bins of predicted probability on [0, 1], for PSI and ECE."""

PSI_EPS: float = 1e-4
"""Floor of a bin's share in :func:`psi`, so that an empty bin costs a finite amount."""

SIEGMUND_OVERSHOOT_STD: float = 1.166
"""Mean overshoot of a Gaussian CUSUM over its threshold: ``-2 zeta(1/2) / sqrt(2 pi)``.

In baseline standard deviations; Siegmund's correction of Wald's approximation.
"""

_BIN_EDGES = np.linspace(0.0, 1.0, PROBABILITY_BINS + 1)
INNER_BIN_EDGES = _BIN_EDGES[1:-1]
"""The edges between probability bins: a bin is how many lie below."""
_EMPTY_COUNTS = (0,) * PROBABILITY_BINS
_EMPTY_SUMS = (0.0,) * PROBABILITY_BINS

_Number = TypeVar("_Number", int, float)

_EPS = float(np.finfo(np.float64).eps)
_MIN_REFERENCE_EVENTS = 1000
_MIN_PILOT_ALARMS = 100


@dataclass(frozen=True, slots=True)
class Baseline:
    """Mean and standard deviation of a healthy model's per-event loss, in nats.

    Examples
    --------
    >>> Baseline.from_window(4, loss_sum=2.0, loss_squared_sum=2.0)
    Baseline(mean_loss=0.5, std_loss=0.5)
    >>> Baseline(mean_loss=-0.1, std_loss=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: baseline mean_loss must be finite and not negative, got -0.1; ...
    """

    mean_loss: float
    std_loss: float

    def __post_init__(self) -> None:
        for name, value in (("mean_loss", self.mean_loss), ("std_loss", self.std_loss)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(
                    f"baseline {name} must be finite and not negative, got "
                    f"{value!r}; it is in nats, as the window log loss is"
                )

    @classmethod
    def from_window(
        cls, events: int, loss_sum: float, loss_squared_sum: float
    ) -> Baseline:
        """Learn a baseline from a reference window's additive sums.

        The standard deviation is the population one (``ddof=0``),
        ``sqrt(loss_squared_sum / events - mean**2)``: the one PromQL rebuilds
        from ``driftstream_window_log_loss_squared``. Formed from sums, it is
        exact only to about ``1e-16 * loss_squared_sum / events`` in the
        variance; a negative rounding residue is taken as 0.

        Raises
        ------
        ValueError
            If the window has fewer than two events or a sum is not finite.
        """
        if events < 2:
            raise ValueError(
                f"a baseline needs a reference window of at least 2 events, got "
                f"events={events}; learn it from a longer or busier window"
            )
        if not (math.isfinite(loss_sum) and math.isfinite(loss_squared_sum)):
            raise ValueError(
                f"reference window sums must be finite, got loss_sum={loss_sum!r}, "
                f"loss_squared_sum={loss_squared_sum!r}"
            )

        mean = loss_sum / events
        variance = loss_squared_sum / events - mean * mean
        # Below this the variance is the rounding residue of the two sums
        # (their relative error is a few eps), not a spread of the losses.
        if variance <= 4.0 * _EPS * mean * mean:
            variance = 0.0
        return cls(mean_loss=mean, std_loss=math.sqrt(variance))


def ratio(window_mean: float | None, baseline: Baseline) -> float | None:
    """Return a window's mean loss over the baseline's mean loss.

    ``None`` when the window has no mean (``WindowStats.mean_loss`` of an
    empty window) or the baseline's mean loss is 0, where no ratio exists.

    Examples
    --------
    >>> ratio(0.9, Baseline(mean_loss=0.6, std_loss=0.5))
    1.5
    >>> ratio(None, Baseline(mean_loss=0.6, std_loss=0.5)) is None
    True
    """
    if window_mean is None or baseline.mean_loss == 0.0:
        return None
    return window_mean / baseline.mean_loss


def z_score(events: int, loss_sum: float, baseline: Baseline) -> float | None:
    """Return how many standard errors a window's mean loss is above the baseline.

    ``z = (mean - baseline.mean_loss) / (baseline.std_loss / sqrt(events))``
    with ``mean = loss_sum / events``: under the baseline and for many events
    it is about standard normal. ``None`` for a window without events and for
    a baseline whose ``std_loss`` is 0, where no standard error exists.

    Raises
    ------
    ValueError
        If ``events`` is negative or ``loss_sum`` is not finite.

    Examples
    --------
    >>> baseline = Baseline(mean_loss=0.5, std_loss=2.0)
    >>> z_score(64, loss_sum=64.0, baseline=baseline)
    2.0
    >>> z_score(0, loss_sum=0.0, baseline=baseline) is None
    True
    """
    if events < 0 or not math.isfinite(loss_sum):
        raise ValueError(
            f"a window needs events >= 0 and a finite loss_sum, got events={events}, "
            f"loss_sum={loss_sum!r}"
        )
    if events == 0 or baseline.std_loss == 0.0:
        return None

    standard_error = baseline.std_loss / math.sqrt(events)
    return (loss_sum / events - baseline.mean_loss) / standard_error


def siegmund_arl0(*, shift_std: float, threshold: float) -> float:
    """Return Siegmund's approximation of a CUSUM's events between false alarms.

    ``ARL0 = (exp(2 k h') - 2 k h' - 1) / (2 k**2)`` with ``k = shift_std / 2``
    and ``h' = threshold + 1.166``, for standardised Gaussian increments.

    Examples
    --------
    >>> round(siegmund_arl0(shift_std=1.0, threshold=5.0))
    938
    """
    allowance = _checked_shift(shift_std) / 2.0
    corrected = 2.0 * allowance * (threshold + SIEGMUND_OVERSHOOT_STD)
    return (math.expm1(corrected) - corrected) / (2.0 * allowance * allowance)


def siegmund_threshold(*, shift_std: float, arl0_events: float) -> float:
    """Return the CUSUM threshold at which :func:`siegmund_arl0` is ``arl0_events``.

    Exact only for Gaussian losses. Log losses are skewed to the right, so
    with this threshold a :class:`LossCusum` raises false alarms more often
    than ``1 / arl0_events`` per event, the more so the larger ``shift_std``;
    prefer :func:`calibrate_threshold` when reference losses are at hand.

    Raises
    ------
    ValueError
        If ``shift_std`` is not positive, or ``arl0_events`` is below what a
        threshold of 0 already gives.

    Examples
    --------
    >>> round(siegmund_threshold(shift_std=1.0, arl0_events=938), 2)
    5.0
    """
    allowance = _checked_shift(shift_std) / 2.0
    _check_arl0(arl0_events=arl0_events)
    corrected = _solve_excess_exp(2.0 * allowance * allowance * arl0_events)
    threshold = corrected / (2.0 * allowance) - SIEGMUND_OVERSHOOT_STD
    if not threshold > 0.0:
        floor = siegmund_arl0(shift_std=shift_std, threshold=0.0)
        raise ValueError(
            f"arl0_events={arl0_events!r} is at or below {floor:.3g}, the ARL0 of "
            f"a threshold of 0 for shift_std={shift_std!r}; ask for more events "
            "between false alarms"
        )
    return threshold


@dataclass(frozen=True, slots=True)
class ThresholdCalibration:
    """A CUSUM threshold calibrated on reference losses, with its ingredients.

    Attributes
    ----------
    threshold
        The threshold ``h``, in baseline standard deviations.
    adjustment
        ``theta``, the positive root of ``mean(exp(theta * d)) = 1`` over the
        standardised reference increments ``d``; ``2 k`` for Gaussian losses.
    overshoot_std
        ``rho``, the overshoot fitted to the pilot simulation; about
        :data:`SIEGMUND_OVERSHOOT_STD` for Gaussian losses.
    pilot_threshold, pilot_arl0_events
        The threshold simulated and the events between alarms measured there.
    """

    threshold: float
    adjustment: float
    overshoot_std: float
    pilot_threshold: float
    pilot_arl0_events: float


def calibrate_threshold(
    reference_losses: NDArray[np.float64],
    *,
    baseline: Baseline,
    shift_std: float,
    arl0_events: float,
    margin_std: float | None = None,
    pilot_arl0_events: float = 1_000.0,
    simulated_events: int = 2_000_000,
    seed: int = 0,
) -> ThresholdCalibration:
    """Calibrate a :class:`LossCusum` threshold on the baseline's own losses.

    Siegmund's formula is the Gaussian case of Wald's approximation with an
    overshoot correction, ``ARL0 = (exp(x) - x - 1) / (theta m)`` with
    ``x = theta (h + rho)``, which holds for other distributions of the
    increments ``d = (loss - mean) / std - k`` too: ``theta`` is the positive
    root of ``E exp(theta d) = 1``, ``m = -E d`` and ``rho`` the mean
    overshoot of ``S`` over ``h``. Gaussian increments have ``theta = 2 k``,
    ``m = k`` and ``rho = 1.166``; here ``theta`` and ``rho`` come from the
    reference losses instead:

    1. ``theta`` solves ``mean(exp(theta * d)) = 1`` over the reference
       increments: the exact exponential rate at which ARL0 grows with ``h``;
       a right-skewed loss has ``theta < 2 k``;
    2. a ``LossCusum`` at a pilot threshold (ARL0 about ``pilot_arl0_events``
       by the formula with ``rho = 0``) runs on ``simulated_events`` losses
       drawn with replacement from the reference, and its measured ARL0 fixes
       ``rho``;
    3. the formula is solved for ``h`` at ``arl0_events``.

    For Gaussian losses this gives Siegmund's threshold back.

    Parameters
    ----------
    reference_losses
        Per-event losses of the healthy model, at least 1000; the tail
        matters, so more is better (1e5 and up).
    baseline, shift_std
        What the detector will use.
    arl0_events
        Target mean number of events between false alarms.
    margin_std
        How far above ``baseline.mean_loss`` the true mean loss may lie, in
        baseline standard deviations, with the ARL0 still held: the reference
        losses are shifted up by it. A baseline learned from ``n`` events is
        off by about ``1 / sqrt(n)`` of them, and the false-alarm rate grows
        exponentially with that error (by about ``exp(2 h / sqrt(n))`` per
        standard error), which matters when ``k`` is small and ``h`` large.
        The default, ``2 / sqrt(len(reference_losses))``, covers the error of
        a baseline learned from these very losses in about 97.5 % of
        reference windows; pass 0 for a baseline known exactly.
    pilot_arl0_events, simulated_events
        The pilot run: its ARL0 and length. The pilot's ARL0 is measured to
        about ``1 / sqrt(alarms)``; at least 100 alarms are required.
    seed
        Seed of the resampling, so that one reference gives one threshold.

    Raises
    ------
    ValueError
        If the reference is too short, its mean is at or above
        ``baseline.mean_loss + k * baseline.std_loss`` (the statistic would
        climb without drift), no reference loss is above that, or the pilot
        raised fewer than 100 alarms.

    Examples
    --------
    Losses of a calibrated binary model, ``p ~ Beta(1, 3)``:

    >>> rng = np.random.default_rng(7)
    >>> p = rng.beta(1.0, 3.0, 200_000)
    >>> losses = binary_log_loss(p, rng.random(p.size) < p)
    >>> baseline = Baseline.from_window(
    ...     losses.size, float(losses.sum()), float(np.square(losses).sum())
    ... )
    >>> calibration = calibrate_threshold(
    ...     losses, baseline=baseline, shift_std=0.5, arl0_events=1e6
    ... )
    >>> round(calibration.threshold, 1), round(
    ...     siegmund_threshold(shift_std=0.5, arl0_events=1e6), 1
    ... )
    (30.1, 22.3)
    """
    allowance = _checked_shift(shift_std) / 2.0
    _check_arl0(arl0_events=arl0_events, pilot_arl0_events=pilot_arl0_events)
    reference = _checked_losses(reference_losses)
    _check_reference(reference, baseline)
    if margin_std is None:
        margin_std = 2.0 / math.sqrt(reference.size)
    _check_margin(margin_std, simulated_events)
    reference = reference + margin_std * baseline.std_loss
    increments = (reference - baseline.mean_loss) / baseline.std_loss - allowance
    drift = -float(increments.mean())
    _check_increments(increments, drift)

    theta = _adjustment_coefficient(increments)
    pilot_threshold = _solve_excess_exp(pilot_arl0_events * theta * drift) / theta

    pilot = LossCusum(baseline, shift_std=shift_std, threshold=pilot_threshold)
    pilot_arl0 = _simulated_arl0(pilot, reference, simulated_events, seed)
    overshoot = _solve_excess_exp(pilot_arl0 * theta * drift) / theta - pilot_threshold

    threshold = _solve_excess_exp(arl0_events * theta * drift) / theta - overshoot
    if not threshold > 0.0:
        raise ValueError(
            f"arl0_events={arl0_events!r} is reached without any threshold on "
            "this reference; ask for more events between false alarms"
        )
    return ThresholdCalibration(
        threshold=threshold,
        adjustment=theta,
        overshoot_std=overshoot,
        pilot_threshold=pilot_threshold,
        pilot_arl0_events=pilot_arl0,
    )


class LossCusum:
    """One-sided CUSUM for an upward shift of the mean per-event loss.

    Each loss is standardised by the baseline, ``z = (loss - mean) / std``,
    and the statistic, in baseline standard deviations, is ::

        S_0 = 0,    S_t = max(0, S_(t-1) + z_t - k),    k = shift_std / 2

    An alarm is raised at the event where ``S_t > threshold``; the statistic
    then restarts at 0 with the next event, so that the mean number of events
    between false alarms is the ARL0 the threshold was set for (Page 1954).
    ``k`` is the allowance: half the smallest shift of the mean, in baseline
    standard deviations, to detect quickly.

    A batch is standardised with numpy and walked event by event in the
    compiled core (``native/src/cusum.rs``): the statistic is exactly the
    recursion's.

    One event can add at most ``(max_loss - mean) / std - k`` to ``S``; with
    ``max_loss = -log(eps) = 36.04`` that may exceed a small threshold, so a
    single certain-and-wrong prediction can raise an alarm on its own.

    Parameters
    ----------
    baseline
        The healthy model's loss; ``std_loss`` must be positive.
    shift_std
        The smallest upward shift of the mean loss to detect quickly, in
        baseline standard deviations: a relative shift ``r`` of the mean loss
        is ``r * mean_loss / std_loss``.
    threshold
        ``h``, in baseline standard deviations: from :func:`calibrate_threshold`
        or :func:`siegmund_threshold`.

    Examples
    --------
    A calibrated binary model whose predictions turn overconfident, raising
    its mean loss by about half:

    >>> rng = np.random.default_rng(3)
    >>> def losses(n, overconfidence=1.0):
    ...     p = rng.beta(1.0, 3.0, n)
    ...     reported = 1.0 / (1.0 + ((1.0 - p) / p) ** overconfidence)
    ...     return binary_log_loss(reported, rng.random(n) < p)
    >>> reference = losses(100_000)
    >>> baseline = Baseline.from_window(
    ...     reference.size, float(reference.sum()), float(np.square(reference).sum())
    ... )
    >>> threshold = calibrate_threshold(
    ...     reference, baseline=baseline, shift_std=0.2, arl0_events=1e6
    ... ).threshold
    >>> detector = LossCusum(baseline, shift_std=0.2, threshold=threshold)
    >>> detector.update(losses(200_000)), detector.alarms
    (False, 0)
    >>> detector.update(losses(2_000, overconfidence=3.0)), detector.alarms
    (True, 11)
    >>> detector.first_alarm_event - 200_000
    151
    """

    def __init__(self, baseline: Baseline, *, shift_std: float, threshold: float):
        if not baseline.std_loss > 0.0:
            raise ValueError(
                "a change detector needs a baseline with std_loss > 0, got "
                f"{baseline!r}; learn the baseline from a window whose losses vary"
            )
        if not (math.isfinite(threshold) and threshold > 0.0):
            raise ValueError(
                f"threshold must be finite and positive, got {threshold!r}; derive "
                "it with calibrate_threshold() or siegmund_threshold()"
            )
        self.baseline = baseline
        self.shift_std = _checked_shift(shift_std)
        self.threshold = threshold
        self.reset()

    @property
    def allowance_std(self) -> float:
        """``k = shift_std / 2``, subtracted from every standardised loss."""
        return self.shift_std / 2.0

    @property
    def statistic(self) -> float:
        """``S`` after the last event, in baseline standard deviations."""
        return self._statistic

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` raised at least one alarm."""
        return self._drift_detected

    @property
    def events(self) -> int:
        """Events seen since construction or :meth:`reset`."""
        return self._events

    @property
    def alarms(self) -> int:
        """Alarms raised since construction or :meth:`reset`."""
        return self._alarms

    @property
    def first_alarm_event(self) -> int | None:
        """The 1-based number of the event of the first alarm; ``None`` before it."""
        return self._first_alarm_event

    @property
    def last_alarm_event(self) -> int | None:
        """The 1-based number of the event of the latest alarm; ``None`` before it."""
        return self._last_alarm_event

    def reset(self) -> None:
        """Forget every event and alarm: back to the state after construction."""
        self._statistic = 0.0
        self._drift_detected = False
        self._events = 0
        self._alarms = 0
        self._first_alarm_event: int | None = None
        self._last_alarm_event: int | None = None

    def update(self, losses: NDArray[np.float64]) -> bool:
        """Take a batch of per-event losses, in arrival order.

        Returns
        -------
        bool
            Whether an alarm was raised at any event of the batch (also what
            :attr:`drift_detected` says until the next update).

        Raises
        ------
        ValueError
            If ``losses`` is not 1-D, or a loss is negative, infinite or NaN.
        """
        mean, std = self.baseline.mean_loss, self.baseline.std_loss
        increments = (_checked_losses(losses) - mean) / std - self.allowance_std
        self._statistic, alarms, first, last = _native.cusum_update(
            self._statistic, increments, self.threshold
        )
        if alarms:
            if self._first_alarm_event is None:
                self._first_alarm_event = self._events + first + 1
            self._last_alarm_event = self._events + last + 1
            self._alarms += alarms
        self._events += increments.size
        self._drift_detected = alarms > 0
        return self._drift_detected

    def to_state(self) -> dict[str, Any]:
        """Return the detector, configuration included, as plain JSON data.

        Floats survive a JSON round trip unchanged, so :meth:`from_state`
        rebuilds a detector that behaves exactly like this one.
        """
        return {
            "baseline_mean_loss": self.baseline.mean_loss,
            "baseline_std_loss": self.baseline.std_loss,
            "shift_std": self.shift_std,
            "threshold": self.threshold,
            "statistic": self._statistic,
            "drift_detected": self._drift_detected,
            "events": self._events,
            "alarms": self._alarms,
            "first_alarm_event": self._first_alarm_event,
            "last_alarm_event": self._last_alarm_event,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LossCusum:
        """Rebuild a detector from :meth:`to_state` output.

        The configuration comes from the state; a caller whose configured
        baseline, shift or threshold has changed since should start a new
        detector instead (compare :attr:`baseline`, :attr:`shift_std`,
        :attr:`threshold`).

        Raises
        ------
        ValueError
            If the state is malformed or inconsistent.
        """
        try:
            detector = cls(
                Baseline(
                    mean_loss=float(state["baseline_mean_loss"]),
                    std_loss=float(state["baseline_std_loss"]),
                ),
                shift_std=float(state["shift_std"]),
                threshold=float(state["threshold"]),
            )
            detector._restore(state)
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"saved change-detector state is malformed ({exc!r}); expected the "
                "output of LossCusum.to_state()"
            ) from exc
        return detector

    def _restore(self, state: Mapping[str, Any]) -> None:
        statistic = float(state["statistic"])
        events, alarms = _count(state["events"]), _count(state["alarms"])
        first, last = (
            None if state[key] is None else _count(state[key])
            for key in ("first_alarm_event", "last_alarm_event")
        )

        consistent = (
            0.0 <= statistic <= self.threshold
            and alarms <= events
            and (alarms == 0) == (first is None) == (last is None)
            and (first is None or last is None or 1 <= first <= last <= events)
            and (alarms != 1 or first == last)
            and (alarms < 2 or first != last)
        )
        if not consistent:
            raise ValueError(
                f"saved change-detector state is inconsistent: statistic={statistic}, "
                f"threshold={self.threshold}, events={events}, alarms={alarms}, "
                f"first_alarm_event={first}, last_alarm_event={last}"
            )
        self._statistic = statistic
        self._drift_detected = bool(state["drift_detected"])
        self._events, self._alarms = events, alarms
        self._first_alarm_event, self._last_alarm_event = first, last


@dataclass(frozen=True, slots=True)
class PredictionSums:
    """Label-free sums over predictions; additive across shards.

    Kept over every prediction as it arrives, these warn of drift while the
    outcomes are still on their way.

    Attributes
    ----------
    entropy_sum
        Sum of each prediction's entropy, in nats: binary
        ``-p log p - (1 - p) log(1 - p)``, multiclass ``-sum_k p_k log p_k``,
        the logs clipped as :mod:`streamer.loss` clips them. It is the log
        loss each prediction expects if the model is calibrated.
    probability_sum
        Sum of the scored probability: binary ``p``, multiclass ``max_k p_k``.
    bin_counts
        Histogram of the scored probability over :data:`PROBABILITY_BINS`.

    Examples
    --------
    >>> a = PredictionSums.from_binary(np.array([0.5, 0.9]))
    >>> b = PredictionSums.from_binary(np.array([0.1]))
    >>> (a + b).events, (a + b).bin_counts
    (3, (1, 0, 0, 0, 1, 0, 0, 0, 1, 0))
    >>> round((a + b).expected_log_loss, 6), round((a + b).mean_probability, 6)
    (0.447771, 0.5)
    """

    entropy_sum: float = 0.0
    probability_sum: float = 0.0
    bin_counts: tuple[int, ...] = _EMPTY_COUNTS

    def __post_init__(self) -> None:
        _check_bins(bin_counts=self.bin_counts)

    @classmethod
    def from_binary(
        cls, probability: NDArray[np.float64], *, eps: float = DEFAULT_EPS
    ) -> PredictionSums:
        """Sum binary predictions: ``probability`` of the positive class, 1-D."""
        probability = _checked_binary(probability)
        entropy = probability * binary_log_loss(
            probability, np.ones(probability.shape, dtype=np.bool_), eps=eps
        ) + (1.0 - probability) * binary_log_loss(
            probability, np.zeros(probability.shape, dtype=np.bool_), eps=eps
        )
        return cls(
            entropy_sum=float(entropy.sum()),
            probability_sum=float(probability.sum()),
            bin_counts=_bin_counts(probability),
        )

    @classmethod
    def from_multiclass(
        cls, probabilities: NDArray[np.float64], *, eps: float = DEFAULT_EPS
    ) -> PredictionSums:
        """Sum multiclass predictions: one row of class probabilities per event."""
        probabilities = _checked_multiclass(probabilities)
        entropy = (probabilities * multiclass_log_loss(probabilities, eps=eps)).sum(
            axis=1
        )
        confidence = probabilities.max(axis=1)
        return cls(
            entropy_sum=float(entropy.sum()),
            probability_sum=float(confidence.sum()),
            bin_counts=_bin_counts(confidence),
        )

    @property
    def events(self) -> int:
        """Predictions summed."""
        return sum(self.bin_counts)

    @property
    def expected_log_loss(self) -> float | None:
        """Mean entropy of the predictions, in nats; ``None`` without events."""
        return _mean(self.entropy_sum, self.events)

    @property
    def mean_probability(self) -> float | None:
        """Mean scored probability; ``None`` without events."""
        return _mean(self.probability_sum, self.events)

    def __add__(self, other: PredictionSums) -> PredictionSums:
        if not isinstance(other, PredictionSums):
            return NotImplemented
        return PredictionSums(
            entropy_sum=self.entropy_sum + other.entropy_sum,
            probability_sum=self.probability_sum + other.probability_sum,
            bin_counts=_add(self.bin_counts, other.bin_counts),
        )


@dataclass(frozen=True, slots=True)
class CalibrationSums:
    """Sums over joined predictions and outcomes; additive across shards.

    The scored probability is ``p`` of the positive class for a binary model
    and ``max_k p_k`` for a multiclass one; an event is *positive* when its
    label is the positive class (binary) or the top class (multiclass, the
    first of tied ones). So for a multiclass model the positive rate is
    top-1 accuracy and the calibration error is the top-label ECE.

    Attributes
    ----------
    squared_error_sum
        Sum of ``(p - y)**2`` (binary) or ``sum_k (p_k - y_k)**2``
        (multiclass, ``y`` one-hot); unclipped probabilities.
    bin_counts, bin_probability_sums, bin_positive_counts
        Per bin of the scored probability: events, sum of it, positives.

    Examples
    --------
    >>> sums = CalibrationSums.from_binary(
    ...     np.array([0.15, 0.15, 0.95, 0.95]), np.array([False, True, True, True])
    ... )
    >>> sums.positive_rate, round(sums.brier_score, 4)
    (0.75, 0.1875)
    >>> round(sums.calibration_error, 4)
    0.2
    """

    squared_error_sum: float = 0.0
    bin_counts: tuple[int, ...] = _EMPTY_COUNTS
    bin_probability_sums: tuple[float, ...] = _EMPTY_SUMS
    bin_positive_counts: tuple[int, ...] = _EMPTY_COUNTS

    def __post_init__(self) -> None:
        _check_bins(
            bin_counts=self.bin_counts,
            bin_probability_sums=self.bin_probability_sums,
            bin_positive_counts=self.bin_positive_counts,
        )

    @classmethod
    def from_binary(
        cls, probability: NDArray[np.float64], label: NDArray[np.bool_]
    ) -> CalibrationSums:
        """Sum joined binary events: ``p`` of the positive class and the label."""
        probability = _checked_binary(probability)
        label = np.asarray(label, dtype=np.bool_)
        if label.shape != probability.shape:
            raise ValueError(
                f"probability and label must have the same shape, got "
                f"{probability.shape} and {label.shape}: one label per prediction"
            )
        squared_error = np.square(probability - label)
        return cls._of_scores(float(squared_error.sum()), probability, label)

    @classmethod
    def from_multiclass(
        cls, probabilities: NDArray[np.float64], label: NDArray[np.int64]
    ) -> CalibrationSums:
        """Sum joined multiclass events: class probabilities and label index."""
        probabilities = _checked_multiclass(probabilities)
        label = np.asarray(label)
        events, classes = probabilities.shape
        if label.shape != (events,) or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(
                f"label must be 1-D integer class indices, one per row, got dtype "
                f"{label.dtype} and shape {label.shape} for {events} rows"
            )
        if events and not (label.min() >= 0 and label.max() < classes):
            raise ValueError(
                f"label must index the {classes} classes, got values from "
                f"{label.min()} to {label.max()}"
            )

        one_hot = np.arange(classes) == label[:, np.newaxis]
        squared_error = np.square(probabilities - one_hot).sum(axis=1)
        hit = probabilities.argmax(axis=1) == label
        return cls._of_scores(
            float(squared_error.sum()), probabilities.max(axis=1), hit
        )

    @classmethod
    def _of_scores(
        cls,
        squared_error_sum: float,
        score: NDArray[np.float64],
        positive: NDArray[np.bool_],
    ) -> CalibrationSums:
        bins = _bin_index(score)
        probability_sums = np.bincount(bins, weights=score, minlength=PROBABILITY_BINS)
        return cls(
            squared_error_sum=squared_error_sum,
            bin_counts=_bin_counts(score),
            bin_probability_sums=tuple(probability_sums.tolist()),
            bin_positive_counts=tuple(
                np.bincount(bins[positive], minlength=PROBABILITY_BINS).tolist()
            ),
        )

    @property
    def events(self) -> int:
        """Joined events summed."""
        return sum(self.bin_counts)

    @property
    def positive_rate(self) -> float | None:
        """Share of positive events (label drift); ``None`` without events."""
        return _mean(float(sum(self.bin_positive_counts)), self.events)

    @property
    def mean_probability(self) -> float | None:
        """Mean scored probability; ``None`` without events."""
        return _mean(math.fsum(self.bin_probability_sums), self.events)

    @property
    def brier_score(self) -> float | None:
        """Mean squared error of the probabilities; ``None`` without events."""
        return _mean(self.squared_error_sum, self.events)

    @property
    def calibration_error(self) -> float | None:
        """Expected calibration error over the bins; ``None`` without events.

        ``sum_b (n_b / n) |mean p_b - positive rate_b|``, which is
        ``sum_b |sum p_b - positives_b| / n``.
        """
        gaps = (
            abs(probability - positives)
            for probability, positives in zip(
                self.bin_probability_sums, self.bin_positive_counts, strict=True
            )
        )
        return _mean(math.fsum(gaps), self.events)

    @property
    def bin_mean_probability(self) -> tuple[float | None, ...]:
        """Per bin, the mean scored probability; ``None`` for an empty bin."""
        return tuple(
            _mean(total, count)
            for total, count in zip(
                self.bin_probability_sums, self.bin_counts, strict=True
            )
        )

    @property
    def bin_positive_rate(self) -> tuple[float | None, ...]:
        """Per bin, the share of positive events; ``None`` for an empty bin."""
        return tuple(
            _mean(float(positives), count)
            for positives, count in zip(
                self.bin_positive_counts, self.bin_counts, strict=True
            )
        )

    def __add__(self, other: CalibrationSums) -> CalibrationSums:
        if not isinstance(other, CalibrationSums):
            return NotImplemented
        return CalibrationSums(
            squared_error_sum=self.squared_error_sum + other.squared_error_sum,
            bin_counts=_add(self.bin_counts, other.bin_counts),
            bin_probability_sums=_add(
                self.bin_probability_sums, other.bin_probability_sums
            ),
            bin_positive_counts=_add(
                self.bin_positive_counts, other.bin_positive_counts
            ),
        )


def psi(
    current: Sequence[float], reference: Sequence[float], *, eps: float = PSI_EPS
) -> float | None:
    """Return the population stability index of a histogram against a reference.

    ``PSI = sum_b (c_b - r_b) * ln(c_b / r_b)`` over the bins' shares ``c_b``
    and ``r_b`` of each histogram's total, each share floored at ``eps``
    (not renormalised) so that a bin empty on one side costs a finite amount.
    Common readings: below 0.1 stable, 0.1 to 0.25 a moderate shift, above
    0.25 a major one.

    Parameters
    ----------
    current, reference
        Bin counts (or shares) over the same bins, such as
        ``PredictionSums.bin_counts`` of a window and of a reference window.
    eps
        Floor of a share, in ``(0, 1)``.

    Returns
    -------
    float or None
        The PSI, or ``None`` if either histogram is empty.

    Raises
    ------
    ValueError
        If the histograms differ in length, a count is negative or not
        finite, or ``eps`` is outside ``(0, 1)``.

    Examples
    --------
    >>> round(psi([50, 30, 20], [40, 40, 20]), 4)
    0.0511
    >>> psi([0, 0, 0], [40, 40, 20]) is None
    True
    """
    current_counts = np.asarray(current, dtype=np.float64)
    reference_counts = np.asarray(reference, dtype=np.float64)
    _check_histograms(current_counts, reference_counts, eps)
    if current_counts.sum() == 0.0 or reference_counts.sum() == 0.0:
        return None

    current_share = np.maximum(current_counts / current_counts.sum(), eps)
    reference_share = np.maximum(reference_counts / reference_counts.sum(), eps)
    terms = (current_share - reference_share) * np.log(current_share / reference_share)
    return float(terms.sum())


def _checked_shift(shift_std: float) -> float:
    if not (math.isfinite(shift_std) and shift_std > 0.0):
        raise ValueError(
            f"shift_std must be finite and positive, got {shift_std!r}; it is the "
            "smallest shift of the mean loss to detect, in baseline std units"
        )
    return shift_std


def _check_arl0(**targets: float) -> None:
    for name, value in targets.items():
        if not (math.isfinite(value) and value > 1.0):
            raise ValueError(
                f"{name} must be a finite number of events above 1, got {value!r}; "
                "e.g. 1e6 for one false alarm per million events"
            )


def _check_margin(margin_std: float, simulated_events: int) -> None:
    if not (math.isfinite(margin_std) and margin_std >= 0.0):
        raise ValueError(
            f"margin_std must be finite and not negative, got {margin_std!r}"
        )
    if simulated_events < 1:
        raise ValueError(f"simulated_events must be positive, got {simulated_events}")


def _checked_losses(losses: NDArray[np.float64]) -> NDArray[np.float64]:
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"losses must be a 1-D array, got shape {losses.shape}")

    invalid = ~(np.isfinite(losses) & (losses >= 0.0))
    if invalid.any():
        index = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"losses must be finite and not negative, got {float(losses[index])!r} "
            f"at index {index}"
        )
    return losses


def _check_reference(reference: NDArray[np.float64], baseline: Baseline) -> None:
    if reference.size < _MIN_REFERENCE_EVENTS:
        raise ValueError(
            f"calibrating a threshold needs at least {_MIN_REFERENCE_EVENTS} "
            f"reference losses, got {reference.size}"
        )
    if not baseline.std_loss > 0.0:
        raise ValueError(
            f"calibrating needs a baseline with std_loss > 0, got {baseline!r}"
        )


def _check_increments(increments: NDArray[np.float64], drift: float) -> None:
    if not drift > 0.0:
        raise ValueError(
            "the reference losses average at or above the baseline mean plus the "
            "allowance, so the statistic would climb without any drift; learn the "
            "baseline from these losses, lower margin_std or raise shift_std"
        )
    if not increments.max() > 0.0:
        raise ValueError(
            "no reference loss is above the baseline mean plus the allowance, so "
            "the reference never moves the statistic; lower shift_std"
        )


def _adjustment_coefficient(increments: NDArray[np.float64]) -> float:
    """The ``theta > 0`` with ``mean(exp(theta * increments)) = 1``, by bisection.

    ``log mean exp`` is convex in ``theta``, 0 at 0 and falling there (the mean
    increment is negative), rising past the root (some increment is positive).
    """
    log_size = math.log(increments.size)

    def log_mean_exp(theta: float) -> float:
        scaled = theta * increments
        top = float(scaled.max())
        return top + math.log(float(np.exp(scaled - top).sum())) - log_size

    high = 2.0 * -float(increments.mean()) / float(increments.var())
    while log_mean_exp(high) <= 0.0:
        high *= 2.0
    low = 0.0
    while high - low > 1e-9 * high:
        middle = (low + high) / 2.0
        if log_mean_exp(middle) > 0.0:
            high = middle
        else:
            low = middle
    return (low + high) / 2.0


def _simulated_arl0(
    detector: LossCusum, reference: NDArray[np.float64], events: int, seed: int
) -> float:
    """Events per alarm of ``detector`` on losses resampled from ``reference``."""
    rng = np.random.default_rng(seed)
    for start in range(0, events, 1 << 16):
        size = min(1 << 16, events - start)
        detector.update(reference[rng.integers(0, reference.size, size)])

    if detector.alarms < _MIN_PILOT_ALARMS:
        raise ValueError(
            f"the pilot run raised {detector.alarms} alarms in {events} events, "
            f"fewer than {_MIN_PILOT_ALARMS}; raise simulated_events or lower "
            "pilot_arl0_events"
        )
    return events / detector.alarms


def _solve_excess_exp(target: float) -> float:
    """The ``x >= 0`` with ``exp(x) - x - 1 = target``, by Newton's method.

    The start is above the root (``exp(x) - x - 1`` exceeds ``x**2 / 2``, and
    ``exp(x) / 2`` for ``x >= 1.7``), where Newton's steps on this convex
    function fall monotonically onto it.
    """
    if not target > 0.0:
        return 0.0
    x = min(math.sqrt(2.0 * target), max(math.log(2.0 * target), 1.7))
    for _ in range(200):
        step = (math.expm1(x) - x - target) / math.expm1(x)
        x -= step
        if step <= 1e-15 * x:
            break
    return x


def probability_bins(score: NDArray[np.float64]) -> NDArray[np.intp]:
    """The bin of each probability in [0, 1], as the module docstring defines.

    >>> probability_bins(np.array([0.0, 0.1, 0.1000001, 1.0])).tolist()
    [0, 0, 1, 9]
    """
    return _bin_index(np.asarray(score, dtype=np.float64))


def _bin_index(score: NDArray[np.float64]) -> NDArray[np.intp]:
    """The bin of each probability: scikit-learn's ``calibration_curve`` rule."""
    return np.searchsorted(INNER_BIN_EDGES, score)


def _bin_counts(score: NDArray[np.float64]) -> tuple[int, ...]:
    return tuple(np.bincount(_bin_index(score), minlength=PROBABILITY_BINS).tolist())


def _checked_binary(probability: NDArray[np.float64]) -> NDArray[np.float64]:
    probability = np.asarray(probability, dtype=np.float64)
    if probability.ndim != 1:
        raise ValueError(
            f"binary probability must be a 1-D array, got shape {probability.shape}"
        )
    return probability


def _checked_multiclass(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(
            "multiclass probabilities must be a 2-D array with one column per "
            f"class and at least 2 classes, got shape {probabilities.shape}"
        )
    return probabilities


def _check_bins(**columns: tuple[float, ...]) -> None:
    for name, column in columns.items():
        if len(column) != PROBABILITY_BINS:
            raise ValueError(
                f"{name} must have {PROBABILITY_BINS} bins, got {len(column)}: the "
                "probability bins are fixed so that sums add up across shards"
            )


def _check_histograms(
    current: NDArray[np.float64], reference: NDArray[np.float64], eps: float
) -> None:
    if current.ndim != 1 or current.shape != reference.shape:
        raise ValueError(
            "current and reference must be histograms over the same bins, got "
            f"shapes {current.shape} and {reference.shape}"
        )
    if not (np.isfinite(current).all() and np.isfinite(reference).all()):
        raise ValueError("histogram counts must be finite")
    if (current < 0.0).any() or (reference < 0.0).any():
        raise ValueError("histogram counts must not be negative")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")


def _count(value: Any) -> int:
    """A saved count: an ``int`` that is not negative, else ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a count (an int >= 0), got {value!r}")
    return value


def _mean(total: float, count: int) -> float | None:
    return None if count == 0 else total / count


def _add(left: tuple[_Number, ...], right: tuple[_Number, ...]) -> tuple[_Number, ...]:
    return tuple(a + b for a, b in zip(left, right, strict=True))
