"""Synthetic predictions and delayed outcomes for ``driftstream generate`` and ``demo``.

The module has a pure core and a thin Kafka adapter.

The core, :class:`SyntheticStream`, turns a :class:`GeneratorConfig` into the
messages a fleet of models and a labelling system would send, in send order,
on simulated time: no Kafka, no wall clock, one seeded
``numpy.random.Generator``. The same config gives the same bytes.

How an event is simulated. Events arrive as a Poisson process at
``rate_per_s`` in total and are shared between models by ``traffic_share``.
For each event a true label is drawn from the model's prior; the model sees a
score and reports the exact posterior, so it is calibrated:

- binary: the score is drawn from ``N(+s, 1)`` for a positive and ``N(-s, 1)``
  for a negative, ``s`` being the model's ``separation``; the reported
  probability is ``sigmoid(2 s score + logit(positive_rate))``;
- multiclass: one score per class from ``N(0, 1)``, the true class's raised by
  ``s``; the reported probabilities are ``softmax(s * scores)`` (uniform prior).

The outcome follows after a delay drawn from ``label_delay_distribution`` and
capped at ``label_delay_max_s``; a ``missing_label_fraction`` of outcomes is
never sent.

Drift. From ``drift_at_s`` (or ``drift_at_event``) on, the scores of
``drift_model`` carry less signal -- its separation shrinks by the factor
``1 - drift_strength`` -- while the model keeps mapping scores to
probabilities as before. The label relationship has weakened and the model
has not noticed, so its probabilities are overconfident and its log loss
rises: at the default strength of 0.5, to about 1.8 times the level before
for the weakest default model and more for the others.

The Kafka adapter, ``streamer.produce.produce_stream``, writes a stream to
two Kafka topics.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Self

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_START_MS",
    "GeneratedMessage",
    "GeneratorConfig",
    "ModelSpec",
    "StreamCounts",
    "SyntheticStream",
    "TopicKind",
    "format_timestamp_ms",
]

logger = logging.getLogger(__name__)

TopicKind = Literal["predictions", "outcomes"]
DelayDistribution = Literal["lognormal", "exponential", "fixed"]

DEFAULT_START_MS = int(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp() * 1000)
"""Simulated time zero of a stream when no ``start_ms`` is given."""

_CHUNK_EVENTS = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class ModelSpec(BaseModel):
    """One simulated model: its identity, classes and how well it separates them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        min_length=1, description="Model name, sent as the prediction's `model`."
    )
    version: str = Field(
        default="1", description="Sent as the prediction's `model_version`."
    )
    classes: tuple[str, ...] = Field(
        default=(),
        description="Class names of a multiclass model; empty for a binary model.",
    )
    positive_rate: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Binary models only: the share of events whose true label is 1.",
    )
    separation: float = Field(
        default=1.5,
        gt=0.0,
        le=10.0,
        description="Signal in the model's score, in score standard deviations: "
        "binary scores are centred on +separation and -separation, a multiclass "
        "model's true class score is raised by it. Larger is a lower-loss model.",
    )
    traffic_share: float = Field(
        default=1.0,
        gt=0.0,
        description="Relative share of the total event rate (shares are "
        "normalised over all models).",
    )

    @model_validator(mode="after")
    def _check_classes(self) -> Self:
        if not self.classes:
            return self
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(
                f"model {self.name!r}: classes must be at least two distinct names, "
                f"got {list(self.classes)}; leave classes empty for a binary model"
            )
        if "positive_rate" in self.model_fields_set:
            raise ValueError(
                f"model {self.name!r}: positive_rate applies to binary models only; "
                "remove it or remove classes"
            )
        return self

    @property
    def is_multiclass(self) -> bool:
        return bool(self.classes)


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(name="fraud", version="7", positive_rate=0.1, separation=1.5),
    ModelSpec(name="churn", version="3", positive_rate=0.3, separation=1.0),
    ModelSpec(
        name="intent",
        version="2",
        classes=("billing", "cancel", "other", "upgrade"),
        separation=2.0,
    ),
)


class GeneratorConfig(BaseModel):
    """Everything that determines a synthetic stream: same config, same bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[ModelSpec, ...] = Field(
        default=DEFAULT_MODELS,
        min_length=1,
        description="The simulated models; names must be unique.",
    )
    rate_per_s: float = Field(
        default=100.0,
        gt=0.0,
        le=1_000_000.0,
        description="Predictions per simulated second, all models together.",
    )
    duration_s: float | None = Field(
        default=None,
        gt=0.0,
        description="Simulated seconds of predictions; None runs forever. Outcomes "
        "still due at the end are sent after it, up to label_delay_max_s later.",
    )
    label_delay_distribution: DelayDistribution = Field(
        default="lognormal",
        description="Shape of the delay between a prediction and its outcome.",
    )
    label_delay_median_s: float = Field(
        default=3.0, gt=0.0, description="Median label delay, in seconds."
    )
    label_delay_sigma: float = Field(
        default=1.0,
        ge=0.0,
        le=5.0,
        description="Lognormal only: standard deviation of the log of the delay.",
    )
    label_delay_max_s: float = Field(
        default=60.0,
        gt=0.0,
        description="Cap on the label delay, in seconds; at least the median.",
    )
    missing_label_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of predictions whose outcome is never sent.",
    )
    drift_model: str | None = Field(
        default=None,
        description="Name of the model that drifts; None for a stream without drift.",
    )
    drift_at_s: float | None = Field(
        default=None,
        ge=0.0,
        description="Simulated seconds after the start when the drift begins.",
    )
    drift_at_event: int | None = Field(
        default=None,
        ge=0,
        description="Alternative to drift_at_s: the drift begins with the event of "
        "this index (0-based, counted over the predictions of all models).",
    )
    drift_strength: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of the drifting model's separation lost at the drift "
        "(0: no change, 1: its scores carry no signal).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the random generator.")
    event_id_prefix: str = Field(
        default="",
        description="Prepended to every event id (`<prefix><model>-<seq>`), so that "
        "two runs into the same topics do not share ids.",
    )

    @model_validator(mode="after")
    def _check_models(self) -> Self:
        names = [spec.name for spec in self.models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        return self

    @model_validator(mode="after")
    def _check_label_delay(self) -> Self:
        if self.label_delay_max_s < self.label_delay_median_s:
            raise ValueError(
                f"label_delay_max_s={self.label_delay_max_s} is below "
                f"label_delay_median_s={self.label_delay_median_s}; raise the cap "
                "or lower the median"
            )
        return self

    @model_validator(mode="after")
    def _check_drift(self) -> Self:
        moments = [self.drift_at_s is not None, self.drift_at_event is not None]
        if self.drift_model is None:
            if any(moments):
                raise ValueError("drift_at_s/drift_at_event need a drift_model")
            return self
        names = [spec.name for spec in self.models]
        if self.drift_model not in names:
            raise ValueError(
                f"drift_model {self.drift_model!r} is not a configured model; "
                f"choose one of {names}"
            )
        if sum(moments) != 1:
            raise ValueError(
                f"drift_model {self.drift_model!r} needs exactly one of "
                "drift_at_s and drift_at_event"
            )
        self._check_drift_in_time()
        return self

    def _check_drift_in_time(self) -> None:
        if self.duration_s is None or self.drift_at_s is None:
            return
        if self.drift_at_s >= self.duration_s:
            raise ValueError(
                f"drift_at_s={self.drift_at_s} is not before duration_s="
                f"{self.duration_s}, so the drift would never happen"
            )


class GeneratedMessage(NamedTuple):
    """One message to send: the topic it belongs to, its bytes and its send time."""

    topic_kind: TopicKind
    key: bytes
    value: bytes
    timestamp_ms: int


@dataclass(slots=True)
class StreamCounts:
    """What the most recent iteration of a :class:`SyntheticStream` yielded."""

    predictions: int = 0
    outcomes: int = 0
    labels_withheld: int = 0


def format_timestamp_ms(timestamp_ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with milliseconds.

    >>> format_timestamp_ms(DEFAULT_START_MS + 123)
    '2026-12-01T10:00:00.123Z'
    """
    seconds, millis = divmod(timestamp_ms, 1000)
    return f"{_format_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _format_second(epoch_s: int) -> str:
    # strftime dominated generation time; a stream stays within a few thousand
    # distinct seconds at a time (label delays are capped), so a cache fits.
    return f"{_EPOCH + timedelta(seconds=epoch_s):%Y-%m-%dT%H:%M:%S}"


class _Event(NamedTuple):
    prediction: GeneratedMessage
    outcome: GeneratedMessage | None


class _Chunk(NamedTuple):
    """A batch of drawn events as plain lists, cut at the end of the duration."""

    offsets_ms: list[int]
    model_indices: list[int]
    labels: list[int]
    payloads: list[Any]
    delays_ms: list[int]
    withheld: list[bool]
    last_time_s: float
    complete: bool


class SyntheticStream:
    """The messages of a simulated fleet of models, in send order.

    Each iteration starts over from ``config.seed`` and yields
    :class:`GeneratedMessage` items with non-decreasing ``timestamp_ms``
    (``start_ms`` plus simulated time). An outcome always comes after its
    prediction, exactly its label delay later in simulated time. With
    ``duration_s`` set, outcomes still due at the end close the stream;
    otherwise it never ends. ``counts`` describes the latest iteration.

    Examples
    --------
    >>> config = GeneratorConfig(rate_per_s=10, duration_s=60, seed=7)
    >>> stream = SyntheticStream(config)
    >>> messages = list(stream)
    >>> messages == list(SyntheticStream(config))
    True
    >>> messages[0].topic_kind, messages[0].key
    ('predictions', b'fraud-0')
    >>> counts = stream.counts
    >>> counts.predictions == counts.outcomes + counts.labels_withheld
    True
    """

    def __init__(self, config: GeneratorConfig, *, start_ms: int = DEFAULT_START_MS):
        self.config = config
        self.start_ms = start_ms
        self.counts = StreamCounts()

    def __iter__(self) -> Iterator[GeneratedMessage]:
        self.counts = StreamCounts()
        pending: list[tuple[int, int, GeneratedMessage]] = []

        for sequence, event in enumerate(self._events()):
            while pending and pending[0][0] <= event.prediction.timestamp_ms:
                yield self._release(pending)

            self.counts.predictions += 1
            yield event.prediction

            if event.outcome is None:
                self.counts.labels_withheld += 1
            else:
                item = (event.outcome.timestamp_ms, sequence, event.outcome)
                heapq.heappush(pending, item)

        while pending:
            yield self._release(pending)

    def _release(
        self, pending: list[tuple[int, int, GeneratedMessage]]
    ) -> GeneratedMessage:
        self.counts.outcomes += 1
        return heapq.heappop(pending)[2]

    def _events(self) -> Iterator[_Event]:
        rng = np.random.default_rng(self.config.seed)
        sequences = [0] * len(self.config.models)
        first_index, clock_s = 0, 0.0

        while True:
            chunk = _draw_chunk(rng, self.config, first_index, clock_s)
            for row in range(len(chunk.offsets_ms)):
                yield self._event(chunk, row, sequences)
            if not chunk.complete:
                return

            first_index += _CHUNK_EVENTS
            clock_s = chunk.last_time_s

    def _event(self, chunk: _Chunk, row: int, sequences: list[int]) -> _Event:
        model_index = chunk.model_indices[row]
        spec = self.config.models[model_index]
        event_id = f"{self.config.event_id_prefix}{spec.name}-{sequences[model_index]}"
        sequences[model_index] += 1

        key = event_id.encode()
        sent_ms = self.start_ms + chunk.offsets_ms[row]
        value = _encode_prediction(spec, event_id, sent_ms, chunk.payloads[row])
        prediction = GeneratedMessage("predictions", key, value, sent_ms)
        if chunk.withheld[row]:
            return _Event(prediction, None)

        labelled_ms = sent_ms + chunk.delays_ms[row]
        outcome_value = _encode_outcome(spec, event_id, labelled_ms, chunk.labels[row])
        outcome = GeneratedMessage("outcomes", key, outcome_value, labelled_ms)
        return _Event(prediction, outcome)


def _within_duration(times_s: FloatArray, duration_s: float | None) -> int:
    if duration_s is None:
        return len(times_s)
    return int(np.searchsorted(times_s, duration_s, side="left"))


def _draw_chunk(
    rng: np.random.Generator, config: GeneratorConfig, first_index: int, clock_s: float
) -> _Chunk:
    """Draw the next ``_CHUNK_EVENTS`` events, starting after ``clock_s``.

    Chunks have a fixed size and their draws a fixed order, so a stream depends
    on the seed alone, not on how far or how fast it is read.
    """
    times_s = clock_s + np.cumsum(
        rng.exponential(1.0 / config.rate_per_s, _CHUNK_EVENTS)
    )
    shares = np.array([spec.traffic_share for spec in config.models])
    model_indices = rng.choice(len(shares), size=_CHUNK_EVENTS, p=shares / shares.sum())
    drifted = _drift_mask(config, model_indices, first_index, times_s)
    labels, payloads = _draw_predictions(rng, config, model_indices, drifted)
    delays_ms = _draw_delays_ms(rng, config, _CHUNK_EVENTS)
    withheld = rng.random(_CHUNK_EVENTS) < config.missing_label_fraction

    kept = _within_duration(times_s, config.duration_s)
    return _Chunk(
        offsets_ms=np.floor(times_s[:kept] * 1000.0).astype(np.int64).tolist(),
        model_indices=model_indices[:kept].tolist(),
        labels=labels[:kept].tolist(),
        payloads=payloads[:kept],
        delays_ms=delays_ms[:kept].tolist(),
        withheld=withheld[:kept].tolist(),
        last_time_s=float(times_s[-1]),
        complete=kept == _CHUNK_EVENTS,
    )


def _draw_predictions(
    rng: np.random.Generator,
    config: GeneratorConfig,
    model_indices: IntArray,
    drifted: BoolArray,
) -> tuple[IntArray, list[Any]]:
    """Draw true labels and reported probabilities, model by model."""
    labels = np.zeros(len(model_indices), dtype=np.int64)
    payloads: list[Any] = [None] * len(model_indices)

    for model_index, spec in enumerate(config.models):
        rows = np.flatnonzero(model_indices == model_index)
        kept_signal = np.where(drifted[rows], 1.0 - config.drift_strength, 1.0)
        draw = _draw_multiclass if spec.is_multiclass else _draw_binary
        model_labels, probabilities = draw(rng, spec, spec.separation * kept_signal)

        labels[rows] = model_labels
        for row, payload in zip(rows.tolist(), probabilities.tolist(), strict=True):
            payloads[row] = payload

    return labels, payloads


def _drift_mask(
    config: GeneratorConfig,
    model_indices: IntArray,
    first_index: int,
    times_s: FloatArray,
) -> BoolArray:
    after: BoolArray
    if config.drift_at_event is not None:
        indices = first_index + np.arange(len(times_s))
        after = indices >= config.drift_at_event
    elif config.drift_at_s is not None:
        after = times_s >= config.drift_at_s
    else:
        return np.zeros(len(times_s), dtype=np.bool_)

    names = [spec.name for spec in config.models]
    of_model: BoolArray = model_indices == names.index(str(config.drift_model))
    return of_model & after


def _draw_binary(
    rng: np.random.Generator, spec: ModelSpec, separation: FloatArray
) -> tuple[IntArray, FloatArray]:
    labels = (rng.random(len(separation)) < spec.positive_rate).astype(np.int64)
    scores = rng.normal(np.where(labels == 1, separation, -separation), 1.0)

    # The model keeps its pre-drift mapping, which is exactly calibrated for
    # scores drawn with spec.separation.
    prior_logit = math.log(spec.positive_rate / (1.0 - spec.positive_rate))
    logits = 2.0 * spec.separation * scores + prior_logit
    probabilities = np.exp(-np.logaddexp(0.0, -logits))
    return labels, probabilities


def _draw_multiclass(
    rng: np.random.Generator, spec: ModelSpec, separation: FloatArray
) -> tuple[IntArray, FloatArray]:
    count = len(separation)
    labels = rng.integers(0, len(spec.classes), size=count, dtype=np.int64)
    scores = rng.normal(0.0, 1.0, size=(count, len(spec.classes)))
    scores[np.arange(count), labels] += separation

    logits = spec.separation * scores
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = weights / weights.sum(axis=1, keepdims=True)
    return labels, probabilities


def _draw_delays_ms(
    rng: np.random.Generator, config: GeneratorConfig, count: int
) -> IntArray:
    median_s = config.label_delay_median_s
    if config.label_delay_distribution == "lognormal":
        delays_s = median_s * np.exp(rng.normal(0.0, config.label_delay_sigma, count))
    elif config.label_delay_distribution == "exponential":
        delays_s = rng.exponential(median_s / math.log(2.0), count)
    else:
        delays_s = np.full(count, median_s)

    # Rounding up keeps an outcome from ever being stamped before its delay.
    delays_ms = np.ceil(np.minimum(delays_s, config.label_delay_max_s) * 1000.0)
    return np.maximum(delays_ms, 1.0).astype(np.int64)


def _encode_prediction(
    spec: ModelSpec, event_id: str, timestamp_ms: int, payload: Any
) -> bytes:
    document: dict[str, Any] = {
        "event_id": event_id,
        "model": spec.name,
        "model_version": spec.version,
        "timestamp": format_timestamp_ms(timestamp_ms),
    }
    if spec.is_multiclass:
        document["probabilities"] = dict(zip(spec.classes, payload, strict=True))
    else:
        document["probability"] = payload
    return orjson.dumps(document)


def _encode_outcome(
    spec: ModelSpec, event_id: str, timestamp_ms: int, label: int
) -> bytes:
    document = {
        "event_id": event_id,
        "label": spec.classes[label] if spec.is_multiclass else label,
        "timestamp": format_timestamp_ms(timestamp_ms),
    }
    return orjson.dumps(document)
