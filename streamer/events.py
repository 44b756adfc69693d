"""Validated predictions and outcomes: the values that flow from decoding to scoring.

These are plain, immutable records. Decoding (``records.py``) makes them from
Kafka bytes; the join (``join.py``) pairs them by event id; scoring turns a
pair into a per-event log loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

Label = bool | int | str
"""An outcome's label as it came off the wire; resolved against the model at join."""


class ModelKey(NamedTuple):
    """The identity windows and metrics are kept under.

    ``version`` is the empty string when a prediction carries no
    ``model_version``. A named tuple, not a dataclass: it is hashed and
    compared for every event, and a tuple does that in C.
    """

    model: str
    version: str


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model output for one event.

    Exactly one of ``probability`` (binary: the probability of the positive
    class) and ``classes``/``probabilities`` (multiclass, aligned, classes
    sorted) is set.
    """

    event_id: str
    model: ModelKey
    timestamp_ms: int
    probability: float | None = None
    classes: tuple[str, ...] | None = None
    probabilities: tuple[float, ...] | None = None
    segment: tuple[str, ...] = ()
    """Values of the configured segment keys, in their order; "" when absent."""

    @property
    def is_multiclass(self) -> bool:
        return self.classes is not None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The ground truth for one event, as it arrived."""

    event_id: str
    label: Label
    timestamp_ms: int
