"""How the drift sums ride in the rolling windows' extra columns.

Two kinds of windows are kept per series:

- *joined* windows, fed at each outcome's time: the loss, and
  :data:`CALIBRATION_COLUMNS` extra columns whose sums make a
  :class:`~streamer.drift.CalibrationSums` (squared error, then per
  probability bin the event count, the probability sum and the positives);
- *prediction* windows, fed at each prediction's time: the prediction's
  entropy in the loss column (so the window's mean "loss" is the expected log
  loss), and :data:`PREDICTION_COLUMNS` extra columns whose sums make a
  :class:`~streamer.drift.PredictionSums` (probability sum, then the bin
  counts).

Bins are those of :mod:`streamer.drift`, so the sums stay additive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamer.drift import (
    PROBABILITY_BINS,
    CalibrationSums,
    PredictionSums,
    probability_bins,
)

__all__ = [
    "CALIBRATION_COLUMNS",
    "PREDICTION_COLUMNS",
    "calibration_columns",
    "calibration_parts",
    "calibration_sums",
    "prediction_columns",
    "prediction_parts",
    "prediction_sums",
]

Parts = tuple[list[NDArray[np.float64]], NDArray[np.float64], list[Any]]
"""Extra columns by bin, as ``RollingWindows.add_binned`` takes them."""

CALIBRATION_COLUMNS = 1 + 3 * PROBABILITY_BINS
PREDICTION_COLUMNS = 1 + PROBABILITY_BINS

_B = PROBABILITY_BINS


def calibration_columns(
    score: NDArray[np.float64],
    positive: NDArray[np.bool_],
    squared_error: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Per joined event, its row of calibration columns, written out.

    The pipeline passes them by bin (:func:`calibration_parts`); this dense
    form is what that is tested against.

    ``score`` is the scored probability (binary ``p``, multiclass the top
    class's), ``positive`` whether the label is the positive (top) class, and
    ``squared_error`` the event's Brier term.
    """
    rows = np.zeros((score.size, CALIBRATION_COLUMNS), dtype=np.float64)
    events = np.arange(score.size)
    bins = probability_bins(score)
    rows[:, 0] = squared_error
    rows[events, 1 + bins] = 1.0
    rows[events, 1 + _B + bins] = score
    rows[events, 1 + 2 * _B + bins] = positive
    return rows


def calibration_parts(
    score: NDArray[np.float64],
    positive: NDArray[np.bool_],
    squared_error: NDArray[np.float64],
) -> Parts:
    """:func:`calibration_columns` by bin (``base``, ``score``, ``binned``)."""
    return [squared_error], score, [None, score, positive.astype(np.float64)]


def calibration_sums(extra_sums: tuple[float, ...]) -> CalibrationSums:
    """The calibration sums of a joined window's extra-column sums."""
    counts = extra_sums[1 : 1 + _B]
    positives = extra_sums[1 + 2 * _B : 1 + 3 * _B]
    return CalibrationSums(
        squared_error_sum=extra_sums[0],
        bin_counts=tuple(round(count) for count in counts),
        bin_probability_sums=tuple(extra_sums[1 + _B : 1 + 2 * _B]),
        bin_positive_counts=tuple(round(count) for count in positives),
    )


def prediction_columns(score: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per prediction, its row of prediction columns, written out.

    The pipeline passes them by bin (:func:`prediction_parts`); this dense
    form is what that is tested against.
    """
    rows = np.zeros((score.size, PREDICTION_COLUMNS), dtype=np.float64)
    rows[:, 0] = score
    rows[np.arange(score.size), 1 + probability_bins(score)] = 1.0
    return rows


def prediction_parts(score: NDArray[np.float64]) -> Parts:
    """:func:`prediction_columns` by bin (``base``, ``score``, ``binned``)."""
    return [score], score, [None]


def prediction_sums(
    entropy_sum: float, extra_sums: tuple[float, ...]
) -> PredictionSums:
    """The prediction sums of a prediction window's loss and extra-column sums."""
    return PredictionSums(
        entropy_sum=entropy_sum,
        probability_sum=extra_sums[0],
        bin_counts=tuple(round(count) for count in extra_sums[1 : 1 + _B]),
    )
