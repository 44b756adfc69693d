"""Drift statistics against scikit-learn and naive numpy recomputations."""

from __future__ import annotations

import doctest
import itertools
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from streamer import drift
from streamer.drift import (
    PROBABILITY_BINS,
    SIEGMUND_OVERSHOOT_STD,
    Baseline,
    CalibrationSums,
    LossCusum,
    PredictionSums,
    calibrate_threshold,
    psi,
    ratio,
    siegmund_arl0,
    siegmund_threshold,
    z_score,
)
from streamer.loss import DEFAULT_EPS, binary_log_loss
from streamer.windows import RollingWindows, WindowSpec

TOLERANCE = 1e-9

BIN_EDGES = [float(edge) for edge in np.linspace(0.0, 1.0, PROBABILITY_BINS + 1)]
"""The bin edges as the module documents them, to probe the edges themselves."""

EDGE_PROBABILITIES = [
    0.0,
    1.0,
    DEFAULT_EPS,
    1.0 - DEFAULT_EPS,
    5e-324,
    1e-300,
    *BIN_EDGES,
    *(math.nextafter(edge, 2.0) for edge in BIN_EDGES[:-1]),
    *(math.nextafter(edge, -1.0) for edge in BIN_EDGES[1:]),
]

probabilities = st.one_of(
    st.sampled_from(EDGE_PROBABILITIES), st.floats(min_value=0.0, max_value=1.0)
)
losses = st.floats(min_value=0.0, max_value=40.0)


def assert_close(actual: float | None, expected: float) -> None:
    assert actual is not None
    assert abs(actual - expected) <= TOLERANCE * max(1.0, abs(expected))


# --- baseline, ratio, z-score -------------------------------------------------


@given(st.lists(losses, min_size=2, max_size=200))
def test_baseline_from_window_matches_numpy(values: list[float]) -> None:
    loss = np.array(values)

    baseline = Baseline.from_window(
        loss.size, float(loss.sum()), float(np.square(loss).sum())
    )

    assert_close(baseline.mean_loss, float(np.mean(loss)))
    # E[x^2] - E[x]^2 from sums is exact to the rounding of E[x^2], no better.
    mean_square = float(np.mean(np.square(loss)))
    variance = float(np.var(loss))
    assert abs(baseline.std_loss**2 - variance) <= TOLERANCE * max(mean_square, 1e-300)


def test_baseline_from_window_takes_window_stats() -> None:
    windows = RollingWindows([WindowSpec(name="1m", length_ms=60_000)])
    windows.add(np.array([0, 1_000, 2_000, 3_000]), np.array([0.0, 0.0, 1.0, 1.0]))
    stats = windows.stats(now_ms=3_000)["1m"]

    baseline = Baseline.from_window(
        stats.events, stats.loss_sum, stats.loss_squared_sum
    )

    assert baseline == Baseline(mean_loss=0.5, std_loss=0.5)


def test_constant_losses_give_a_zero_std_and_no_z_score() -> None:
    baseline = Baseline.from_window(3, loss_sum=1.5, loss_squared_sum=0.75)

    assert baseline == Baseline(mean_loss=0.5, std_loss=0.0)
    assert z_score(10, loss_sum=9.0, baseline=baseline) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((1, 0.5, 0.25), r"at least 2 events, got events=1; learn it from a longer"),
        ((0, 0.0, 0.0), r"at least 2 events, got events=0"),
        ((5, math.inf, 1.0), r"sums must be finite, got loss_sum=inf"),
        ((5, 1.0, math.nan), r"loss_squared_sum=nan"),
    ],
)
def test_baseline_from_window_refuses(
    arguments: tuple[int, float, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Baseline.from_window(*arguments)


@pytest.mark.parametrize(
    ("mean_loss", "std_loss", "message"),
    [
        (-0.1, 0.5, r"mean_loss must be finite and not negative, got -0.1; it is"),
        (0.5, math.nan, r"std_loss must be finite and not negative, got nan"),
        (math.inf, 0.5, r"mean_loss must be finite and not negative, got inf"),
    ],
)
def test_baseline_refuses(mean_loss: float, std_loss: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Baseline(mean_loss=mean_loss, std_loss=std_loss)


@given(
    values=st.lists(losses, min_size=1, max_size=100),
    mean_loss=st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=5.0)),
    std_loss=st.floats(min_value=1e-3, max_value=5.0),
)
def test_z_score_and_ratio_match_numpy(
    values: list[float], mean_loss: float, std_loss: float
) -> None:
    loss = np.array(values)
    baseline = Baseline(mean_loss=mean_loss, std_loss=std_loss)

    expected_z = (np.mean(loss) - mean_loss) / (std_loss / np.sqrt(loss.size))
    assert_close(z_score(loss.size, float(loss.sum()), baseline), float(expected_z))
    if mean_loss > 0.0:
        assert_close(ratio(float(np.mean(loss)), baseline), np.mean(loss) / mean_loss)


def test_z_score_and_ratio_edge_cases() -> None:
    baseline = Baseline(mean_loss=0.5, std_loss=0.25)

    assert z_score(0, loss_sum=0.0, baseline=baseline) is None
    assert z_score(4, loss_sum=2.0, baseline=baseline) == 0.0
    assert z_score(4, loss_sum=1.0, baseline=Baseline(0.5, 0.0)) is None
    assert ratio(None, baseline) is None
    assert ratio(0.7, Baseline(mean_loss=0.0, std_loss=0.1)) is None
    assert ratio(0.0, baseline) == 0.0


@pytest.mark.parametrize(
    ("events", "loss_sum", "message"),
    [
        (-1, 0.0, r"events >= 0 and a finite loss_sum, got events=-1, loss_sum=0.0"),
        (3, math.nan, r"got events=3, loss_sum=nan"),
    ],
)
def test_z_score_refuses(events: int, loss_sum: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        z_score(events, loss_sum, Baseline(mean_loss=0.5, std_loss=0.5))


# --- CUSUM against a per-event reference ------------------------------------


@dataclass
class NaiveCusum:
    """The documented recursion, one event at a time."""

    mean: float
    std: float
    shift_std: float
    threshold: float
    statistic: float = 0.0
    events: int = 0
    alarm_events: list[int] = field(default_factory=list)

    def update(self, batch: list[float]) -> bool:
        alarmed = False
        for loss in batch:
            self.events += 1
            step = (loss - self.mean) / self.std - self.shift_std / 2.0
            self.statistic = max(0.0, self.statistic + step)
            if self.statistic > self.threshold:
                self.alarm_events.append(self.events)
                self.statistic = 0.0
                alarmed = True
        return alarmed


def assert_same_as_naive(
    detector: LossCusum,
    naive: NaiveCusum,
    batch: list[float],
) -> None:
    """The detector after ``batch``, exactly as the one-event-at-a-time recursion."""
    returned = detector.update(np.array(batch, dtype=np.float64))

    assert returned == naive.update(batch) == detector.drift_detected
    assert detector.events == naive.events
    assert detector.alarms == len(naive.alarm_events)
    assert detector.first_alarm_event == next(iter(naive.alarm_events), None)
    assert detector.last_alarm_event == (
        naive.alarm_events[-1] if naive.alarm_events else None
    )
    assert detector.statistic == naive.statistic


def split(values: list[float], cuts: list[int]) -> list[list[float]]:
    bounds = [0, *sorted(cuts), len(values)]
    return [values[start:stop] for start, stop in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(
    # Multiples of 1/8 with a dyadic baseline: every sum is exact, so the
    # statistic must equal the naive one bit for bit, ties at h included.
    eighths=st.lists(st.integers(min_value=0, max_value=80), max_size=300),
    threshold=st.sampled_from([0.25, 1.0, 3.0, 8.0, 40.0]),
    shift_std=st.sampled_from([0.5, 1.0, 4.0]),
    data=st.data(),
)
def test_cusum_matches_naive_exactly_on_dyadic_losses(
    eighths: list[int], threshold: float, shift_std: float, data: st.DataObject
) -> None:
    values = [count / 8.0 for count in eighths]
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=6))
    baseline = Baseline(mean_loss=1.0, std_loss=0.5)
    detector = LossCusum(baseline, shift_std=shift_std, threshold=threshold)
    naive = NaiveCusum(1.0, 0.5, shift_std, threshold)

    for batch in split(values, cuts):
        assert_same_as_naive(detector, naive, batch)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(losses, max_size=300),
    mean_loss=st.floats(min_value=0.0, max_value=3.0),
    std_loss=st.floats(min_value=0.05, max_value=3.0),
    shift_std=st.floats(min_value=0.01, max_value=3.0),
    threshold=st.floats(min_value=0.1, max_value=100.0),
    data=st.data(),
)
def test_cusum_matches_naive_on_any_losses(
    values: list[float],
    mean_loss: float,
    std_loss: float,
    shift_std: float,
    threshold: float,
    data: st.DataObject,
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=6))
    baseline = Baseline(mean_loss=mean_loss, std_loss=std_loss)
    detector = LossCusum(baseline, shift_std=shift_std, threshold=threshold)
    naive = NaiveCusum(mean_loss, std_loss, shift_std, threshold)

    for batch in split(values, cuts):
        assert_same_as_naive(detector, naive, batch)


def beta_losses(
    rng: np.random.Generator, events: int, *, overconfidence: float = 1.0
) -> NDArray[np.float64]:
    """Losses of a binary model with ``p ~ Beta(1, 3)``, calibrated at 1.0.

    ``overconfidence`` raises the reported log-odds by that factor while the
    labels keep following ``p``; 3.0 raises the mean loss by about half.
    """
    p = rng.beta(1.0, 3.0, events)
    reported = 1.0 / (1.0 + ((1.0 - p) / p) ** overconfidence)
    return binary_log_loss(reported, rng.random(events) < p)


@pytest.mark.parametrize(
    ("name", "losses_of"),
    [
        # Every event alarms.
        ("every event", lambda rng: [36.04] * 30_000),
        # Alarms some tens of events apart.
        (
            "drifting",
            lambda rng: beta_losses(rng, 60_000, overconfidence=4.0).tolist(),
        ),
        # No alarm for long stretches: the statistic carries across batches.
        ("stable", lambda rng: beta_losses(rng, 60_000).tolist()),
    ],
)
def test_cusum_matches_naive_on_long_batches(name: str, losses_of: Any) -> None:
    values = losses_of(np.random.default_rng(5))
    baseline = Baseline(mean_loss=0.46, std_loss=0.54)
    detector = LossCusum(baseline, shift_std=0.2, threshold=8.0)
    naive = NaiveCusum(0.46, 0.54, 0.2, 8.0)

    assert_same_as_naive(detector, naive, values)
    assert_same_as_naive(detector, naive, values[:12_345])


def calibrated_detector(
    rng: np.random.Generator, *, relative_shift: float, arl0_events: float
) -> LossCusum:
    reference = beta_losses(rng, 100_000)
    baseline = Baseline.from_window(
        reference.size, float(reference.sum()), float(np.square(reference).sum())
    )
    shift_std = relative_shift * baseline.mean_loss / baseline.std_loss
    calibration = calibrate_threshold(
        reference, baseline=baseline, shift_std=shift_std, arl0_events=arl0_events
    )
    return LossCusum(baseline, shift_std=shift_std, threshold=calibration.threshold)


def test_cusum_is_silent_on_a_stable_stream_and_fires_on_a_shift() -> None:
    # At ARL0 = 1e6, 200 000 stable events pass without an alarm with a
    # probability of about 0.8; the seed is fixed.
    rng = np.random.default_rng(12)
    detector = calibrated_detector(rng, relative_shift=0.2, arl0_events=1e6)

    assert not detector.update(beta_losses(rng, 200_000))
    assert detector.alarms == 0

    assert detector.update(beta_losses(rng, 5_000, overconfidence=3.0))
    assert detector.first_alarm_event is not None
    assert detector.first_alarm_event - 200_000 < 1_000


def test_empty_batch_clears_drift_detected() -> None:
    detector = LossCusum(Baseline(1.0, 0.5), shift_std=1.0, threshold=1.0)
    assert detector.update(np.array([5.0]))

    assert not detector.update(np.array([]))
    assert not detector.drift_detected
    assert (detector.events, detector.alarms) == (1, 1)


def test_reset_forgets_events_and_alarms() -> None:
    detector = LossCusum(Baseline(1.0, 0.5), shift_std=1.0, threshold=1.0)
    fresh = detector.to_state()
    detector.update(np.array([5.0, 1.5]))

    detector.reset()

    assert detector.to_state() == fresh


@settings(max_examples=100, deadline=None)
@given(
    eighths=st.lists(st.integers(min_value=0, max_value=80), max_size=200),
    data=st.data(),
)
def test_cusum_state_round_trips_through_json(
    eighths: list[int], data: st.DataObject
) -> None:
    values = [count / 8.0 for count in eighths]
    saved_after = data.draw(st.integers(min_value=0, max_value=len(values)))
    detector = LossCusum(Baseline(1.0, 0.5), shift_std=0.5, threshold=3.0)
    detector.update(np.array(values[:saved_after]))

    state = detector.to_state()
    restored = LossCusum.from_state(json.loads(json.dumps(state)))

    assert restored.to_state() == state
    rest = np.array(values[saved_after:])
    assert restored.update(rest) == detector.update(rest)
    assert restored.to_state() == detector.to_state()


def test_cusum_state_is_plain_data() -> None:
    detector = LossCusum(Baseline(1.0, 0.5), shift_std=1.0, threshold=2.0)
    detector.update(np.array([3.0, 0.0, 2.0]))

    assert detector.to_state() == {
        "baseline_mean_loss": 1.0,
        "baseline_std_loss": 0.5,
        "shift_std": 1.0,
        "threshold": 2.0,
        "statistic": 1.5,
        "drift_detected": True,
        "events": 3,
        "alarms": 1,
        "first_alarm_event": 1,
        "last_alarm_event": 1,
    }


def saved_cusum(**changes: object) -> dict[str, object]:
    detector = LossCusum(Baseline(1.0, 0.5), shift_std=1.0, threshold=2.0)
    detector.update(np.array([3.0, 0.0, 2.0]))
    return detector.to_state() | changes


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"threshold": 2.0},
            r"state is malformed \(KeyError\('baseline_mean_loss'\)\); expected the "
            r"output of LossCusum.to_state\(\)",
        ),
        (saved_cusum(events=None), r"malformed .*expected a count .* got None"),
        (saved_cusum(alarms=1.5), r"malformed .*got 1.5"),
        (saved_cusum(first_alarm_event=True), r"malformed .*got True"),
        (saved_cusum(statistic=2.5), r"inconsistent: statistic=2.5, threshold=2.0"),
        (saved_cusum(alarms=4), r"inconsistent: .*events=3, alarms=4"),
        (saved_cusum(first_alarm_event=None), r"inconsistent: .*first_alarm_event"),
        (saved_cusum(first_alarm_event=2), r"inconsistent: .*first_alarm_event=2"),
        (saved_cusum(last_alarm_event=4), r"inconsistent: .*last_alarm_event=4"),
        (saved_cusum(last_alarm_event=3), r"inconsistent: .*alarms=1, .*=1, .*=3"),
        (saved_cusum(alarms=2), r"inconsistent: .*alarms=2, first_alarm_event=1"),
        (saved_cusum(threshold=-1.0), r"threshold must be finite and positive"),
        (saved_cusum(baseline_std_loss=-1.0), r"std_loss must be finite"),
    ],
)
def test_cusum_from_state_refuses(state: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LossCusum.from_state(state)


@pytest.mark.parametrize(
    ("baseline", "shift_std", "threshold", "message"),
    [
        (
            Baseline(0.5, 0.0),
            1.0,
            5.0,
            r"needs a baseline with std_loss > 0, got Baseline\(mean_loss=0.5, "
            r"std_loss=0.0\); learn the baseline from a window whose losses vary",
        ),
        (Baseline(0.5, 0.5), 0.0, 5.0, r"shift_std must be finite and positive"),
        (Baseline(0.5, 0.5), math.nan, 5.0, r"shift_std .* got nan"),
        (
            Baseline(0.5, 0.5),
            1.0,
            0.0,
            r"threshold must be finite and positive, got 0.0; derive it with "
            r"calibrate_threshold\(\)",
        ),
        (Baseline(0.5, 0.5), 1.0, math.inf, r"threshold .* got inf"),
    ],
)
def test_cusum_refuses_configuration(
    baseline: Baseline, shift_std: float, threshold: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LossCusum(baseline, shift_std=shift_std, threshold=threshold)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.array([0.5, -0.1]), r"finite and not negative, got -0.1 at index 1"),
        (np.array([math.nan]), r"got nan at index 0"),
        (np.array([[0.5]]), r"losses must be a 1-D array, got shape \(1, 1\)"),
    ],
)
def test_cusum_refuses_bad_losses(batch: NDArray[np.float64], message: str) -> None:
    detector = LossCusum(Baseline(0.5, 0.5), shift_std=1.0, threshold=5.0)

    with pytest.raises(ValueError, match=message):
        detector.update(batch)
    assert detector.events == 0


# --- thresholds -----------------------------------------------------------------


def test_siegmund_arl0_has_the_textbook_value() -> None:
    # k = 0.5, h = 5: Siegmund's approximation is 938.2 (the exact ARL0 is 930).
    assert siegmund_arl0(shift_std=1.0, threshold=5.0) == pytest.approx(938.2, abs=0.1)


@pytest.mark.parametrize("shift_std", [0.01, 0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("arl0_events", [100.0, 1e4, 1e6, 1e9])
def test_siegmund_threshold_inverts_the_arl0(
    shift_std: float, arl0_events: float
) -> None:
    threshold = siegmund_threshold(shift_std=shift_std, arl0_events=arl0_events)

    assert siegmund_arl0(shift_std=shift_std, threshold=threshold) == pytest.approx(
        arl0_events, rel=TOLERANCE
    )


def simulated_arl0(detector: LossCusum, batches: list[NDArray[np.float64]]) -> float:
    for batch in batches:
        detector.update(batch)
    assert detector.alarms >= 500
    return detector.events / detector.alarms


def test_siegmund_threshold_holds_for_gaussian_losses() -> None:
    rng = np.random.default_rng(2)
    threshold = siegmund_threshold(shift_std=1.0, arl0_events=500.0)
    detector = LossCusum(Baseline(10.0, 1.0), shift_std=1.0, threshold=threshold)

    batches = [rng.normal(10.0, 1.0, 100_000) for _ in range(20)]

    assert simulated_arl0(detector, batches) == pytest.approx(500.0, rel=0.05)


def test_calibration_gives_siegmund_back_for_gaussian_losses() -> None:
    rng = np.random.default_rng(4)
    reference = rng.normal(10.0, 1.0, 200_000)
    baseline = Baseline(mean_loss=10.0, std_loss=1.0)

    calibration = calibrate_threshold(
        reference, baseline=baseline, shift_std=0.5, arl0_events=1e6, margin_std=0.0
    )

    assert calibration.adjustment == pytest.approx(0.5, rel=0.02)
    assert calibration.overshoot_std == pytest.approx(SIEGMUND_OVERSHOOT_STD, abs=0.2)
    assert calibration.threshold == pytest.approx(
        siegmund_threshold(shift_std=0.5, arl0_events=1e6), rel=0.02
    )


def test_calibration_raises_the_threshold_for_skewed_log_losses() -> None:
    rng = np.random.default_rng(6)
    reference = beta_losses(rng, 200_000)
    baseline = Baseline(float(reference.mean()), float(reference.std()))

    calibration = calibrate_threshold(
        reference, baseline=baseline, shift_std=0.5, arl0_events=1e6
    )

    assert calibration.adjustment < 0.8 * 0.5
    assert calibration.threshold > 1.2 * siegmund_threshold(
        shift_std=0.5, arl0_events=1e6
    )


def test_calibrated_threshold_holds_on_its_own_reference() -> None:
    rng = np.random.default_rng(8)
    reference = beta_losses(rng, 100_000)
    baseline = Baseline(float(reference.mean()), float(reference.std()))
    # The resampled stream has the baseline's mean exactly: no margin needed.
    threshold = calibrate_threshold(
        reference,
        baseline=baseline,
        shift_std=0.5,
        arl0_events=5_000.0,
        margin_std=0.0,
        seed=1,
    ).threshold
    detector = LossCusum(baseline, shift_std=0.5, threshold=threshold)

    batches = [reference[rng.integers(0, reference.size, 500_000)] for _ in range(8)]

    assert simulated_arl0(detector, batches) == pytest.approx(5_000.0, rel=0.1)


def test_margin_raises_the_threshold() -> None:
    rng = np.random.default_rng(9)
    reference = beta_losses(rng, 50_000)
    baseline = Baseline(float(reference.mean()), float(reference.std()))

    thresholds = [
        calibrate_threshold(
            reference,
            baseline=baseline,
            shift_std=0.2,
            arl0_events=1e5,
            margin_std=margin,
        ).threshold
        for margin in (0.0, 0.01)
    ]

    assert thresholds[1] > thresholds[0]


def test_default_margin_is_two_standard_errors_of_the_reference() -> None:
    rng = np.random.default_rng(15)
    reference = beta_losses(rng, 40_000)
    baseline = Baseline(float(reference.mean()), float(reference.std()))

    by_default, explicit = (
        calibrate_threshold(
            reference, baseline=baseline, shift_std=0.2, arl0_events=1e5, **margin
        )
        for margin in ({}, {"margin_std": 2.0 / math.sqrt(40_000)})
    )

    assert by_default == explicit


def test_calibration_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(10)
    reference = beta_losses(rng, 20_000)
    baseline = Baseline(float(reference.mean()), float(reference.std()))

    first, second = (
        calibrate_threshold(
            reference, baseline=baseline, shift_std=0.5, arl0_events=1e4, seed=3
        )
        for _ in range(2)
    )

    assert first == second


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"shift_std": -1.0}, r"shift_std must be finite and positive, got -1.0"),
        ({"arl0_events": 1.0}, r"arl0_events must be a finite number of events abo"),
        ({"arl0_events": math.inf}, r"arl0_events .* got inf"),
        ({"pilot_arl0_events": 0.5}, r"pilot_arl0_events .* got 0.5"),
        ({"margin_std": -0.1}, r"margin_std must be finite and not negative"),
        ({"simulated_events": 0}, r"simulated_events must be positive, got 0"),
        (
            {"reference_losses": np.ones(999)},
            r"at least 1000 reference losses, got 999",
        ),
        (
            {"baseline": Baseline(0.1, 0.5)},
            r"average at or above the baseline mean plus the allowance, so the "
            r"statistic would climb without any drift",
        ),
        ({"margin_std": 5.0}, r"average at or above the baseline mean"),
        (
            {"shift_std": 200.0},
            r"no reference loss is above the baseline mean plus the allowance",
        ),
        (
            {"simulated_events": 10_000},
            r"the pilot run raised \d+ alarms in 10000 events, fewer than 100; "
            r"raise simulated_events",
        ),
        (
            {"baseline": Baseline(0.5, 0.0)},
            r"calibrating needs a baseline with std_loss > 0",
        ),
    ],
)
def test_calibration_refuses(changes: dict[str, Any], message: str) -> None:
    reference = beta_losses(np.random.default_rng(12), 5_000)
    arguments: dict[str, Any] = {
        "reference_losses": reference,
        "baseline": Baseline(float(reference.mean()), float(reference.std())),
        "shift_std": 0.5,
        "arl0_events": 1e6,
    }

    with pytest.raises(ValueError, match=message):
        calibrate_threshold(**(arguments | changes))


def test_siegmund_threshold_refuses_an_arl0_below_its_floor() -> None:
    with pytest.raises(
        ValueError,
        match=r"arl0_events=1.2 is at or below 2.09, the ARL0 of a threshold of 0 "
        r"for shift_std=1.0; ask for more events",
    ):
        siegmund_threshold(shift_std=1.0, arl0_events=1.2)


# --- prediction and calibration sums ---------------------------------------------


@st.composite
def binary_events(draw: st.DrawFn) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    size = draw(st.integers(min_value=1, max_value=80))
    probability = draw(st.lists(probabilities, min_size=size, max_size=size))
    label = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    return np.array(probability), np.array(label)


@st.composite
def multiclass_events(
    draw: st.DrawFn,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Rows that sum to 1, one-hot and uniform rows and ties included."""
    classes = draw(st.integers(min_value=2, max_value=5))
    size = draw(st.integers(min_value=1, max_value=50))
    weight = st.one_of(
        st.sampled_from([0.0, 1.0]), st.floats(min_value=0.0, max_value=1.0)
    )
    rows = np.array(
        draw(
            st.lists(
                st.lists(weight, min_size=classes, max_size=classes),
                min_size=size,
                max_size=size,
            )
        )
    )
    rows[rows.sum(axis=1) == 0.0] = 1.0
    labels = draw(st.lists(st.integers(0, classes - 1), min_size=size, max_size=size))
    return rows / rows.sum(axis=1, keepdims=True), np.array(labels, dtype=np.int64)


def naive_bin(probability: float) -> int:
    """Bin ``b`` holds ``edge[b] < p <= edge[b + 1]``; the first also ``p = 0``."""
    return sum(edge < probability for edge in BIN_EDGES[1:-1])


def naive_counts(scores: NDArray[np.float64]) -> list[int]:
    counts = [0] * PROBABILITY_BINS
    for score in scores.tolist():
        counts[naive_bin(score)] += 1
    return counts


def sklearn_log_loss(
    label: NDArray[np.int64],
    probability: NDArray[np.float64],
    weight: NDArray[np.float64],
    *,
    classes: int,
) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return float(
            log_loss(label, probability, sample_weight=weight, labels=range(classes))
        )


@settings(max_examples=150, deadline=None)
@given(binary_events())
def test_binary_prediction_sums_match_sklearn_and_numpy(
    events: tuple[NDArray[np.float64], NDArray[np.bool_]],
) -> None:
    probability, _ = events
    sums = PredictionSums.from_binary(probability)

    # The expected log loss is sklearn's log loss with each event taken once
    # per label, weighted by the probability the model gives that label.
    rows = np.column_stack([1.0 - probability, probability])
    expected = sklearn_log_loss(
        np.tile([0, 1], probability.size),
        np.repeat(rows, 2, axis=0),
        rows.ravel(),
        classes=2,
    )
    assert_close(sums.expected_log_loss, expected)
    assert_close(sums.mean_probability, float(np.mean(probability)))
    assert list(sums.bin_counts) == naive_counts(probability)
    assert sums.events == probability.size


@settings(max_examples=150, deadline=None)
@given(multiclass_events())
def test_multiclass_prediction_sums_match_sklearn_and_numpy(
    events: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    rows, _ = events
    size, classes = rows.shape
    sums = PredictionSums.from_multiclass(rows)

    expected = sklearn_log_loss(
        np.tile(np.arange(classes), size),
        np.repeat(rows, classes, axis=0),
        rows.ravel(),
        classes=classes,
    )
    assert_close(sums.expected_log_loss, expected)
    assert_close(sums.mean_probability, float(np.mean(rows.max(axis=1))))
    assert list(sums.bin_counts) == naive_counts(rows.max(axis=1))


def test_expected_log_loss_is_the_mean_loss_of_a_calibrated_model() -> None:
    rng = np.random.default_rng(13)
    probability = rng.beta(1.0, 3.0, 400_000)
    label = rng.random(probability.size) < probability

    sums = PredictionSums.from_binary(probability)

    observed = float(binary_log_loss(probability, label).mean())
    assert sums.expected_log_loss == pytest.approx(observed, rel=0.01)


def test_prediction_entropy_is_clipped_like_the_loss() -> None:
    sums = PredictionSums.from_binary(np.array([0.0, 1.0, 0.5]), eps=0.25)

    # A certain prediction expects the loss of a right one, -log(1 - eps).
    expected = math.log(2.0) - 2.0 * math.log(0.75)
    assert sums.entropy_sum == pytest.approx(expected, rel=TOLERANCE)


@settings(max_examples=150, deadline=None)
@given(binary_events())
def test_binary_calibration_sums_match_sklearn(
    events: tuple[NDArray[np.float64], NDArray[np.bool_]],
) -> None:
    probability, label = events
    sums = CalibrationSums.from_binary(probability, label)

    assert_close(sums.brier_score, float(brier_score_loss(label, probability)))
    assert_close(sums.positive_rate, float(np.mean(label)))
    assert_close(sums.mean_probability, float(np.mean(probability)))

    prob_true, prob_pred = calibration_curve(
        label, probability, n_bins=PROBABILITY_BINS, strategy="uniform"
    )
    counts = np.array(naive_counts(probability))
    assert list(sums.bin_counts) == counts.tolist()
    nonempty = counts > 0
    for actual, expected in [
        (sums.bin_positive_rate, prob_true),
        (sums.bin_mean_probability, prob_pred),
    ]:
        assert [value is None for value in actual] == (~nonempty).tolist()
        for value, reference in zip(
            [value for value in actual if value is not None], expected, strict=True
        ):
            assert_close(value, float(reference))

    weights = counts[nonempty] / probability.size
    expected_ece = float(np.sum(weights * np.abs(prob_true - prob_pred)))
    assert_close(sums.calibration_error, expected_ece)


@settings(max_examples=150, deadline=None)
@given(multiclass_events())
def test_multiclass_calibration_sums_match_sklearn_and_numpy(
    events: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    rows, label = events
    size, classes = rows.shape
    sums = CalibrationSums.from_multiclass(rows, label)

    expected_brier = brier_score_loss(
        label, rows, labels=range(classes), scale_by_half=False
    )
    assert_close(sums.brier_score, float(expected_brier))

    # Top-label calibration, naively: confidence against hits, bin by bin.
    confidence = rows.max(axis=1)
    hit = rows.argmax(axis=1) == label
    assert_close(sums.positive_rate, float(np.mean(hit)))
    assert_close(sums.mean_probability, float(np.mean(confidence)))
    bins = np.array([naive_bin(value) for value in confidence.tolist()])
    expected_ece = sum(
        np.sum(bins == b)
        / size
        * abs(confidence[bins == b].mean() - hit[bins == b].mean())
        for b in range(PROBABILITY_BINS)
        if np.any(bins == b)
    )
    assert_close(sums.calibration_error, float(expected_ece))


@settings(max_examples=100, deadline=None)
@given(events=binary_events(), data=st.data())
def test_binary_sums_add_up_across_shards(
    events: tuple[NDArray[np.float64], NDArray[np.bool_]], data: st.DataObject
) -> None:
    probability, label = events
    cut = data.draw(st.integers(min_value=0, max_value=probability.size))

    assert_sums_add_up(
        PredictionSums.from_binary(probability),
        PredictionSums.from_binary(probability[:cut])
        + PredictionSums.from_binary(probability[cut:]),
    )
    assert_sums_add_up(
        CalibrationSums.from_binary(probability, label),
        CalibrationSums.from_binary(probability[:cut], label[:cut])
        + CalibrationSums.from_binary(probability[cut:], label[cut:]),
    )


@settings(max_examples=100, deadline=None)
@given(events=multiclass_events(), data=st.data())
def test_multiclass_sums_add_up_across_shards(
    events: tuple[NDArray[np.float64], NDArray[np.int64]], data: st.DataObject
) -> None:
    rows, label = events
    cut = data.draw(st.integers(min_value=0, max_value=label.size))

    assert_sums_add_up(
        PredictionSums.from_multiclass(rows),
        PredictionSums.from_multiclass(rows[:cut])
        + PredictionSums.from_multiclass(rows[cut:]),
    )
    assert_sums_add_up(
        CalibrationSums.from_multiclass(rows, label),
        CalibrationSums.from_multiclass(rows[:cut], label[:cut])
        + CalibrationSums.from_multiclass(rows[cut:], label[cut:]),
    )


def assert_sums_add_up(
    whole: PredictionSums | CalibrationSums, halves: PredictionSums | CalibrationSums
) -> None:
    assert type(whole) is type(halves)
    for name in whole.__dataclass_fields__:
        expected, actual = getattr(whole, name), getattr(halves, name)
        if isinstance(expected, tuple):
            assert len(actual) == len(expected)
            for left, right in zip(actual, expected, strict=True):
                assert left == pytest.approx(right, rel=1e-12, abs=1e-12)
        else:
            assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_empty_sums_report_no_values() -> None:
    empty_predictions = PredictionSums()
    empty_outcomes = CalibrationSums.from_binary(np.array([]), np.array([]))

    assert empty_outcomes == CalibrationSums()
    assert empty_predictions.events == empty_outcomes.events == 0
    assert empty_predictions.expected_log_loss is None
    assert empty_predictions.mean_probability is None
    assert empty_outcomes.positive_rate is None
    assert empty_outcomes.brier_score is None
    assert empty_outcomes.calibration_error is None
    assert empty_outcomes.bin_mean_probability == (None,) * PROBABILITY_BINS


def test_multiclass_of_two_classes_has_twice_the_binary_brier_score() -> None:
    probability = np.array([0.2, 0.7, 0.9])
    label = np.array([0, 1, 0])

    binary = CalibrationSums.from_binary(probability, label.astype(np.bool_))
    rows = np.column_stack([1.0 - probability, probability])
    multiclass = CalibrationSums.from_multiclass(rows, label)

    assert binary.brier_score is not None and multiclass.brier_score is not None
    assert multiclass.brier_score == pytest.approx(2.0 * binary.brier_score)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: PredictionSums.from_binary(np.ones((2, 2))),
            r"binary probability must be a 1-D array, got shape \(2, 2\)",
        ),
        (
            lambda: PredictionSums.from_multiclass(np.ones((3, 1))),
            r"one column per class and at least 2 classes, got shape \(3, 1\)",
        ),
        (
            lambda: PredictionSums.from_multiclass(np.ones(3)),
            r"got shape \(3,\)",
        ),
        (
            lambda: PredictionSums.from_binary(np.array([0.5]), eps=0.5),
            r"eps must be in \(0, 0.5\), got 0.5",
        ),
        (
            lambda: CalibrationSums.from_binary(np.ones(3), np.ones(2)),
            r"same shape, got \(3,\) and \(2,\): one label per prediction",
        ),
        (
            lambda: CalibrationSums.from_multiclass(
                np.full((2, 3), 1 / 3), np.array([0, 3])
            ),
            r"label must index the 3 classes, got values from 0 to 3",
        ),
        (
            lambda: CalibrationSums.from_multiclass(
                np.full((2, 3), 1 / 3), np.array([0.0, 1.0])
            ),
            r"label must be 1-D integer class indices, one per row, got dtype "
            r"float64 and shape \(2,\) for 2 rows",
        ),
        (
            lambda: PredictionSums(bin_counts=(1, 2)),
            r"bin_counts must have 10 bins, got 2: the probability bins are fixed",
        ),
        (
            lambda: CalibrationSums(bin_probability_sums=(0.0,)),
            r"bin_probability_sums must have 10 bins, got 1",
        ),
    ],
)
def test_sums_refuse(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# --- PSI ---------------------------------------------------------------------


def naive_psi(current: list[float], reference: list[float], eps: float) -> float:
    current_total, reference_total = sum(current), sum(reference)
    total = 0.0
    for c, r in zip(current, reference, strict=True):
        c_share = max(c / current_total, eps)
        r_share = max(r / reference_total, eps)
        total += (c_share - r_share) * math.log(c_share / r_share)
    return total


histograms = st.integers(min_value=1, max_value=12).flatmap(
    lambda bins: st.tuples(
        st.lists(st.integers(0, 10**6), min_size=bins, max_size=bins),
        st.lists(st.integers(0, 10**6), min_size=bins, max_size=bins),
    )
)


@given(histograms, st.sampled_from([1e-6, 1e-4, 1e-2]))
def test_psi_matches_the_naive_formula(
    pair: tuple[list[int], list[int]], eps: float
) -> None:
    current, reference = pair
    result = psi(current, reference, eps=eps)

    if sum(current) == 0 or sum(reference) == 0:
        assert result is None
        return
    expected = naive_psi(
        [float(c) for c in current], [float(r) for r in reference], eps
    )
    assert_close(result, expected)
    assert result == pytest.approx(psi(reference, current, eps=eps), rel=1e-12)
    scaled = [3 * count for count in current]
    assert result == pytest.approx(psi(scaled, reference, eps=eps), rel=1e-12)


def test_psi_of_a_histogram_with_itself_is_zero() -> None:
    counts = [5, 0, 3, 2]

    assert psi(counts, counts) == 0.0


def test_psi_of_prediction_histograms() -> None:
    rng = np.random.default_rng(14)
    reference = PredictionSums.from_binary(rng.beta(1.0, 3.0, 100_000))
    same = PredictionSums.from_binary(rng.beta(1.0, 3.0, 100_000))
    shifted = PredictionSums.from_binary(rng.beta(1.5, 3.0, 100_000))

    stable_psi = psi(same.bin_counts, reference.bin_counts)
    shifted_psi = psi(shifted.bin_counts, reference.bin_counts)
    assert stable_psi is not None and shifted_psi is not None
    assert stable_psi < 0.001 < 0.05 < shifted_psi


@pytest.mark.parametrize(
    ("current", "reference", "eps", "message"),
    [
        ([1, 2], [1, 2, 3], 1e-4, r"same bins, got shapes \(2,\) and \(3,\)"),
        ([1, -2], [1, 2], 1e-4, r"histogram counts must not be negative"),
        ([1, math.nan], [1, 2], 1e-4, r"histogram counts must be finite"),
        ([1, 2], [1, 2], 0.0, r"eps must be in \(0, 1\), got 0.0"),
    ],
)
def test_psi_refuses(
    current: list[float], reference: list[float], eps: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        psi(current, reference, eps=eps)


def test_docstring_examples_pass() -> None:
    result = doctest.testmod(drift, verbose=False, report=True)

    assert result.attempted > 0
    assert result.failed == 0
