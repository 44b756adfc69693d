"""The join's native storage: records come back as they went in, memory is
released, and the counted numbers standing for model keys, classes and
segments are forgotten with their last holder, without mixing them up."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import _native
from streamer.events import ModelKey, Outcome, Prediction
from streamer.join import EventJoin

OPTIONS: dict[str, Any] = {
    "prediction_ttl_ms": 10**9,
    "outcome_ttl_ms": 10**9,
    "max_pending": 10**6,
}

models = st.builds(
    ModelKey, st.sampled_from(["fraud", "intent", ""]), st.text(max_size=3)
)
segments = st.lists(st.text(max_size=30), max_size=3).map(tuple)
event_ids = st.one_of(
    st.integers(0, 40).map(str),
    st.text(min_size=1, max_size=60),  # past 24 bytes an id leaves the inline slot
)


@st.composite
def predictions(draw: st.DrawFn) -> Prediction:
    model = draw(models)
    timestamp_ms = draw(st.integers(0, 2**53))
    segment = draw(segments)
    if draw(st.booleans()):
        p = draw(st.floats(0.0, 1.0))
        return Prediction(draw(event_ids), model, timestamp_ms, p, segment=segment)
    classes = tuple(sorted(draw(st.sets(st.text(max_size=8), min_size=2, max_size=9))))
    probabilities = tuple(draw(st.floats(0.0, 1.0)) for _ in classes)
    return Prediction(
        draw(event_ids), model, timestamp_ms, None, classes, probabilities, segment
    )


labels = st.one_of(st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=10))


@settings(max_examples=200, deadline=None)
@given(
    held=st.lists(predictions(), max_size=40, unique_by=lambda p: p.event_id),
    order=st.randoms(use_true_random=False),
    checkpoint_every=st.integers(1, 10),
    label=labels,
)
def test_each_prediction_comes_back_as_it_went_in(
    held: list[Prediction], order: Any, checkpoint_every: int, label: Any
) -> None:
    join = EventJoin(**OPTIONS)
    for prediction in held:
        assert join.add_prediction(prediction, now_ms=0).joined is None
    outcomes = [Outcome(p.event_id, label, 7) for p in held]
    order.shuffle(outcomes)
    by_id = {p.event_id: p for p in held}
    for count, outcome in enumerate(outcomes, start=1):
        step = join.add_outcome(outcome, now_ms=0)
        assert step.joined == (by_id[outcome.event_id], outcome)
        assert join.expire(0) == []
        if count % checkpoint_every == 0:
            state = json.loads(json.dumps(join.to_state()))
            join = EventJoin.from_state(state, **OPTIONS)
            assert join.to_state() == state
    assert join.pending_predictions == 0
    assert join.duplicate_guard_size == len(held)


@settings(max_examples=100, deadline=None)
@given(held=st.lists(st.tuples(event_ids, labels, st.integers(0, 2**53)), max_size=30))
def test_each_pending_outcome_comes_back_as_it_went_in(
    held: list[tuple[str, Any, int]],
) -> None:
    join = EventJoin(**OPTIONS)
    first: dict[str, Outcome] = {}
    for event_id, label, timestamp_ms in held:
        outcome = Outcome(event_id, label, timestamp_ms)
        step = join.add_outcome(outcome, now_ms=0)
        assert step.duplicate == (event_id in first)
        first.setdefault(event_id, outcome)
    state = json.loads(json.dumps(join.to_state()))
    join = EventJoin.from_state(state, **OPTIONS)
    for event_id, outcome in first.items():
        step = join.add_prediction(
            Prediction(event_id, ModelKey("m", ""), 0, 0.5), now_ms=0
        )
        assert step.joined is not None
        assert step.joined[1] == outcome


def test_numbers_are_forgotten_with_their_last_holder() -> None:
    join = EventJoin(**OPTIONS)
    kept = Prediction("kept", ModelKey("kept", "1"), 0, 0.3, segment=("eu",))
    join.add_prediction(kept, now_ms=0)
    for index in range(5000):
        event_id = f"e-{index}"
        model = ModelKey(f"model-{index}", "")
        classes = (f"a-{index}", f"b-{index}")
        late = Prediction(f"late-{index}", model, 0, 0.5, segment=(f"x{index}",))
        join.add_prediction(
            Prediction(event_id, model, 0, None, classes, (0.5, 0.5), (str(index),)),
            now_ms=0,
        )
        # a duplicate, a pair, an eviction-free expiry: each lets its numbers go
        join.add_prediction(
            Prediction(event_id, model, 0, None, classes, (0.5, 0.5), (str(index),)),
            now_ms=0,
        )
        join.add_outcome(Outcome(event_id, classes[0], 0), now_ms=0)
        join.add_prediction(late, now_ms=0)
        join.add_outcome(Outcome(late.event_id, 1, 0), now_ms=0)

    # Only the one prediction still held keeps numbers: its model and segment.
    assert join._core.numbered() == (1, 0, 1)
    step = join.add_outcome(Outcome("kept", 1, 0), now_ms=0)
    assert step.joined is not None
    assert step.joined[0] == kept
    assert join._core.numbered() == (0, 0, 0)


def test_an_expired_prediction_keeps_its_model_until_returned() -> None:
    join = EventJoin(prediction_ttl_ms=10, outcome_ttl_ms=10, max_pending=10)
    fraud = ModelKey("fraud", "7")
    join.add_prediction(Prediction("a", fraud, 0, 0.2, segment=("eu",)), now_ms=0)
    join.add_prediction(Prediction("b", fraud, 0, 0.2), now_ms=20)  # already due
    state = join.to_state()
    assert [row[2] for row in state["expired"]] == ["fraud", "fraud"]
    assert join._core.numbered() == (1, 0, 0)
    assert [entry.model for entry in join.expire(20)] == [fraud, fraud]
    assert join._core.numbered() == (0, 0, 0)


def test_native_memory_is_released_after_pairs_join() -> None:
    join = EventJoin(prediction_ttl_ms=10**9, outcome_ttl_ms=10**9, max_pending=8)
    fraud = ModelKey("fraud", "7")

    def churn(start: int) -> None:
        for index in range(start, start + 20_000):
            event_id = f"a-rather-long-event-id-{index}"  # heap-allocated, not inline
            join.add_prediction(
                Prediction(event_id, fraud, index, None, ("a", "b"), (0.2, 0.8)),
                now_ms=index,
            )
            join.add_outcome(Outcome(event_id, "a", index), now_ms=index)

    churn(0)
    settled = join.native_bytes()
    churn(20_000)

    assert join.pending_predictions == 0
    # The guard holds at most max_pending ids and the slots are reused, so a
    # second round of 20 000 pairs allocates nothing more.
    assert join.native_bytes() <= settled
    assert settled < 100_000


def test_a_pending_prediction_slot_is_64_bytes() -> None:
    # The memory target (benchmarks/RESULTS.md) rests on this layout.
    assert _native.PREDICTION_SLOT_BYTES == 64
