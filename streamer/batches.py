"""What one batch of messages adds per series: joined events and predictions.

The pipeline gathers, per (partition, series), the joined events of a batch
(:class:`JoinedBatch`, each judged by :func:`judge`) and its new predictions
(:class:`PredictionBatch`); both are then turned into arrays and added to the
series' windows and drift state at once. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray

from streamer.columns import Parts, calibration_parts
from streamer.config import ModelConfig
from streamer.events import Outcome, Prediction
from streamer.loss import multiclass_log_loss
from streamer.records import Invalid
from streamer.records import resolve_binary_label as _resolve_binary

__all__ = [
    "JoinedBatch",
    "JoinedColumns",
    "Judged",
    "PredictionBatch",
    "PredictionColumns",
    "judge",
]


@dataclass(frozen=True, slots=True)
class Judged:
    """One joined event, judged: what the windows and the drift sums need.

    ``p_true`` is the probability given to what happened (before clipping);
    ``score`` the scored probability (binary ``p``, multiclass the top
    class's), ``positive`` whether the label is the positive (top) class, and
    ``squared_error`` the event's Brier term (multiclass: over all classes).
    """

    p_true: float
    score: float
    positive: bool
    squared_error: float


def judge(
    prediction: Prediction, outcome: Outcome, model: ModelConfig | None
) -> Judged | Invalid:
    """Judge a joined pair, or say why its label does not fit the prediction.

    >>> from streamer.events import ModelKey
    >>> p = Prediction("e", ModelKey("m", ""), 0, probability=0.8)
    >>> judge(p, Outcome("e", 0, 0), None)
    Judged(p_true=0.19999999999999996, score=0.8, positive=False, squared_error=0.64...)
    """
    label = outcome.label
    if prediction.classes is not None and prediction.probabilities is not None:
        if isinstance(label, bool):
            return Invalid.UNKNOWN_CLASS
        name = str(label)
        if name not in prediction.classes:
            return Invalid.UNKNOWN_CLASS
        probabilities = prediction.probabilities
        index = prediction.classes.index(name)
        top = max(probabilities)
        return Judged(
            p_true=probabilities[index],
            score=top,
            positive=probabilities.index(top) == index,
            squared_error=sum(q * q for q in probabilities)
            - 2.0 * probabilities[index]
            + 1.0,
        )

    positive = _resolve_binary(
        label,
        positive=model.positive_label if model else None,
        negative=model.negative_label if model else None,
    )
    p = prediction.probability
    if positive is None or p is None:
        return Invalid.BAD_LABEL
    # 1 - p is formed before clipping, as scikit-learn does.
    return Judged(
        p_true=p if positive else 1.0 - p,
        score=p,
        positive=positive,
        squared_error=(p - 1.0) ** 2 if positive else p * p,
    )


class JoinedColumns(NamedTuple):
    """Joined events as arrays, one entry per event, in message order."""

    timestamps_ms: NDArray[np.int64]
    p_true: NDArray[np.float64]
    delays_s: NDArray[np.float64]
    scores: NDArray[np.float64]
    positives: NDArray[np.bool_]
    squared_errors: NDArray[np.float64]


class PredictionColumns(NamedTuple):
    """Predictions as arrays; ``probabilities`` flat, ``sizes`` per prediction."""

    timestamps_ms: NDArray[np.int64]
    scores: NDArray[np.float64]
    probabilities: NDArray[np.float64]
    sizes: NDArray[np.intp]


@dataclass
class JoinedBatch:
    """The joined events of one batch, for one (partition, series).

    Events come one at a time (:meth:`add`, the Python path) or as ready
    columns (:meth:`add_columns`, the compiled path); :meth:`columns` gives
    them all, in the order they came.
    """

    timestamps_ms: list[int] = field(default_factory=list)
    p_true: list[float] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    positives: list[bool] = field(default_factory=list)
    squared_errors: list[float] = field(default_factory=list)
    _chunks: list[JoinedColumns] = field(default_factory=list)

    def add(self, judged: Judged, outcome_ms: int, prediction_ms: int) -> None:
        self.timestamps_ms.append(outcome_ms)
        self.p_true.append(judged.p_true)
        self.scores.append(judged.score)
        self.positives.append(judged.positive)
        self.squared_errors.append(judged.squared_error)
        # An outcome stamped before its prediction (clock skew) counts as 0 s,
        # so the join-delay histogram's sum stays monotonic.
        self.delays_s.append(max(0, outcome_ms - prediction_ms) / 1000)

    def add_columns(self, columns: JoinedColumns) -> None:
        """Append events already in columns, after those added so far."""
        self._flush()
        self._chunks.append(columns)

    def columns(self) -> JoinedColumns:
        """Every event added, as arrays."""
        self._flush()
        return _concatenated(self._chunks, JoinedColumns)

    def calibration_parts(self) -> Parts:
        """Each event's calibration columns (:mod:`streamer.columns`), by bin."""
        columns = self.columns()
        return calibration_parts(
            columns.scores, columns.positives, columns.squared_errors
        )

    def _flush(self) -> None:
        if not self.timestamps_ms:
            return
        lists = (
            self.timestamps_ms,
            self.p_true,
            self.delays_s,
            self.scores,
            self.positives,
            self.squared_errors,
        )
        self._chunks.append(
            JoinedColumns(
                np.asarray(self.timestamps_ms, dtype=np.int64),
                np.asarray(self.p_true, dtype=np.float64),
                np.asarray(self.delays_s, dtype=np.float64),
                np.asarray(self.scores, dtype=np.float64),
                np.asarray(self.positives, dtype=np.bool_),
                np.asarray(self.squared_errors, dtype=np.float64),
            )
        )
        for values in lists:
            values.clear()


@dataclass
class PredictionBatch:
    """The new predictions of one batch, for one (partition, series).

    ``probabilities`` holds each prediction's class probabilities one after
    the other (binary: ``p`` and ``1 - p``), ``sizes`` how many each has.
    Predictions come one at a time (:meth:`add`) or as ready columns
    (:meth:`add_columns`); :meth:`columns` gives them all, in order.
    """

    timestamps_ms: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    _chunks: list[PredictionColumns] = field(default_factory=list)

    def add(self, prediction: Prediction) -> None:
        if prediction.probabilities is not None:
            self.timestamps_ms.append(prediction.timestamp_ms)
            self.scores.append(max(prediction.probabilities))
            self.probabilities.extend(prediction.probabilities)
            self.sizes.append(len(prediction.probabilities))
        elif prediction.probability is not None:
            p = prediction.probability
            self.timestamps_ms.append(prediction.timestamp_ms)
            self.scores.append(p)
            self.probabilities.extend((p, 1.0 - p))
            self.sizes.append(2)

    def add_columns(self, columns: PredictionColumns) -> None:
        """Append predictions already in columns, after those added so far."""
        self._flush()
        self._chunks.append(columns)

    def is_empty(self) -> bool:
        return not self.sizes and not any(chunk.sizes.size for chunk in self._chunks)

    def columns(self) -> PredictionColumns:
        """Every prediction added, as arrays."""
        self._flush()
        return _concatenated(self._chunks, PredictionColumns)

    def entropies(self, eps: float) -> NDArray[np.float64]:
        """Each prediction's entropy in nats, its logs clipped as the loss's are."""
        columns = self.columns()
        probabilities = columns.probabilities
        terms = probabilities * multiclass_log_loss(probabilities, eps=eps)
        sizes = columns.sizes
        return np.add.reduceat(terms, np.cumsum(sizes) - sizes)

    def _flush(self) -> None:
        if not self.sizes:
            return
        self._chunks.append(
            PredictionColumns(
                np.asarray(self.timestamps_ms, dtype=np.int64),
                np.asarray(self.scores, dtype=np.float64),
                np.asarray(self.probabilities, dtype=np.float64),
                np.asarray(self.sizes, dtype=np.intp),
            )
        )
        for values in (self.timestamps_ms, self.scores, self.probabilities, self.sizes):
            values.clear()


_Columns = TypeVar("_Columns", JoinedColumns, PredictionColumns)


def _concatenated(chunks: list[_Columns], kind: type[_Columns]) -> _Columns:
    """Chunks of columns as one, each column's chunks in order (dtypes kept:
    every chunk's columns are made with the same ones)."""
    if len(chunks) == 1:
        return chunks[0]
    return kind(*(np.concatenate(parts) for parts in zip(*chunks, strict=True)))
