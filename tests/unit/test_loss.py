"""Per-event log loss against scikit-learn's ``log_loss`` on the same events."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.metrics import log_loss

from streamer.loss import DEFAULT_EPS, binary_log_loss, multiclass_log_loss

TOLERANCE = 1e-9

EDGE_PROBABILITIES = [
    0.0,
    1.0,
    DEFAULT_EPS,
    1.0 - DEFAULT_EPS,
    DEFAULT_EPS / 2,
    1.0 - DEFAULT_EPS / 2,
    5e-324,
    1e-300,
    0.5,
]

probabilities = st.one_of(
    st.sampled_from(EDGE_PROBABILITIES),
    st.floats(min_value=0.0, max_value=1.0),
)


def sklearn_log_loss(
    label: NDArray[np.int64], probability: NDArray[np.float64], *, classes: int
) -> float:
    """scikit-learn's mean log loss; any warning (rows not summing to 1) fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return float(log_loss(label, probability, labels=list(range(classes))))


def assert_close(actual: float, expected: float) -> None:
    difference = abs(actual - expected)
    assert difference <= TOLERANCE
    assert difference <= TOLERANCE * abs(expected)


@st.composite
def binary_events(draw: st.DrawFn) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    size = draw(st.integers(min_value=1, max_value=60))
    probability = draw(st.lists(probabilities, min_size=size, max_size=size))
    label = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    return np.array(probability), np.array(label)


@st.composite
def probability_rows(draw: st.DrawFn, *, classes: int) -> list[float]:
    """A row that sums to 1: normalised weights, zeros and one-hot rows included."""
    weight = st.one_of(
        st.sampled_from([0.0, 1.0]), st.floats(min_value=0.0, max_value=1.0)
    )
    row = np.array(draw(st.lists(weight, min_size=classes, max_size=classes)))
    if row.sum() == 0.0:
        row[draw(st.integers(min_value=0, max_value=classes - 1))] = 1.0
    return list(row / row.sum())


@st.composite
def multiclass_events(
    draw: st.DrawFn,
) -> tuple[NDArray[np.float64], NDArray[np.int64], int]:
    classes = draw(st.integers(min_value=2, max_value=6))
    size = draw(st.integers(min_value=1, max_value=40))
    rows = draw(
        st.lists(probability_rows(classes=classes), min_size=size, max_size=size)
    )
    label = draw(
        st.lists(
            st.integers(min_value=0, max_value=classes - 1),
            min_size=size,
            max_size=size,
        )
    )
    return np.array(rows), np.array(label, dtype=np.int64), classes


def test_default_eps_is_float64_machine_epsilon() -> None:
    assert DEFAULT_EPS == 2.0**-52


@settings(max_examples=300)
@given(binary_events())
def test_binary_mean_matches_sklearn(
    events: tuple[NDArray[np.float64], NDArray[np.bool_]],
) -> None:
    probability, label = events

    ours = float(binary_log_loss(probability, label).mean())

    assert_close(ours, sklearn_log_loss(label.astype(np.int64), probability, classes=2))


@pytest.mark.parametrize("probability", EDGE_PROBABILITIES)
@pytest.mark.parametrize("label", [False, True])
def test_binary_edge_event_matches_sklearn(probability: float, label: bool) -> None:
    ours = binary_log_loss(np.array([probability]), np.array([label]))

    expected = sklearn_log_loss(
        np.array([int(label)]), np.array([probability]), classes=2
    )
    assert_close(float(ours[0]), expected)


def test_binary_certain_and_wrong_costs_minus_log_eps() -> None:
    losses = binary_log_loss(np.array([0.0, 1.0]), np.array([True, False]))

    np.testing.assert_array_equal(losses, -np.log([DEFAULT_EPS, DEFAULT_EPS]))


def test_binary_negative_label_clips_one_minus_p() -> None:
    # With eps = 0.1, clip(1 - 0.95) is 0.1 but 1 - clip(0.95) is
    # 0.09999999999999998: only the first is what scikit-learn computes.
    loss = binary_log_loss(np.array([0.95]), np.array([False]), eps=0.1)

    assert loss[0] == -math.log(0.1)


def test_binary_custom_eps_bounds_the_loss() -> None:
    losses = binary_log_loss(
        np.array([0.0, 1.0, 0.0, 1.0]), np.array([True, False, False, True]), eps=0.01
    )

    np.testing.assert_allclose(
        losses, [-math.log(0.01)] * 2 + [-math.log(0.99)] * 2, rtol=1e-15
    )


@settings(max_examples=300)
@given(multiclass_events())
def test_multiclass_mean_matches_sklearn(
    events: tuple[NDArray[np.float64], NDArray[np.int64], int],
) -> None:
    matrix, label, classes = events
    probability_of_label = matrix[np.arange(label.size), label]

    ours = float(multiclass_log_loss(probability_of_label).mean())

    assert_close(ours, sklearn_log_loss(label, matrix, classes=classes))


def test_multiclass_exact_zero_and_one_match_sklearn() -> None:
    matrix = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    label = np.array([1, 2, 0])

    ours = multiclass_log_loss(matrix[np.arange(3), label])

    np.testing.assert_array_equal(
        ours, -np.log([1.0 - DEFAULT_EPS, DEFAULT_EPS, DEFAULT_EPS])
    )
    assert_close(float(ours.mean()), sklearn_log_loss(label, matrix, classes=3))


def test_losses_are_finite_and_not_negative_at_the_bounds() -> None:
    probability = np.array([0.0, 1.0, 5e-324, 1.0 - 1e-17])

    for losses in (
        binary_log_loss(probability, np.array([True, False, True, False])),
        binary_log_loss(probability, np.array([False, True, False, True])),
        multiclass_log_loss(probability),
    ):
        assert np.all(np.isfinite(losses))
        assert np.all(losses > 0.0)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 0.5, 1.0, math.nan, math.inf])
def test_eps_outside_open_interval_is_refused(eps: float) -> None:
    message = r"eps must be in \(0, 0\.5\), got .*; it clips probabilities"

    with pytest.raises(ValueError, match=message):
        binary_log_loss(np.array([0.5]), np.array([True]), eps=eps)
    with pytest.raises(ValueError, match=message):
        multiclass_log_loss(np.array([0.5]), eps=eps)


def test_eps_error_shows_the_value_and_the_default() -> None:
    with pytest.raises(ValueError, match=r"got 0\.7; .*default 2\.220446049250313e-16"):
        multiclass_log_loss(np.array([0.5]), eps=0.7)


def test_binary_refuses_arrays_of_different_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"same shape, got \(2,\) and \(3,\): one label per prediction"
    ):
        binary_log_loss(np.array([0.1, 0.2]), np.array([True, False, True]))
