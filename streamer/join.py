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
inserted first among equal deadlines. Entries are told apart by object
identity, so pass each record object once: the same object passed again after
its join may keep its first place among records of equal deadline.

Cost
----
Measured with ``tracemalloc`` on CPython 3.11, besides the records themselves:
a pending entry costs about 47 bytes (a ``dict`` slot and an 8-byte ``deque``
slot); one older than the newest record already held on its side (out of
timestamp order) takes a heap entry instead of the ``deque`` slot, about 140
bytes in all. Pairing leaves index slots behind until the index is compacted,
once it exceeds twice the live count (plus 64), so the index at most doubles.
A guarded id costs about 47 bytes and keeps its id string alive. Adding,
pairing and evicting are O(1) amortized (O(log n) for out-of-order records);
expiry is O(log n) per expired entry.

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

import heapq
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, Generic, Literal, TypedDict, TypeVar

from streamer.events import Label, ModelKey, Outcome, Prediction

Side = Literal["prediction", "outcome"]

STATE_FORMAT: Final = 1
"""The ``format`` number :meth:`EventJoin.to_state` writes and ``from_state`` reads."""

_NEVER: Final = -(1 << 63)
"""The clock before the first call: earlier than any deadline."""

_FAR_FUTURE: Final = 1 << 63
"""A deadline no entry reaches: nothing to collect."""

_INDEX_SLACK = 64
"""Stale index slots tolerated beyond the live count before compacting."""

_R = TypeVar("_R", Prediction, Outcome)

_timestamp_ms: Final = attrgetter("timestamp_ms")
_model_and_version: Final = attrgetter("model.model", "model.version")


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


class _PendingSide(Generic[_R]):
    """The pending records of one side, by event id and by deadline.

    Records arriving in timestamp order are appended to a ``deque``, which stays
    sorted; the others go to a heap keyed by ``(timestamp_ms, sequence)``. The
    deque only takes a record at least as new as its newest, so on equal
    timestamps a live deque record was always inserted before a live heap one,
    and the oldest entry is the smaller of the two fronts, the deque's on ties.
    Pairing leaves index slots behind (a slot is live when ``records`` maps its
    id to that very object); fronts drop them as they go, compaction the rest.
    """

    __slots__ = (
        "_in_order",
        "_late",
        "_newest_in_order_ms",
        "_sequence",
        "records",
        "ttl_ms",
    )

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms: Final = ttl_ms
        self.records: dict[str, _R] = {}
        self._in_order: deque[_R] = deque()
        self._late: list[tuple[int, int, _R]] = []
        self._newest_in_order_ms = _NEVER
        self._sequence = 0

    def add(self, record: _R) -> None:
        self.records[record.event_id] = record
        timestamp_ms = record.timestamp_ms
        if timestamp_ms >= self._newest_in_order_ms:
            self._in_order.append(record)
            self._newest_in_order_ms = timestamp_ms
            return

        heapq.heappush(self._late, (timestamp_ms, self._sequence, record))
        self._sequence += 1

    def take(self, event_id: str) -> _R | None:
        """Remove and return the pending record under ``event_id``, if any."""
        record = self.records.pop(event_id, None)
        if record is None:
            return None

        slots = len(self._in_order) + len(self._late)
        if slots > 2 * len(self.records) + _INDEX_SLACK:
            self._compact()
        return record

    def pop_oldest(self) -> _R:
        """Remove and return the record with the oldest deadline (non-empty)."""
        record = self._front()
        assert record is not None, "pop_oldest on an empty side"
        self._remove_front(record)
        return record

    def pop_due(self, now_ms: int) -> Iterator[_R]:
        """Remove and yield, oldest first, each record with deadline <= now_ms."""
        newest_due_ms = now_ms - self.ttl_ms
        record = self._front()
        while record is not None and record.timestamp_ms <= newest_due_ms:
            self._remove_front(record)
            yield record
            record = self._front()

    def earliest_deadline_ms(self) -> int:
        """A lower bound of the live deadlines (stale slots count too)."""
        earliest = _FAR_FUTURE
        if self._in_order:
            earliest = self._in_order[0].timestamp_ms + self.ttl_ms
        if self._late:
            earliest = min(earliest, self._late[0][0] + self.ttl_ms)
        return earliest

    def in_deadline_order(self) -> list[_R]:
        """The live records, oldest deadline first, without changing anything."""
        # ``records`` iterates in insertion order and the sort is stable.
        return sorted(self.records.values(), key=_timestamp_ms)

    def _front(self) -> _R | None:
        in_order, late, records = self._in_order, self._late, self.records
        while in_order and records.get(in_order[0].event_id) is not in_order[0]:
            in_order.popleft()
        while late and records.get(late[0][2].event_id) is not late[0][2]:
            heapq.heappop(late)

        if not late:
            return in_order[0] if in_order else None
        if not in_order or late[0][0] < in_order[0].timestamp_ms:
            return late[0][2]
        return in_order[0]

    def _remove_front(self, record: _R) -> None:
        if self._in_order and self._in_order[0] is record:
            self._in_order.popleft()
        else:
            heapq.heappop(self._late)
        del self.records[record.event_id]

    def _compact(self) -> None:
        records = self.records
        live = [
            record
            for record in self._in_order
            if records.get(record.event_id) is record
        ]
        self._in_order = deque(live)
        self._late = [
            slot for slot in self._late if records.get(slot[2].event_id) is slot[2]
        ]
        heapq.heapify(self._late)


class EventJoin:
    """The keyed join of one partition; see the module docstring for semantics.

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

    __slots__ = (
        "_clock_ms",
        "_expired",
        "_guard",
        "_guard_order",
        "_guard_ttl_ms",
        "_max_pending",
        "_next_deadline_ms",
        "_outcomes",
        "_predictions",
    )

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

        self._max_pending: Final = max_pending
        self._guard_ttl_ms: Final = duplicate_guard_ttl_ms
        self._predictions: Final = _PendingSide[Prediction](prediction_ttl_ms)
        self._outcomes: Final = _PendingSide[Outcome](outcome_ttl_ms)
        self._guard: dict[str, int] = {}
        self._guard_order: deque[str] = deque()
        self._expired: list[DroppedEntry] = []
        self._clock_ms = _NEVER
        self._next_deadline_ms = _FAR_FUTURE

    @property
    def pending_predictions(self) -> int:
        """Predictions waiting for their outcome."""
        return len(self._predictions.records)

    @property
    def pending_outcomes(self) -> int:
        """Outcomes waiting for their prediction."""
        return len(self._outcomes.records)

    @property
    def duplicate_guard_size(self) -> int:
        """Joined event ids the duplicate guard remembers."""
        return len(self._guard)

    def pending_predictions_by_model(self) -> dict[ModelKey, int]:
        """Pending predictions per model key.

        O(n) in the pending predictions (0.5 to 1 s per million): meant for a
        metrics scrape, not the hot loop. It copies the records in one step
        before counting, so another thread may call it while the consumer
        thread adds records.
        """
        snapshot = list(self._predictions.records.values())
        counts = Counter(map(_model_and_version, snapshot))
        return {ModelKey(*key): count for key, count in counts.items()}

    def add_prediction(self, prediction: Prediction, *, now_ms: int) -> JoinStep:
        """Pair ``prediction`` with its pending outcome, or hold it pending."""
        self._advance(now_ms)
        event_id = prediction.event_id
        if event_id in self._guard or event_id in self._predictions.records:
            return _DUPLICATE

        outcome = self._outcomes.take(event_id)
        if outcome is not None:
            return self._join(prediction, outcome)
        return self._hold(self._predictions, prediction)

    def add_outcome(self, outcome: Outcome, *, now_ms: int) -> JoinStep:
        """Pair ``outcome`` with its pending prediction, or hold it pending."""
        self._advance(now_ms)
        event_id = outcome.event_id
        if event_id in self._guard or event_id in self._outcomes.records:
            return _DUPLICATE

        prediction = self._predictions.take(event_id)
        if prediction is not None:
            return self._join(prediction, outcome)
        return self._hold(self._outcomes, outcome)

    def expire(self, now_ms: int) -> list[DroppedEntry]:
        """Remove and return every entry whose deadline is ``<=`` the clock.

        That includes the entries earlier calls found expired. The clock is the
        largest ``now_ms`` seen, this one included.
        """
        self._advance(now_ms)
        expired, self._expired = self._expired, []
        return expired

    def to_state(self) -> JoinState:
        """The whole join state as plain, JSON-ready data (see JoinState).

        A copy that shares nothing mutable with the join; O(n log n) in the
        pending entries at worst, so call it from the thread that adds records.
        """
        return {
            "format": STATE_FORMAT,
            "clock_ms": None if self._clock_ms == _NEVER else self._clock_ms,
            "predictions": [
                _prediction_row(prediction)
                for prediction in self._predictions.in_deadline_order()
            ],
            "outcomes": [
                [outcome.event_id, outcome.label, outcome.timestamp_ms]
                for outcome in self._outcomes.in_deadline_order()
            ],
            "duplicate_guard": [
                [event_id, self._guard[event_id]] for event_id in self._guard_order
            ],
            "expired": [_dropped_row(entry) for entry in self._expired],
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
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"join state is malformed ({exc}); discard the checkpoint and "
                "replay the partition"
            ) from exc
        return join

    def _restore(self, state: Mapping[str, Any]) -> None:
        clock_ms = state["clock_ms"]
        self._clock_ms = _NEVER if clock_ms is None else _integer(clock_ms)
        models: dict[tuple[str, str], ModelKey] = {}
        for row in state["predictions"]:
            prediction = _prediction_from_row(row, models)
            self._restore_pending(self._predictions, prediction)
        for event_id, label, timestamp_ms in state["outcomes"]:
            outcome = Outcome(_text(event_id), _label(label), _integer(timestamp_ms))
            self._restore_pending(self._outcomes, outcome)

        for event_id, joined_at_ms in state["duplicate_guard"]:
            if event_id in self._guard or self._is_pending(event_id):
                raise ValueError(f"event id {event_id!r} is held twice")
            if self._guard_order and joined_at_ms < self._guard[self._guard_order[-1]]:
                raise ValueError("duplicate guard is not in join order")
            self._guard[_text(event_id)] = _integer(joined_at_ms)
            self._guard_order.append(event_id)

        self._expired = [_dropped_from_row(row) for row in state["expired"]]
        self._next_deadline_ms = self._earliest_deadline_ms()

    def _restore_pending(self, side: _PendingSide[_R], record: _R) -> None:
        if self._is_pending(record.event_id):
            raise ValueError(f"event id {record.event_id!r} is held twice")
        side.add(record)

    def _is_pending(self, event_id: str) -> bool:
        return (
            event_id in self._predictions.records or event_id in self._outcomes.records
        )

    def _advance(self, now_ms: int) -> None:
        if now_ms > self._clock_ms:
            self._clock_ms = now_ms
        if self._clock_ms >= self._next_deadline_ms:
            self._collect()

    def _collect(self) -> None:
        clock_ms = self._clock_ms
        for prediction in self._predictions.pop_due(clock_ms):
            self._expired.append(_dropped_record(prediction))
        for outcome in self._outcomes.pop_due(clock_ms):
            self._expired.append(_dropped_record(outcome))

        newest_forgotten_ms = clock_ms - self._guard_ttl_ms
        guard, order = self._guard, self._guard_order
        while order and guard[order[0]] <= newest_forgotten_ms:
            del guard[order.popleft()]

        self._next_deadline_ms = self._earliest_deadline_ms()

    def _earliest_deadline_ms(self) -> int:
        earliest = min(
            self._predictions.earliest_deadline_ms(),
            self._outcomes.earliest_deadline_ms(),
        )
        if self._guard_order:
            joined_at_ms = self._guard[self._guard_order[0]]
            earliest = min(earliest, joined_at_ms + self._guard_ttl_ms)
        return earliest

    def _join(self, prediction: Prediction, outcome: Outcome) -> JoinStep:
        self._guard[prediction.event_id] = self._clock_ms
        self._guard_order.append(prediction.event_id)
        forgotten_deadline_ms = self._clock_ms + self._guard_ttl_ms
        if forgotten_deadline_ms < self._next_deadline_ms:
            self._next_deadline_ms = forgotten_deadline_ms

        guard_evictions = 0
        while len(self._guard) > self._max_pending:
            del self._guard[self._guard_order.popleft()]
            guard_evictions += 1
        return _step((prediction, outcome), (), guard_evictions)

    def _hold(self, side: _PendingSide[_R], record: _R) -> JoinStep:
        deadline_ms = record.timestamp_ms + side.ttl_ms
        if deadline_ms <= self._clock_ms:
            self._expired.append(_dropped_record(record))
            return _QUIET

        side.add(record)
        if deadline_ms < self._next_deadline_ms:
            self._next_deadline_ms = deadline_ms
        if len(side.records) <= self._max_pending:
            return _QUIET

        evicted: list[DroppedEntry] = []
        while len(side.records) > self._max_pending:
            evicted.append(_dropped_record(side.pop_oldest()))
        return _step(None, tuple(evicted), 0)


def _require_positive(name: str, value: object, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer ({unit}), got {value!r}")


def _dropped_record(record: Prediction | Outcome) -> DroppedEntry:
    if isinstance(record, Prediction):
        return _dropped("prediction", record.event_id, record.model)
    return _dropped("outcome", record.event_id, None)


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
