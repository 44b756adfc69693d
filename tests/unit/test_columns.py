"""Extra columns passed by bin add up exactly as when written out."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.columns import (
    CALIBRATION_COLUMNS,
    PREDICTION_COLUMNS,
    calibration_columns,
    calibration_parts,
    prediction_columns,
    prediction_parts,
)
from streamer.drift import INNER_BIN_EDGES
from streamer.windows import RollingWindows, WindowSpec
from tests.unit.test_windows import ring_slots

SPECS = [
    WindowSpec(name="short", length_ms=400, buckets=4),
    WindowSpec(name="long", length_ms=6_000, buckets=3),
]
# Bin edges themselves, their neighbours, the ends, and anything between.
SCORES = st.sampled_from(
    [0.0, 1.0, *INNER_BIN_EDGES.tolist()]
    + [float(np.nextafter(edge, 2.0)) for edge in INNER_BIN_EDGES]
    + [float(np.nextafter(edge, -1.0)) for edge in INNER_BIN_EDGES]
) | st.floats(0.0, 1.0)
EVENTS = st.lists(
    st.tuples(st.integers(0, 9_000), SCORES, st.booleans(), st.floats(0.0, 1.0)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(EVENTS, min_size=1, max_size=5))
def test_calibration_by_bin_is_the_written_out_columns(
    batches: list[list[tuple[int, float, bool, float]]],
) -> None:
    by_bin = RollingWindows(SPECS, extra_columns=CALIBRATION_COLUMNS)
    written = RollingWindows(SPECS, extra_columns=CALIBRATION_COLUMNS)
    for batch in batches:
        ts = np.array([e[0] for e in batch], dtype=np.int64)
        score = np.array([e[1] for e in batch], dtype=np.float64)
        positive = np.array([e[2] for e in batch], dtype=np.bool_)
        squared = np.array([e[3] for e in batch], dtype=np.float64)
        loss = squared * 2.0
        late = by_bin.add_binned(
            ts,
            loss,
            *calibration_parts(score, positive, squared),
            edges=INNER_BIN_EDGES,
        )
        assert late == written.add(
            ts, loss, calibration_columns(score, positive, squared)
        )
        assert ring_slots(by_bin) == ring_slots(written)


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(EVENTS, min_size=1, max_size=5))
def test_predictions_by_bin_are_the_written_out_columns(
    batches: list[list[tuple[int, float, bool, float]]],
) -> None:
    by_bin = RollingWindows(SPECS, extra_columns=PREDICTION_COLUMNS)
    written = RollingWindows(SPECS, extra_columns=PREDICTION_COLUMNS)
    for batch in batches:
        ts = np.array([e[0] for e in batch], dtype=np.int64)
        score = np.array([e[1] for e in batch], dtype=np.float64)
        entropy = np.array([e[3] for e in batch], dtype=np.float64)
        late = by_bin.add_binned(
            ts, entropy, *prediction_parts(score), edges=INNER_BIN_EDGES
        )
        assert late == written.add(ts, entropy, prediction_columns(score))
        assert ring_slots(by_bin) == ring_slots(written)


def test_a_score_that_is_not_finite_changes_nothing() -> None:
    windows = RollingWindows(SPECS, extra_columns=PREDICTION_COLUMNS)
    score = np.array([0.5, np.nan])
    try:
        windows.add_binned(
            np.array([0, 1]),
            np.array([0.1, 0.2]),
            *prediction_parts(score),
            edges=INNER_BIN_EDGES,
        )
    except ValueError as error:
        assert "extra columns must be finite" in str(error)
    else:
        raise AssertionError("a NaN score was taken")
    assert windows.is_empty(now_ms=1)
