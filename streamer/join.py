"""Pair predictions with outcomes by event id, within TTLs and a memory bound.

One :class:`EventJoin` holds the join state of one Kafka partition. It is pure:
no I/O, no clock of its own. Every call is given ``now_ms``, and the join's
clock is the largest ``now_ms`` it has been given, so a wall clock that steps
back does not move it back.

Semantics
---------
Pending entries. A record whose other side has not arrived is pending. A
prediction's deadline is ``timestamp_ms + prediction_ttl_ms``, an outcome's
``timestamp_ms + outcome_ttl_ms`` (event time, so a replay gives the same
deadlines). An entry whose deadline is ``<=`` the clock is no longer pending:
every call first moves such entries to an expired backlog, which the next
:meth:`EventJoin.expire` returns. A record that arrives with its deadline
already passed, and finds no partner, goes straight to that backlog. What the
join pairs, flags and evicts therefore depends only on the records and the
``now_ms`` values it is given, never on how often ``expire`` is called.

Pairing. A record pairs with the pending entry of the other side under the
same event id; the pair is returned and the entry leaves.

Duplicates. A record is a duplicate, reported and dropped (the first one wins),
when its side already has a pending entry under its event id, or when that id
was joined and the duplicate guard still remembers it. The guard remembers a
joined id for ``duplicate_guard_ttl_ms`` of the join's clock after the join,
and holds at most ``max_pending`` ids: past that it forgets the oldest, and
each id forgotten early is reported in :attr:`JoinStep.guard_evictions`.
Expired and evicted ids are not remembered.

Memory bound. Each side holds at most ``max_pending`` pending entries. Adding
one more evicts the entry with the oldest deadline (the first inserted among
equal deadlines): the one closest to expiring anyway. Evictions are reported in
:attr:`JoinStep.evicted`, never silent. The expired backlog is not bounded by
``max_pending``: call ``expire`` regularly, once per batch say.

Ordering. Expired entries are returned in the order they were found; within
one pass predictions come before outcomes, each side in deadline order, first
inserted first among equal deadlines. Entries are told apart by order of
insertion: a record passed again after its join takes a new place, behind
those already held.

Cost
----
The entries live in native memory (``native/``, Rust): the join keeps no Python
object per pending record. A pending binary prediction costs a 64-byte slot (an
event id of up to 24 bytes inline, longer ones on the heap), about 10 bytes of
hash index and an 8-byte deadline-queue entry (24 bytes of heap entry instead
when older than the newest record held on its side); a multiclass one adds 8
bytes per class. Model keys, class tuples and segments are stored once per join
as counted numbers, forgotten with the last record that holds them. Measured at
10^6 pending in the pipeline: 94 bytes of resident memory per binary
prediction, 133 per multiclass one (``benchmarks/RESULTS.md``). Pairing leaves
queue entries behind until they exceed twice the live count (plus 64), then the
queues are compacted. A guarded id costs about 40 bytes. Adding, pairing and
evicting are O(1) amortized (O(log n) for out-of-order records); expiry is
O(log n) per expired entry. ``now_ms`` and timestamps must fit in a signed
64-bit integer.

Examples
--------
>>> from streamer.events import ModelKey, Outcome, Prediction
>>> join = EventJoin(prediction_ttl_ms=1_000, outcome_ttl_ms=100, max_pending=10)
>>> fraud = ModelKey("fraud", "7")
>>> join.add_prediction(Prediction("e-1", fraud, 0, 0.9), now_ms=0).joined
>>> step = join.add_outcome(Outcome("e-1", 1, 50), now_ms=50)
>>> step.joined[1].label
1
>>> join.add_outcome(Outcome("e-1", 1, 60), now_ms=60).duplicate
True
>>> join.add_prediction(Prediction("e-2", fraud, 10, 0.2), now_ms=60).joined
>>> [(entry.side, entry.event_id) for entry in join.expire(now_ms=1_010)]
[('prediction', 'e-2')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

from streamer import _native
from streamer.events import Label, ModelKey, Outcome, Prediction

Side = Literal["prediction", "outcome"]

STATE_FORMAT: Final = 1
"""The ``format`` number :meth:`EventJoin.to_state` writes and ``from_state`` reads."""

_INDEX_SLACK = _native.INDEX_SLACK
"""Stale queue entries tolerated beyond twice the live count before compacting
(read when a join is made)."""


@dataclass(frozen=True, slots=True)
class DroppedEntry:
    """A pending entry that left without its partner: expired or evicted.

    ``model`` is the prediction's model key, ``None`` for an outcome.
    """

    side: Side
    event_id: str
    model: ModelKey | None


@dataclass(frozen=True, slots=True)
class JoinStep:
    """What adding one record did.

    ``joined`` is the pair it completed, ``duplicate`` says it was dropped as a
    duplicate, ``evicted`` lists the pending entries pushed out to honour
    ``max_pending``, and ``guard_evictions`` counts the joined ids the duplicate
    guard forgot early for the same reason.
    """

    joined: tuple[Prediction, Outcome] | None
    duplicate: bool
    evicted: tuple[DroppedEntry, ...]
    guard_evictions: int = 0


_QUIET: Final = JoinStep(joined=None, duplicate=False, evicted=())
_DUPLICATE: Final = JoinStep(joined=None, duplicate=True, evicted=())

# A frozen dataclass's __init__ sets each field through object.__setattr__,
# which costs more than the rest of a join; the hot path sets the slots itself.
_new = object.__new__
_set_joined, _set_duplicate, _set_evicted, _set_guard_evictions = (
    JoinStep.__dict__[name].__set__
    for name in ("joined", "duplicate", "evicted", "guard_evictions")
)
_set_side, _set_event_id, _set_model = (
    DroppedEntry.__dict__[name].__set__ for name in ("side", "event_id", "model")
)


def _step(
    joined: tuple[Prediction, Outcome] | None,
    evicted: tuple[DroppedEntry, ...],
    guard_evictions: int,
) -> JoinStep:
    step = _new(JoinStep)
    _set_joined(step, joined)
    _set_duplicate(step, False)
    _set_evicted(step, evicted)
    _set_guard_evictions(step, guard_evictions)
    return step


def _dropped(side: Side, event_id: str, model: ModelKey | None) -> DroppedEntry:
    entry = _new(DroppedEntry)
    _set_side(entry, side)
    _set_event_id(entry, event_id)
    _set_model(entry, model)
    return entry


_OUTCOME_SLOTS: Final = tuple(
    Outcome.__dict__[name].__set__ for name in ("event_id", "label", "timestamp_ms")
)
_PREDICTION_SLOTS: Final = tuple(
    Prediction.__dict__[name].__set__
    for name in (
        "event_id",
        "model",
        "timestamp_ms",
        "probability",
        "classes",
        "probabilities",
        "segment",
    )
)


def _outcome(event_id: str, label: Label, timestamp_ms: int) -> Outcome:
    """An Outcome, built without the frozen dataclass's slow ``__init__``."""
    outcome = _new(Outcome)
    set_event_id, set_label, set_timestamp_ms = _OUTCOME_SLOTS
    set_event_id(outcome, event_id)
    set_label(outcome, label)
    set_timestamp_ms(outcome, timestamp_ms)
    return outcome


def _prediction(
    event_id: str,
    model: ModelKey,
    timestamp_ms: int,
    probability: float | None,
    classes: tuple[str, ...] | None,
    probabilities: tuple[float, ...] | None,
    segment: tuple[str, ...],
) -> Prediction:
    """A Prediction, built without the frozen dataclass's slow ``__init__``."""
    prediction = _new(Prediction)
    values = (
        event_id,
        model,
        timestamp_ms,
        probability,
        classes,
        probabilities,
        segment,
    )
    for set_slot, value in zip(_PREDICTION_SLOTS, values, strict=True):
        set_slot(prediction, value)
    return prediction


class JoinState(TypedDict):
    """The plain data of :meth:`EventJoin.to_state`, ready for JSON.

    Rows are lists. ``predictions``: ``[event_id, model, version, timestamp_ms,
    probability, classes, probabilities]``; ``outcomes``: ``[event_id, label,
    timestamp_ms]``, both in deadline order; ``duplicate_guard``: ``[event_id,
    joined_at_ms]``, oldest first; ``expired``: the backlog not yet returned by
    ``expire``, ``[side, event_id, model, version]`` (``null`` model and
    version for outcomes). ``clock_ms`` is ``null`` before the first call.
    """

    format: int
    clock_ms: int | None
    predictions: list[list[Any]]
    outcomes: list[list[Any]]
    duplicate_guard: list[list[Any]]
    expired: list[list[Any]]


class EventJoin:
    """The keyed join of one partition; see the module docstring for semantics.

    The pending entries, the duplicate guard and the expired backlog live in
    a native :class:`streamer._native.JoinCore`; this class gives them the
    Python records and results of the module docstring.

    Parameters
    ----------
    prediction_ttl_ms
        How long, in event time, a prediction waits for its outcome.
    outcome_ttl_ms
        How long, in event time, an outcome that came first waits for its
        prediction.
    max_pending
        Most pending entries per side, and most ids the duplicate guard holds.
    duplicate_guard_ttl_ms
        How long after a join its event id is remembered as joined; ``None``
        means ``prediction_ttl_ms``.
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        *,
        prediction_ttl_ms: int,
        outcome_ttl_ms: int,
        max_pending: int,
        duplicate_guard_ttl_ms: int | None = None,
    ) -> None:
        _require_positive("prediction_ttl_ms", prediction_ttl_ms, "milliseconds")
        _require_positive("outcome_ttl_ms", outcome_ttl_ms, "milliseconds")
        _require_positive("max_pending", max_pending, "entries per side")
        if duplicate_guard_ttl_ms is None:
            duplicate_guard_ttl_ms = prediction_ttl_ms
        _require_positive(
            "duplicate_guard_ttl_ms",
            duplicate_guard_ttl_ms,
            "milliseconds, or None for prediction_ttl_ms",
        )
        self._core: Final = _native.JoinCore(
            prediction_ttl_ms,
            outcome_ttl_ms,
            max_pending,
            duplicate_guard_ttl_ms,
            index_slack=_INDEX_SLACK,
        )

    @property
    def pending_predictions(self) -> int:
        """Predictions waiting for their outcome."""
        return self._core.pending_predictions

    @property
    def pending_outcomes(self) -> int:
        """Outcomes waiting for their prediction."""
        return self._core.pending_outcomes

    @property
    def duplicate_guard_size(self) -> int:
        """Joined event ids the duplicate guard remembers."""
        return self._core.guard_size

    def native_bytes(self) -> int:
        """Bytes the native core has allocated (capacity: an upper bound)."""
        return self._core.heap_bytes()

    def pending_predictions_by_model(self) -> dict[ModelKey, int]:
        """Pending predictions per model key.

        O(n) in the pending predictions: meant for a metrics scrape, not the
        hot loop. Call it under the lock that serialises the join's callers.
        """
        return self._core.pending_by_model()

    def add_prediction(self, prediction: Prediction, *, now_ms: int) -> JoinStep:
        """Pair ``prediction`` with its pending outcome, or hold it pending."""
        result = self._core.add_prediction(
            prediction.event_id,
            prediction.model,
            prediction.timestamp_ms,
            prediction.probability,
            prediction.probabilities,
            prediction.classes,
            prediction.segment,
            now_ms,
        )
        if result is None:
            return _QUIET
        if result is True:
            return _DUPLICATE
        if type(result) is tuple:
            label, timestamp_ms, forgotten = result
            outcome = _outcome(prediction.event_id, label, timestamp_ms)
            return _step((prediction, outcome), (), forgotten)
        return _step(None, self._dropped_entries(result), 0)

    def add_outcome(self, outcome: Outcome, *, now_ms: int) -> JoinStep:
        """Pair ``outcome`` with its pending prediction, or hold it pending."""
        result = self._core.add_outcome(
            outcome.event_id, outcome.label, outcome.timestamp_ms, now_ms
        )
        if result is None:
            return _QUIET
        if result is True:
            return _DUPLICATE
        if type(result) is tuple:
            (
                model,
                timestamp_ms,
                probability,
                probabilities,
                classes,
                segment,
                forgotten,
            ) = result
            prediction = _prediction(
                outcome.event_id,
                model,
                timestamp_ms,
                probability,
                classes,
                probabilities,
                segment,
            )
            return _step((prediction, outcome), (), forgotten)
        return _step(None, self._dropped_entries(result), 0)

    def expire(self, now_ms: int) -> list[DroppedEntry]:
        """Remove and return every entry whose deadline is ``<=`` the clock.

        That includes the entries earlier calls found expired. The clock is the
        largest ``now_ms`` seen, this one included.
        """
        return list(self._dropped_entries(self._core.expire(now_ms)))

    def to_state(self) -> JoinState:
        """The whole join state as plain, JSON-ready data (see JoinState).

        A copy that shares nothing mutable with the join; O(n log n) in the
        pending entries, so call it from the thread that adds records.
        """
        predictions = []
        for (
            event_id,
            model,
            timestamp_ms,
            probability,
            probabilities,
            classes,
            segment,
        ) in self._core.prediction_rows():
            predictions.append(
                [
                    event_id,
                    model.model,
                    model.version,
                    timestamp_ms,
                    probability,
                    None if classes is None else list(classes),
                    None if probabilities is None else list(probabilities),
                    list(segment),
                ]
            )
        return {
            "format": STATE_FORMAT,
            "clock_ms": self._core.clock_ms(),
            "predictions": predictions,
            "outcomes": [list(row) for row in self._core.outcome_rows()],
            "duplicate_guard": [list(row) for row in self._core.guard_rows()],
            "expired": [
                _dropped_row(entry)
                for entry in self._dropped_entries(self._core.expired_rows())
            ],
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        prediction_ttl_ms: int,
        outcome_ttl_ms: int,
        max_pending: int,
        duplicate_guard_ttl_ms: int | None = None,
    ) -> EventJoin:
        """Rebuild a join from :meth:`to_state` data, under these options.

        With the options the state was taken under, the result behaves exactly
        like the original. Options changed since are honoured from the next
        call: entries a shorter TTL leaves overdue go to the expired backlog,
        and what a smaller ``max_pending`` leaves surplus is evicted (and
        reported) by the next add on that side, or forgotten by the guard at the
        next join.

        Raises
        ------
        ValueError
            When the options are invalid, or ``state`` is not join state of
            format ``STATE_FORMAT``.
        """
        join = cls(
            prediction_ttl_ms=prediction_ttl_ms,
            outcome_ttl_ms=outcome_ttl_ms,
            max_pending=max_pending,
            duplicate_guard_ttl_ms=duplicate_guard_ttl_ms,
        )
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"join state has format {state.get('format')!r}, expected "
                f"{STATE_FORMAT}; it was written by another driftstream version, "
                "so discard the checkpoint and replay the partition"
            )

        try:
            join._restore(state)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(
                f"join state is malformed ({exc}); discard the checkpoint and "
                "replay the partition"
            ) from exc
        return join

    def _restore(self, state: Mapping[str, Any]) -> None:
        core = self._core
        clock_ms = state["clock_ms"]
        core.set_clock(None if clock_ms is None else _integer(clock_ms))
        models: dict[tuple[str, str], ModelKey] = {}
        for row in state["predictions"]:
            prediction = _prediction_from_row(row, models)
            self._refuse_pending(prediction.event_id)
            core.restore_prediction(
                prediction.event_id,
                prediction.model,
                prediction.timestamp_ms,
                prediction.probability,
                prediction.probabilities,
                prediction.classes,
                prediction.segment,
            )
        for event_id, label, timestamp_ms in state["outcomes"]:
            self._refuse_pending(_text(event_id))
            core.restore_outcome(event_id, _label(label), _integer(timestamp_ms))

        for event_id, joined_at_ms in state["duplicate_guard"]:
            if core.guard_contains(_text(event_id)) or core.is_pending(event_id):
                raise ValueError(f"event id {event_id!r} is held twice")
            newest_ms = core.guard_newest_ms()
            if newest_ms is not None and _integer(joined_at_ms) < newest_ms:
                raise ValueError("duplicate guard is not in join order")
            core.restore_guard(event_id, _integer(joined_at_ms))

        for row in state["expired"]:
            entry = _dropped_from_row(row)
            core.restore_expired(entry.side == "outcome", entry.event_id, entry.model)
        core.finish_restore()

    def _refuse_pending(self, event_id: str) -> None:
        if self._core.is_pending(event_id):
            raise ValueError(f"event id {event_id!r} is held twice")

    @staticmethod
    def _dropped_entries(
        rows: list[tuple[Side, str, ModelKey | None]],
    ) -> tuple[DroppedEntry, ...]:
        return tuple(_dropped(side, event_id, model) for side, event_id, model in rows)


def _require_positive(name: str, value: object, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer ({unit}), got {value!r}")


def _prediction_row(prediction: Prediction) -> list[Any]:
    return [
        prediction.event_id,
        prediction.model.model,
        prediction.model.version,
        prediction.timestamp_ms,
        prediction.probability,
        None if prediction.classes is None else list(prediction.classes),
        None if prediction.probabilities is None else list(prediction.probabilities),
        list(prediction.segment),
    ]


def _prediction_from_row(
    row: list[Any], models: dict[tuple[str, str], ModelKey]
) -> Prediction:
    """Rebuild a prediction; ``models`` shares one ModelKey per model and version."""
    event_id, model, version, timestamp_ms, probability, classes, probabilities = row[
        :7
    ]
    segment = tuple(_text(value) for value in row[7]) if len(row) > 7 else ()
    model_key = models.get((model, version))
    if model_key is None:
        model_key = models[model, version] = ModelKey(_text(model), _text(version))
    return Prediction(
        event_id=_text(event_id),
        model=model_key,
        timestamp_ms=_integer(timestamp_ms),
        probability=probability,
        classes=None if classes is None else tuple(classes),
        probabilities=None if probabilities is None else tuple(probabilities),
        segment=segment,
    )


def _dropped_row(entry: DroppedEntry) -> list[Any]:
    if entry.model is None:
        return [entry.side, entry.event_id, None, None]
    return [entry.side, entry.event_id, entry.model.model, entry.model.version]


def _dropped_from_row(row: list[Any]) -> DroppedEntry:
    side, event_id, model, version = row
    if side == "outcome":
        return _dropped("outcome", _text(event_id), None)
    if side == "prediction":
        model_key = ModelKey(_text(model), _text(version))
        return _dropped("prediction", _text(event_id), model_key)
    raise ValueError(f"expired entry has side {side!r}, expected prediction or outcome")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _label(value: object) -> Label:
    if not isinstance(value, bool | int | str):
        raise TypeError(f"expected a label (boolean, integer or string), got {value!r}")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
