"""Tests of the keyed join: exact cases, a naive reference model, state round-trip."""

from __future__ import annotations

import doctest
import json
import re
import tracemalloc
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import join as join_module
from streamer.events import ModelKey, Outcome, Prediction
from streamer.join import DroppedEntry, EventJoin, JoinStep, Side

FRAUD = ModelKey("fraud", "7")
CHURN = ModelKey("churn", "")

OPTIONS: dict[str, Any] = {
    "prediction_ttl_ms": 1_000,
    "outcome_ttl_ms": 100,
    "max_pending": 10,
}

QUIET = JoinStep(joined=None, duplicate=False, evicted=())
DUPLICATE = JoinStep(joined=None, duplicate=True, evicted=())


def make_join(**overrides: Any) -> EventJoin:
    return EventJoin(**{**OPTIONS, **overrides})


def prediction(
    event_id: str, timestamp_ms: int = 0, model: ModelKey = FRAUD, p: float = 0.5
) -> Prediction:
    return Prediction(event_id, model, timestamp_ms, probability=p)


def outcome(event_id: str, timestamp_ms: int = 0, label: int = 1) -> Outcome:
    return Outcome(event_id, label, timestamp_ms)


def expired_prediction(event_id: str, model: ModelKey = FRAUD) -> DroppedEntry:
    return DroppedEntry("prediction", event_id, model)


def expired_outcome(event_id: str) -> DroppedEntry:
    return DroppedEntry("outcome", event_id, None)


def test_module_examples_run() -> None:
    results = doctest.testmod(join_module)

    assert results.attempted > 0
    assert results.failed == 0


# Pairing


def test_prediction_then_outcome_pairs() -> None:
    join = make_join()
    first, second = prediction("e-1"), outcome("e-1", 10)

    assert join.add_prediction(first, now_ms=0) == QUIET
    assert join.pending_predictions == 1
    step = join.add_outcome(second, now_ms=10)

    assert step.joined is not None
    assert step.joined[0] == first
    assert step.joined[1] == second
    assert not step.duplicate
    assert step.evicted == ()
    assert (join.pending_predictions, join.pending_outcomes) == (0, 0)


def test_outcome_then_prediction_pairs() -> None:
    join = make_join()
    first, second = outcome("e-1"), prediction("e-1", 5)

    assert join.add_outcome(first, now_ms=0) == QUIET
    assert join.pending_outcomes == 1
    step = join.add_prediction(second, now_ms=5)

    assert step.joined is not None
    assert step.joined[0] == second
    assert step.joined[1] == first
    assert (join.pending_predictions, join.pending_outcomes) == (0, 0)


def test_different_event_ids_stay_pending() -> None:
    join = make_join()

    assert join.add_prediction(prediction("e-1"), now_ms=0) == QUIET
    assert join.add_outcome(outcome("e-2"), now_ms=0) == QUIET

    assert (join.pending_predictions, join.pending_outcomes) == (1, 1)


# Duplicates


def test_second_pending_prediction_is_duplicate_and_first_wins() -> None:
    join = make_join()
    first, second = prediction("e-1", p=0.1), prediction("e-1", p=0.9)

    join.add_prediction(first, now_ms=0)
    assert join.add_prediction(second, now_ms=0) == DUPLICATE
    assert join.pending_predictions == 1
    step = join.add_outcome(outcome("e-1"), now_ms=0)

    assert step.joined is not None
    assert step.joined[0] == first


def test_second_pending_outcome_is_duplicate_and_first_wins() -> None:
    join = make_join()
    first, second = outcome("e-1", label=0), outcome("e-1", label=1)

    join.add_outcome(first, now_ms=0)
    assert join.add_outcome(second, now_ms=0) == DUPLICATE
    assert join.pending_outcomes == 1
    step = join.add_prediction(prediction("e-1"), now_ms=0)

    assert step.joined is not None
    assert step.joined[1] == first


def test_records_after_the_join_are_duplicates_on_both_sides() -> None:
    join = make_join()
    join.add_prediction(prediction("e-1"), now_ms=0)
    join.add_outcome(outcome("e-1"), now_ms=0)

    assert join.add_prediction(prediction("e-1"), now_ms=1) == DUPLICATE
    assert join.add_outcome(outcome("e-1"), now_ms=2) == DUPLICATE
    assert (join.pending_predictions, join.pending_outcomes) == (0, 0)
    assert join.duplicate_guard_size == 1


def test_duplicate_guard_forgets_exactly_at_its_ttl() -> None:
    join = make_join(duplicate_guard_ttl_ms=50)
    join.add_prediction(prediction("e-1", 10), now_ms=10)
    join.add_outcome(outcome("e-1", 10), now_ms=10)

    assert join.add_prediction(prediction("e-1", 59), now_ms=59) == DUPLICATE
    assert join.add_prediction(prediction("e-1", 60), now_ms=60) == QUIET
    assert join.pending_predictions == 1
    assert join.duplicate_guard_size == 0


def test_duplicate_guard_ttl_defaults_to_prediction_ttl() -> None:
    join = make_join(prediction_ttl_ms=1_000)
    join.add_prediction(prediction("e-1"), now_ms=0)
    join.add_outcome(outcome("e-1"), now_ms=0)

    assert join.add_outcome(outcome("e-1", 999), now_ms=999) == DUPLICATE
    assert join.add_outcome(outcome("e-1", 1_000), now_ms=1_000) == QUIET


def test_duplicate_guard_bound_forgets_the_oldest_and_counts_it() -> None:
    join = make_join(max_pending=2)
    steps = []
    for event_id in ("e-1", "e-2", "e-3"):
        join.add_prediction(prediction(event_id), now_ms=0)
        steps.append(join.add_outcome(outcome(event_id), now_ms=0))

    assert [step.guard_evictions for step in steps] == [0, 0, 1]
    assert join.duplicate_guard_size == 2
    assert join.add_prediction(prediction("e-1"), now_ms=0) == QUIET
    assert join.add_prediction(prediction("e-2"), now_ms=0) == DUPLICATE
    assert join.add_outcome(outcome("e-3"), now_ms=0) == DUPLICATE


def test_expired_and_evicted_ids_are_not_remembered() -> None:
    join = make_join(max_pending=1)
    join.add_prediction(prediction("e-1", 0), now_ms=0)
    assert join.expire(1_000) == [expired_prediction("e-1")]
    join.add_outcome(outcome("e-2", 1_000), now_ms=1_000)
    step = join.add_outcome(outcome("e-3", 1_000), now_ms=1_000)
    assert step.evicted == (expired_outcome("e-2"),)

    assert join.add_prediction(prediction("e-1", 1_000), now_ms=1_000) == QUIET
    assert not join.add_outcome(outcome("e-2", 1_000), now_ms=1_000).duplicate
    assert join.duplicate_guard_size == 0


# TTLs


def test_prediction_expires_exactly_at_its_deadline() -> None:
    join = make_join(prediction_ttl_ms=1_000)
    join.add_prediction(prediction("e-1", 100), now_ms=100)

    assert join.expire(1_099) == []
    assert join.pending_predictions == 1
    assert join.expire(1_100) == [expired_prediction("e-1")]
    assert join.pending_predictions == 0
    assert join.expire(5_000) == []


def test_outcome_expires_exactly_at_its_deadline() -> None:
    join = make_join(outcome_ttl_ms=100)
    join.add_outcome(outcome("e-1", 100), now_ms=100)

    assert join.expire(199) == []
    assert join.expire(200) == [expired_outcome("e-1")]
    assert join.pending_outcomes == 0


def test_out_of_order_timestamps_expire_exactly_in_deadline_order() -> None:
    join = make_join(prediction_ttl_ms=1_000)
    for event_id, timestamp_ms in [("a", 500), ("b", 100), ("c", 300), ("d", 100)]:
        join.add_prediction(prediction(event_id, timestamp_ms, CHURN), now_ms=500)
    join.add_prediction(prediction("e", 700), now_ms=700)

    assert join.expire(1_099) == []
    assert join.expire(1_100) == [
        expired_prediction("b", CHURN),
        expired_prediction("d", CHURN),
    ]
    assert join.expire(1_299) == []
    assert join.expire(1_300) == [expired_prediction("c", CHURN)]
    assert join.expire(1_500) == [expired_prediction("a", CHURN)]
    assert join.pending_predictions == 1


def test_expired_entry_does_not_pair_even_before_expire_is_called() -> None:
    join = make_join(prediction_ttl_ms=1_000, outcome_ttl_ms=100)
    join.add_prediction(prediction("e-1", 0), now_ms=0)

    assert join.add_outcome(outcome("e-1", 1_000), now_ms=1_000) == QUIET
    assert (join.pending_predictions, join.pending_outcomes) == (0, 1)
    assert join.expire(1_000) == [expired_prediction("e-1")]


def test_record_past_its_deadline_on_arrival_is_expired_unless_it_pairs() -> None:
    join = make_join(outcome_ttl_ms=100)
    join.add_prediction(prediction("e-1", 400), now_ms=400)

    assert join.add_outcome(outcome("e-2", 300), now_ms=400) == QUIET
    assert join.pending_outcomes == 0
    assert join.add_outcome(outcome("e-1", 300), now_ms=400).joined is not None
    assert join.expire(400) == [expired_outcome("e-2")]


def test_clock_is_the_largest_now_seen() -> None:
    join = make_join(prediction_ttl_ms=1_000)
    join.add_prediction(prediction("e-1", 500), now_ms=500)
    join.add_outcome(outcome("e-2", 1_550), now_ms=1_600)

    assert join.add_prediction(prediction("e-3", 550), now_ms=0) == QUIET
    assert join.pending_predictions == 0
    assert join.expire(0) == [expired_prediction("e-1"), expired_prediction("e-3")]


# Memory bound


def test_prediction_eviction_takes_the_oldest_deadline() -> None:
    join = make_join(max_pending=2)
    join.add_prediction(prediction("a", 300), now_ms=0)
    join.add_prediction(prediction("b", 100, CHURN), now_ms=0)
    step = join.add_prediction(prediction("c", 200), now_ms=0)

    assert step == JoinStep(None, False, (expired_prediction("b", CHURN),))
    assert join.pending_predictions == 2
    assert join.add_outcome(outcome("b"), now_ms=0) == QUIET
    assert join.add_outcome(outcome("a"), now_ms=0).joined is not None


def test_outcome_eviction_takes_the_oldest_deadline() -> None:
    join = make_join(max_pending=2)
    join.add_outcome(outcome("a", 50), now_ms=0)
    join.add_outcome(outcome("b", 20), now_ms=0)
    step = join.add_outcome(outcome("c", 30), now_ms=0)

    assert step.evicted == (expired_outcome("b"),)
    assert join.pending_outcomes == 2


def test_eviction_ties_take_the_first_inserted() -> None:
    join = make_join(max_pending=2)
    join.add_prediction(prediction("late", 100), now_ms=0)
    join.add_prediction(prediction("first", 50), now_ms=0)
    join.add_prediction(prediction("second", 50), now_ms=0)

    step = join.add_prediction(prediction("third", 50), now_ms=0)

    assert step.evicted == (expired_prediction("second"),)


def test_eviction_ties_between_in_order_and_late_records_take_the_first() -> None:
    join = make_join(max_pending=3)
    join.add_prediction(prediction("first", 50), now_ms=0)
    join.add_prediction(prediction("newest", 100), now_ms=0)
    join.add_prediction(prediction("late", 50), now_ms=0)

    step = join.add_prediction(prediction("next", 60), now_ms=0)

    assert step.evicted == (expired_prediction("first"),)


def test_id_held_again_after_its_join_queues_as_a_new_entry() -> None:
    join = make_join(max_pending=3, duplicate_guard_ttl_ms=1)
    join.add_prediction(prediction("w", 10), now_ms=0)
    join.add_prediction(prediction("a", 10), now_ms=0)
    join.add_outcome(outcome("a", 10), now_ms=0)
    join.add_prediction(prediction("x", 10), now_ms=1)
    assert join.add_prediction(prediction("a", 10), now_ms=1) == QUIET

    steps = [join.add_prediction(prediction(i, 10), now_ms=1) for i in ("y", "z")]

    assert [step.evicted for step in steps] == [
        (expired_prediction("w"),),
        (expired_prediction("x"),),
    ]


def test_new_record_with_the_oldest_deadline_is_the_one_evicted() -> None:
    join = make_join(max_pending=2)
    join.add_outcome(outcome("a", 30), now_ms=0)
    join.add_outcome(outcome("b", 40), now_ms=0)

    assert join.add_outcome(outcome("c", 10), now_ms=0).evicted == (
        expired_outcome("c"),
    )


@pytest.mark.parametrize("side", ["prediction", "outcome"])
def test_eviction_count_at_max_pending(side: Side) -> None:
    join = make_join(max_pending=3)
    evicted: list[DroppedEntry] = []
    for index in range(10):
        if side == "prediction":
            step = join.add_prediction(prediction(f"e-{index}", index), now_ms=0)
        else:
            step = join.add_outcome(outcome(f"e-{index}", index), now_ms=0)
        evicted.extend(step.evicted)

    assert [entry.event_id for entry in evicted] == [f"e-{i}" for i in range(7)]
    assert {entry.side for entry in evicted} == {side}
    assert join.pending_predictions + join.pending_outcomes == 3


@pytest.mark.parametrize("newest_ms", [0, 10**6], ids=["in order", "out of order"])
def test_joined_records_are_released(newest_ms: int) -> None:
    join = make_join(max_pending=8, prediction_ttl_ms=10**9)
    join.add_prediction(prediction("newest", newest_ms), now_ms=0)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for index in range(20_000):
            event_id = f"event-{index}"
            join.add_prediction(prediction(event_id, index), now_ms=index)
            join.add_outcome(outcome(event_id, index), now_ms=index)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert join.pending_predictions == 1
    assert after - before < 100_000


def test_pending_predictions_by_model() -> None:
    join = make_join()
    join.add_prediction(prediction("a", model=FRAUD), now_ms=0)
    join.add_prediction(prediction("b", model=CHURN), now_ms=0)
    join.add_prediction(prediction("c", model=ModelKey("fraud", "7")), now_ms=0)
    join.add_outcome(outcome("b"), now_ms=0)

    assert join.pending_predictions_by_model() == {FRAUD: 2}


# State


def busy_join(**overrides: Any) -> EventJoin:
    """A join holding a bit of everything the state has to carry."""
    join = make_join(**overrides)
    join.add_prediction(prediction("p-late", 900, CHURN), now_ms=900)
    join.add_prediction(prediction("p-early", 850, FRAUD, p=0.125), now_ms=900)
    multiclass = Prediction(
        "p-multi", FRAUD, 870, classes=("a", "b"), probabilities=(0.3, 0.7)
    )
    join.add_prediction(multiclass, now_ms=900)
    join.add_outcome(Outcome("o-bool", True, 880), now_ms=900)
    join.add_outcome(Outcome("o-text", "churned", 890), now_ms=900)
    join.add_prediction(prediction("joined", 700), now_ms=900)
    join.add_outcome(outcome("joined", 890), now_ms=900)
    join.add_outcome(outcome("o-expired", 790), now_ms=900)
    return join


def test_state_is_json_and_round_trips_exactly() -> None:
    original = busy_join()
    state = original.to_state()
    restored = EventJoin.from_state(json.loads(json.dumps(state)), **OPTIONS)

    assert json.loads(json.dumps(state)) == state
    assert restored.to_state() == state
    assert state["clock_ms"] == 900
    assert [row[0] for row in state["predictions"]] == ["p-early", "p-multi", "p-late"]
    assert state["duplicate_guard"] == [["joined", 900]]
    assert state["expired"] == [["outcome", "o-expired", None, None]]

    for join in (original, restored):
        assert join.add_outcome(outcome("joined", 950), now_ms=950) == DUPLICATE
        pair = join.add_outcome(outcome("p-multi", 950), now_ms=950).joined
        assert pair is not None
        assert pair[0].probabilities == (0.3, 0.7)
        assert join.expire(985) == [
            expired_outcome("o-expired"),
            expired_outcome("o-bool"),
        ]
        assert join.pending_outcomes == 1


def test_fresh_state_round_trips() -> None:
    state = make_join().to_state()

    assert state["clock_ms"] is None
    assert EventJoin.from_state(state, **OPTIONS).to_state() == state


def test_restore_with_smaller_max_pending_evicts_on_the_next_add() -> None:
    state = busy_join().to_state()
    restored = EventJoin.from_state(state, **{**OPTIONS, "max_pending": 1})

    step = restored.add_prediction(prediction("new", 2_000), now_ms=900)

    assert step.evicted == (
        expired_prediction("p-early"),
        expired_prediction("p-multi"),
        expired_prediction("p-late", CHURN),
    )
    assert restored.pending_predictions == 1


def test_restore_with_shorter_ttl_expires_on_the_next_call() -> None:
    state = busy_join().to_state()
    restored = EventJoin.from_state(state, **{**OPTIONS, "prediction_ttl_ms": 50})

    assert restored.expire(900) == [
        expired_outcome("o-expired"),
        expired_prediction("p-early"),
    ]


def test_from_state_rejects_another_format() -> None:
    state = {**make_join().to_state(), "format": 99}

    with pytest.raises(ValueError, match=r"join state has format 99, expected 1;"):
        EventJoin.from_state(state, **OPTIONS)


@pytest.mark.parametrize(
    ("key", "rows", "reason"),
    [
        ("predictions", [["e-1", "fraud", "7", 0, 0.5, None]], "not enough values"),
        ("predictions", [["e-1", "fraud", "7", "0", 0.5, None, None]], "'0'"),
        ("outcomes", [["e-1", 1.5, 0]], "expected a label"),
        ("outcomes", [["e-1", 1, 0], ["e-1", 0, 0]], "'e-1' is held twice"),
        ("duplicate_guard", [["e-1", 5], ["e-2", 4]], "not in join order"),
        ("expired", [["model", "e-1", None, None]], "side 'model'"),
    ],
)
def test_from_state_rejects_malformed_state(
    key: str, rows: list[list[Any]], reason: str
) -> None:
    state = {**make_join().to_state(), key: rows}

    with pytest.raises(ValueError, match=r"join state is malformed \(.*" + reason):
        EventJoin.from_state(state, **OPTIONS)


# Options


@pytest.mark.parametrize(
    ("option", "value", "unit"),
    [
        ("prediction_ttl_ms", 0, "milliseconds"),
        ("outcome_ttl_ms", -5, "milliseconds"),
        ("max_pending", 0, "entries per side"),
        ("max_pending", 2.5, "entries per side"),
        ("prediction_ttl_ms", True, "milliseconds"),
        ("duplicate_guard_ttl_ms", 0, "milliseconds, or None for prediction_ttl_ms"),
    ],
)
def test_invalid_options_are_rejected(option: str, value: object, unit: str) -> None:
    message = f"{option} must be a positive integer ({unit}), got {value!r}"

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_join(**{option: value})


def test_invalid_options_are_rejected_by_from_state() -> None:
    state = make_join().to_state()

    with pytest.raises(ValueError, match=r"^outcome_ttl_ms must be .* got 0$"):
        EventJoin.from_state(state, **{**OPTIONS, "outcome_ttl_ms": 0})


# Against a naive reference


@dataclass
class ReferenceJoin:
    """The join's semantics, recomputed from plain lists at every step."""

    prediction_ttl_ms: int
    outcome_ttl_ms: int
    max_pending: int
    guard_ttl_ms: int
    clock_ms: int | None = None
    inserted: int = 0
    pending: dict[str, list[tuple[int, Prediction | Outcome]]] = field(
        default_factory=lambda: {"prediction": [], "outcome": []}
    )
    guard: list[tuple[str, int]] = field(default_factory=list)
    backlog: list[DroppedEntry] = field(default_factory=list)

    def deadline_ms(self, record: Prediction | Outcome) -> int:
        if isinstance(record, Prediction):
            return record.timestamp_ms + self.prediction_ttl_ms
        return record.timestamp_ms + self.outcome_ttl_ms

    def order(self, entry: tuple[int, Prediction | Outcome]) -> tuple[int, int]:
        return self.deadline_ms(entry[1]), entry[0]

    def advance(self, now_ms: int) -> int:
        clock_ms = now_ms if self.clock_ms is None else max(self.clock_ms, now_ms)
        self.clock_ms = clock_ms
        for side, entries in self.pending.items():
            due = [e for e in entries if self.deadline_ms(e[1]) <= clock_ms]
            self.pending[side] = [e for e in entries if e not in due]
            self.backlog += [dropped(e[1]) for e in sorted(due, key=self.order)]
        self.guard = [g for g in self.guard if g[1] + self.guard_ttl_ms > clock_ms]
        return clock_ms

    def add(self, record: Prediction | Outcome, now_ms: int) -> JoinStep:
        clock_ms = self.advance(now_ms)
        side, other = (
            ("prediction", "outcome")
            if isinstance(record, Prediction)
            else ("outcome", "prediction")
        )
        event_id = record.event_id
        if any(guarded == event_id for guarded, _ in self.guard) or any(
            held.event_id == event_id for _, held in self.pending[side]
        ):
            return DUPLICATE

        partners = [e for e in self.pending[other] if e[1].event_id == event_id]
        if partners:
            self.pending[other].remove(partners[0])
            partner = partners[0][1]
            self.guard.append((event_id, clock_ms))
            forgotten = max(0, len(self.guard) - self.max_pending)
            self.guard = self.guard[forgotten:]
            if isinstance(record, Prediction):
                assert isinstance(partner, Outcome)
                return JoinStep((record, partner), False, (), forgotten)
            assert isinstance(partner, Prediction)
            return JoinStep((partner, record), False, (), forgotten)

        if self.deadline_ms(record) <= clock_ms:
            self.backlog.append(dropped(record))
            return QUIET
        self.pending[side].append((self.inserted, record))
        self.inserted += 1
        evicted = []
        while len(self.pending[side]) > self.max_pending:
            victim = min(self.pending[side], key=self.order)
            self.pending[side].remove(victim)
            evicted.append(dropped(victim[1]))
        return JoinStep(None, False, tuple(evicted))

    def expire(self, now_ms: int) -> list[DroppedEntry]:
        self.advance(now_ms)
        expired, self.backlog = self.backlog, []
        return expired


def dropped(record: Prediction | Outcome) -> DroppedEntry:
    if isinstance(record, Prediction):
        return DroppedEntry("prediction", record.event_id, record.model)
    return DroppedEntry("outcome", record.event_id, None)


event_ids = st.sampled_from(["a", "b", "c", "d", "e"])
# Coarse steps, so that equal timestamps and deadlines (ties) are common.
now_steps = st.sampled_from([-2, 0, 0, 0, 1, 3])
timestamp_offsets = st.sampled_from([-9, -6, -3, 0, 0, 2])
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("prediction"),
            now_steps,
            event_ids,
            timestamp_offsets,
            st.booleans(),
        ),
        st.tuples(st.just("outcome"), now_steps, event_ids, timestamp_offsets),
        st.tuples(st.just("expire"), now_steps),
        st.tuples(st.just("checkpoint"), st.just(0)),
    ),
    min_size=20,
    max_size=150,
)


@pytest.mark.parametrize("index_slack", [0, join_module._INDEX_SLACK])
@settings(max_examples=300, deadline=None)
@given(
    prediction_ttl_ms=st.integers(1, 30),
    outcome_ttl_ms=st.integers(1, 30),
    max_pending=st.integers(1, 4),
    duplicate_guard_ttl_ms=st.none() | st.integers(1, 40),
    ops=operations,
)
def test_join_matches_the_naive_reference(
    index_slack: int,
    prediction_ttl_ms: int,
    outcome_ttl_ms: int,
    max_pending: int,
    duplicate_guard_ttl_ms: int | None,
    ops: list[tuple[Any, ...]],
) -> None:
    options: dict[str, Any] = {
        "prediction_ttl_ms": prediction_ttl_ms,
        "outcome_ttl_ms": outcome_ttl_ms,
        "max_pending": max_pending,
        "duplicate_guard_ttl_ms": duplicate_guard_ttl_ms,
    }
    join = EventJoin(**options)
    reference = ReferenceJoin(
        prediction_ttl_ms,
        outcome_ttl_ms,
        max_pending,
        duplicate_guard_ttl_ms or prediction_ttl_ms,
    )

    now_ms = 100
    with mock.patch.object(join_module, "_INDEX_SLACK", index_slack):
        for serial, (kind, now_step, *args) in enumerate(ops):
            now_ms += now_step
            if kind == "prediction":
                event_id, offset, churn = args
                model = CHURN if churn else FRAUD
                record = Prediction(event_id, model, now_ms + offset, serial / 1000)
                assert join.add_prediction(record, now_ms=now_ms) == reference.add(
                    record, now_ms
                )
            elif kind == "outcome":
                event_id, offset = args
                other = Outcome(event_id, serial, now_ms + offset)
                assert join.add_outcome(other, now_ms=now_ms) == reference.add(
                    other, now_ms
                )
            elif kind == "expire":
                assert join.expire(now_ms) == reference.expire(now_ms)
            else:
                state = json.loads(json.dumps(join.to_state()))
                join = EventJoin.from_state(state, **options)
                assert join.to_state() == state

            assert join.pending_predictions == len(reference.pending["prediction"])
            assert join.pending_outcomes == len(reference.pending["outcome"])
            assert join.duplicate_guard_size == len(reference.guard)
            models = [
                held.model
                for _, held in reference.pending["prediction"]
                if isinstance(held, Prediction)
            ]
            assert join.pending_predictions_by_model() == {
                key: models.count(key) for key in set(models)
            }

        assert join.expire(now_ms + 100) == reference.expire(now_ms + 100)
