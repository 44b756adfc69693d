"""What one batch of messages adds per series: joined events and predictions.

The pipeline gathers, per (partition, series), the joined events of a batch
(:class:`JoinedBatch`, each judged by :func:`judge`) and its new predictions
(:class:`PredictionBatch`); both are then turned into arrays and added to the
series' windows and drift state at once. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streamer.columns import calibration_columns
from streamer.config import ModelConfig
from streamer.events import Outcome, Prediction
from streamer.loss import multiclass_log_loss
from streamer.records import Invalid
from streamer.records import resolve_binary_label as _resolve_binary

__all__ = ["JoinedBatch", "Judged", "PredictionBatch", "judge"]


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


@dataclass
class JoinedBatch:
    """The joined events of one batch, for one (partition, series)."""

    timestamps_ms: list[int] = field(default_factory=list)
    p_true: list[float] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    positives: list[bool] = field(default_factory=list)
    squared_errors: list[float] = field(default_factory=list)

    def add(self, judged: Judged, outcome_ms: int, prediction_ms: int) -> None:
        self.timestamps_ms.append(outcome_ms)
        self.p_true.append(judged.p_true)
        self.scores.append(judged.score)
        self.positives.append(judged.positive)
        self.squared_errors.append(judged.squared_error)
        # An outcome stamped before its prediction (clock skew) counts as 0 s,
        # so the join-delay histogram's sum stays monotonic.
        self.delays_s.append(max(0, outcome_ms - prediction_ms) / 1000)

    def calibration(self) -> NDArray[np.float64]:
        """Each event's row of calibration columns (:mod:`streamer.columns`)."""
        return calibration_columns(
            np.asarray(self.scores),
            np.asarray(self.positives, dtype=np.bool_),
            np.asarray(self.squared_errors),
        )


@dataclass
class PredictionBatch:
    """The new predictions of one batch, for one (partition, series).

    ``probabilities`` holds each prediction's class probabilities one after
    the other (binary: ``p`` and ``1 - p``), ``sizes`` how many each has.
    """

    timestamps_ms: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

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

    def entropies(self, eps: float) -> NDArray[np.float64]:
        """Each prediction's entropy in nats, its logs clipped as the loss's are."""
        probabilities = np.asarray(self.probabilities)
        terms = probabilities * multiclass_log_loss(probabilities, eps=eps)
        sizes = np.asarray(self.sizes, dtype=np.intp)
        return np.add.reduceat(terms, np.cumsum(sizes) - sizes)
