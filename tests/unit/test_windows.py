"""Rolling windows against a naive recomputation over a plain list of events."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.windows import RollingWindows, WindowSpec, WindowStats, parse_window

MAX_LOSS = 36.04365338911715
"""``-log(eps)``: the largest loss a clipped probability can give."""

EXTREME_LOSSES = [
    MAX_LOSS,
    1e-300,
    5e-324,
    2.220446049250313e-16,
    0.0,
    690.7755278982137,
]

Batch = list[tuple[int, float]]


@dataclass
class NaiveWindow:
    """One window as a list of ``(t, loss)`` events and the documented rules."""

    spec: WindowSpec
    head: int | None = None
    events: list[tuple[int, float]] = field(default_factory=list)

    def bucket(self, time_ms: int) -> int:
        return time_ms // self.spec.bucket_ms

    def add(self, time_ms: int, loss: float) -> bool:
        """Add one event; return whether it was late."""
        bucket = self.bucket(time_ms)
        self.head = bucket if self.head is None else max(self.head, bucket)
        if bucket <= self.head - self.spec.buckets:
            return True
        self.events.append((time_ms, loss))
        return False

    def first_held_bucket(self, now_ms: int) -> int:
        assert self.head is not None
        return max(self.bucket(now_ms), self.head) - self.spec.buckets + 1

    def visible(self, now_ms: int) -> list[float]:
        if self.head is None:
            return []
        first, last = self.first_held_bucket(now_ms), self.bucket(now_ms)
        return [loss for t, loss in self.events if first <= self.bucket(t) <= last]

    def holds_any(self, now_ms: int) -> bool:
        if self.head is None:
            return False
        first = self.first_held_bucket(now_ms)
        return any(self.bucket(t) >= first for t, _ in self.events)


def add_batch(windows: RollingWindows, batch: Batch) -> dict[str, int]:
    times = np.array([t for t, _ in batch], dtype=np.int64)
    losses = np.array([loss for _, loss in batch], dtype=np.float64)
    return windows.add(times, losses)


def add_naive(naive: list[NaiveWindow], batch: Batch) -> dict[str, int]:
    return {
        window.spec.name: sum(window.add(t, loss) for t, loss in batch)
        for window in naive
    }


def assert_sum_close(actual: float, expected: float) -> None:
    assert math.isfinite(actual)
    assert actual >= 0.0
    assert actual == pytest.approx(expected, rel=1e-9, abs=0.0)


def assert_matches(
    windows: RollingWindows, naive: list[NaiveWindow], now_ms: int
) -> None:
    stats = windows.stats(now_ms)
    assert list(stats) == [window.spec.name for window in naive]

    for window in naive:
        losses = window.visible(now_ms)
        window_stats = stats[window.spec.name]
        assert window_stats.events == len(losses)
        assert_sum_close(window_stats.loss_sum, math.fsum(losses))
        assert_sum_close(
            window_stats.loss_squared_sum, math.fsum(x * x for x in losses)
        )
        assert (window_stats.mean_loss is None) == (not losses)

    assert windows.is_empty(now_ms) == (not any(w.holds_any(now_ms) for w in naive))


@st.composite
def window_specs(draw: st.DrawFn) -> list[WindowSpec]:
    """One to three small windows, so that streams wrap their rings often."""
    shapes = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=40),
                st.integers(min_value=1, max_value=8),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return [
        WindowSpec(name=f"w{index}", length_ms=bucket_ms * buckets, buckets=buckets)
        for index, (bucket_ms, buckets) in enumerate(shapes)
    ]


losses = st.one_of(
    st.sampled_from(EXTREME_LOSSES), st.floats(min_value=0.0, max_value=40.0)
)


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[Batch, int]]:
    """Batches with a ``now`` each, along a clock that jumps and stalls.

    Events come mostly near the clock, some far behind (late) or a little
    ahead (future buckets); some batches are bursts of one extreme loss.
    """
    clock_ms = draw(st.integers(min_value=-500, max_value=500))
    result: list[tuple[Batch, int]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        clock_ms += draw(st.sampled_from([0, 1, 7, 40, 150, 2_000]))
        offsets = st.integers(min_value=-400, max_value=60)
        if draw(st.booleans()):
            burst_loss = draw(st.sampled_from(EXTREME_LOSSES))
            size = draw(st.integers(min_value=1, max_value=200))
            batch = [(clock_ms + draw(offsets), burst_loss)] * size
        else:
            batch = draw(st.lists(st.tuples(offsets, losses), max_size=30))
            batch = [(clock_ms + offset, loss) for offset, loss in batch]
        now_ms = clock_ms + draw(st.integers(min_value=-100, max_value=400))
        result.append((batch, now_ms))
    return result


@settings(max_examples=400, deadline=None)
@given(specs=window_specs(), stream=steps())
def test_windows_match_naive_recomputation_after_every_update(
    specs: list[WindowSpec], stream: list[tuple[Batch, int]]
) -> None:
    windows = RollingWindows(specs)
    naive = [NaiveWindow(spec) for spec in specs]

    for batch, now_ms in stream:
        assert add_batch(windows, batch) == add_naive(naive, batch)

        for probe_ms in (now_ms, now_ms - 37, now_ms + 1_000):
            assert_matches(windows, naive, probe_ms)


@settings(max_examples=200, deadline=None)
@given(specs=window_specs(), stream=steps(), data=st.data())
def test_result_does_not_depend_on_how_events_are_batched(
    specs: list[WindowSpec], stream: list[tuple[Batch, int]], data: st.DataObject
) -> None:
    events = [event for batch, _ in stream for event in batch]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    one_batch, many_batches = RollingWindows(specs), RollingWindows(specs)

    late_once = add_batch(one_batch, events)
    late_each = [
        add_batch(many_batches, events[start:stop])
        for start, stop in zip([0, *cuts], [*cuts, len(events)], strict=True)
    ]

    assert late_once == {
        name: sum(late[name] for late in late_each) for name in late_once
    }
    now_ms = stream[-1][1]
    for name, stats in one_batch.stats(now_ms).items():
        other = many_batches.stats(now_ms)[name]
        assert stats.events == other.events
        assert stats.loss_sum == pytest.approx(other.loss_sum, rel=1e-9, abs=0.0)


def ring_slots(windows: RollingWindows) -> list[tuple[object, ...]]:
    """Each ring's head and slot arrays, as bytes: equal only bit for bit."""
    return [
        (
            ring.head,
            ring.bucket_ids.tobytes(),
            ring.events.tobytes(),
            ring.loss_sums.tobytes(),
            ring.loss_squared_sums.tobytes(),
            ring.extra_sums.tobytes(),
        )
        for ring in windows._rings.values()
    ]


@settings(max_examples=300, deadline=None)
@given(
    specs=window_specs(),
    stream=steps(),
    columns=st.integers(min_value=0, max_value=3),
    data=st.data(),
)
def test_compiled_add_is_the_numpy_reference_bit_for_bit(
    specs: list[WindowSpec],
    stream: list[tuple[Batch, int]],
    columns: int,
    data: st.DataObject,
) -> None:
    """The compiled ``_Ring.add`` leaves every slot exactly as numpy's would."""
    compiled = RollingWindows(specs, extra_columns=columns)
    reference = RollingWindows(specs, extra_columns=columns)
    for batch, _ in stream:
        timestamps = np.array([t for t, _ in batch], dtype=np.int64)
        loss = np.array([x for _, x in batch], dtype=np.float64)
        extra = np.array(
            data.draw(
                st.lists(
                    st.lists(losses, min_size=columns, max_size=columns),
                    min_size=len(batch),
                    max_size=len(batch),
                )
            ),
            dtype=np.float64,
        ).reshape(len(batch), columns)
        late = compiled.add(timestamps, loss, extra)
        expected = {
            name: ring.add_reference(timestamps, loss, extra)
            for name, ring in reference._rings.items()
        }
        assert late == expected
        assert ring_slots(compiled) == ring_slots(reference)


def test_compiled_add_refuses_a_read_only_ring() -> None:
    windows = RollingWindows([SPEC_1S])
    ring = next(iter(windows._rings.values()))
    ring.events.setflags(write=False)
    with pytest.raises(ValueError, match="events is read-only"):
        windows.add(np.array([0]), np.array([0.5]))


def test_burst_of_extreme_losses_leaves_no_residue() -> None:
    windows = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])

    windows.add(np.zeros(10_000, dtype=np.int64), np.full(10_000, MAX_LOSS))
    # Bucket 10 takes over the slot of bucket 0, where the burst was.
    windows.add(np.full(3, 1_000, dtype=np.int64), np.full(3, 1e-300))

    assert windows.stats(now_ms=1_999)["1s"] == WindowStats(
        events=3, loss_sum=1e-300 + 1e-300 + 1e-300, loss_squared_sum=0.0
    )
    assert windows.to_state()["windows"]["1s"]["bucket_ids"] == [10]


def test_burst_is_counted_while_in_the_window() -> None:
    windows = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])

    windows.add(np.zeros(10_000, dtype=np.int64), np.full(10_000, MAX_LOSS))

    stats = windows.stats(now_ms=999)["1s"]
    assert stats.events == 10_000
    assert stats.mean_loss == pytest.approx(MAX_LOSS, rel=1e-12)
    assert windows.stats(now_ms=1_000)["1s"] == WindowStats()


def test_late_events_are_counted_per_window() -> None:
    short = WindowSpec(name="1s", length_ms=1_000, buckets=10)
    long = WindowSpec(name="1m", length_ms=60_000, buckets=60)
    windows = RollingWindows([short, long])

    windows.add(np.array([10_000]), np.array([1.0]))
    late = windows.add(np.array([9_099, 9_100, 9_900]), np.array([2.0, 3.0, 4.0]))

    assert late == {"1s": 1, "1m": 0}
    assert windows.stats(now_ms=10_000)["1s"].events == 3
    assert windows.stats(now_ms=10_000)["1m"].events == 4


def test_event_late_behind_a_newer_event_of_the_same_batch() -> None:
    windows = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])

    late = windows.add(np.array([0, 5_000, 0]), np.array([1.0, 2.0, 3.0]))

    assert late == {"1s": 1}
    assert windows.stats(now_ms=5_000)["1s"].events == 1


def test_future_events_count_once_now_reaches_them() -> None:
    windows = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])
    windows.add(np.array([5_000]), np.array([1.0]))

    assert windows.stats(now_ms=4_900)["1s"].events == 0
    assert not windows.is_empty(now_ms=4_900)
    assert windows.stats(now_ms=5_000)["1s"].events == 1


def test_empty_batch_changes_nothing() -> None:
    windows = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])

    late = windows.add(np.array([], dtype=np.int64), np.array([]))

    assert late == {"1s": 0}
    assert windows.is_empty(now_ms=0)
    assert windows.to_state()["windows"]["1s"]["head"] is None


def test_is_empty_once_every_event_left_every_window() -> None:
    short = WindowSpec(name="1s", length_ms=1_000, buckets=10)
    long = WindowSpec(name="1m", length_ms=60_000, buckets=60)
    windows = RollingWindows([short, long])
    assert windows.is_empty(now_ms=0)

    windows.add(np.array([500]), np.array([0.3]))

    assert not windows.is_empty(now_ms=500)
    assert not windows.is_empty(now_ms=59_999)
    assert windows.is_empty(now_ms=60_000)


@settings(max_examples=200, deadline=None)
@given(specs=window_specs(), stream=steps(), data=st.data())
def test_state_round_trips_through_json(
    specs: list[WindowSpec], stream: list[tuple[Batch, int]], data: st.DataObject
) -> None:
    saved_after = data.draw(st.integers(min_value=0, max_value=len(stream)))
    windows = RollingWindows(specs)
    for batch, _ in stream[:saved_after]:
        add_batch(windows, batch)

    state = windows.to_state()
    restored = RollingWindows.from_state(specs, json.loads(json.dumps(state)))

    assert restored.to_state() == state
    for batch, now_ms in stream[saved_after:]:
        assert add_batch(restored, batch) == add_batch(windows, batch)
        assert restored.stats(now_ms) == windows.stats(now_ms)
        assert restored.is_empty(now_ms) == windows.is_empty(now_ms)


def test_state_is_plain_data() -> None:
    windows = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])
    windows.add(np.array([0, 350, 1_250]), np.array([0.5, 1.5, 2.5]))

    assert windows.to_state() == {
        "windows": {
            "1s": {
                "length_ms": 1_000,
                "buckets": 10,
                "head": 12,
                "bucket_ids": [3, 12],
                "events": [1, 1],
                "loss_sums": [1.5, 2.5],
                "loss_squared_sums": [2.25, 6.25],
            }
        }
    }


def test_from_state_matches_windows_by_name() -> None:
    old = RollingWindows([WindowSpec(name="1s", length_ms=1_000, buckets=10)])
    old.add(np.array([100]), np.array([1.0]))
    new_specs = [
        WindowSpec(name="1s", length_ms=1_000, buckets=10),
        WindowSpec(name="1m", length_ms=60_000, buckets=60),
    ]

    restored = RollingWindows.from_state(new_specs, old.to_state())

    assert restored.stats(now_ms=100) == {
        "1s": WindowStats(events=1, loss_sum=1.0, loss_squared_sum=1.0),
        "1m": WindowStats(),
    }
    assert restored.specs == tuple(new_specs)


def saved_ring(**changes: object) -> dict[str, object]:
    ring: dict[str, object] = {
        "length_ms": 1_000,
        "buckets": 10,
        "head": 12,
        "bucket_ids": [3, 12],
        "events": [1, 2],
        "loss_sums": [0.5, 1.0],
        "loss_squared_sums": [0.25, 0.5],
    }
    return {"windows": {"1s": ring | changes}}


SPEC_1S = WindowSpec(name="1s", length_ms=1_000, buckets=10)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({}, r"no 'windows' mapping; expected the output of RollingWindows"),
        (
            saved_ring(length_ms=2_000),
            r"window '1s': saved state has length_ms=2000, buckets=10 but the "
            r"spec has length_ms=1000, buckets=10; give the changed window a new",
        ),
        (saved_ring(events=[1]), r"window '1s': saved slot lists differ in length"),
        (
            saved_ring(bucket_ids=[2, 12]),
            r"saved bucket ids \[2, 12\] are not distinct buckets of the ring "
            r"ending at head=12",
        ),
        (saved_ring(bucket_ids=[12, 12]), r"are not distinct buckets"),
        (saved_ring(head=None), r"are not distinct buckets .* head=None"),
        (
            {"windows": {"1s": {"head": 3}}},
            r"window '1s': saved state is malformed \(KeyError\('length_ms'\)\)",
        ),
        ({"windows": {"1s": None}}, r"window '1s': saved state is malformed"),
    ],
)
def test_from_state_refuses_bad_state(state: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RollingWindows.from_state([SPEC_1S], state)


def test_window_stats_add_up_across_shards() -> None:
    spec = WindowSpec(name="1m", length_ms=60_000, buckets=60)
    times = np.arange(0, 50_000, 1_000, dtype=np.int64)
    losses = np.linspace(0.01, MAX_LOSS, times.size)
    whole, first, second = (RollingWindows([spec]) for _ in range(3))

    whole.add(times, losses)
    first.add(times[::2], losses[::2])
    second.add(times[1::2], losses[1::2])

    combined = first.stats(now_ms=50_000)["1m"] + second.stats(now_ms=50_000)["1m"]
    expected = whole.stats(now_ms=50_000)["1m"]
    assert combined.events == expected.events == 50
    assert combined.loss_sum == pytest.approx(expected.loss_sum, rel=1e-12)
    assert combined.loss_squared_sum == pytest.approx(
        expected.loss_squared_sum, rel=1e-12
    )


window_stats = st.builds(
    WindowStats,
    events=st.integers(min_value=0, max_value=10**9),
    loss_sum=st.floats(min_value=0.0, max_value=1e9),
    loss_squared_sum=st.floats(min_value=0.0, max_value=1e9),
)


@given(first=window_stats, second=window_stats)
def test_window_stats_sum_is_fieldwise(first: WindowStats, second: WindowStats) -> None:
    total = first + second

    assert total == second + first
    assert total.events == first.events + second.events
    assert total.loss_sum == first.loss_sum + second.loss_sum
    assert total.loss_squared_sum == first.loss_squared_sum + second.loss_squared_sum
    assert first + WindowStats() == first
    assert sum([first, second], WindowStats()) == total


def test_window_stats_means() -> None:
    stats = WindowStats(events=4, loss_sum=2.0, loss_squared_sum=3.0)

    assert stats.mean_loss == 0.5
    assert stats.mean_squared_loss == 0.75
    assert WindowStats().mean_loss is None
    assert WindowStats().mean_squared_loss is None


def test_window_stats_do_not_add_to_other_types() -> None:
    with pytest.raises(TypeError, match="unsupported operand"):
        WindowStats() + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "length_ms"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("24h", 86_400_000),
        ("7d", 604_800_000),
    ],
)
def test_parse_window_accepts_durations(text: str, length_ms: int) -> None:
    assert parse_window(text) == WindowSpec(name=text, length_ms=length_ms)


def test_parse_window_passes_the_bucket_count() -> None:
    assert parse_window("1s", buckets=10).bucket_ms == 100


@pytest.mark.parametrize(
    "text", ["", "5", "m", "0m", "05m", "-5m", "5 m", " 5m", "5M", "1.5h", "5min"]
)
def test_parse_window_refuses_other_text(text: str) -> None:
    expected = (
        rf"window {re.escape(repr(text))} is not a duration; expected <positive "
        r"integer><unit> with unit s, m, h or d, e\.g\. 30s, 5m, 1h, 24h, 7d"
    )
    with pytest.raises(ValueError, match=expected):
        parse_window(text)


def test_parse_window_refuses_a_length_the_buckets_do_not_divide() -> None:
    with pytest.raises(
        ValueError, match=r"window '1s': length_ms=1000 is not a multiple of buckets=60"
    ):
        parse_window("1s")


@pytest.mark.parametrize(
    ("length_ms", "buckets"), [(0, 60), (-60_000, 60), (60_000, 0), (60_000, -1)]
)
def test_window_spec_refuses_non_positive_sizes(length_ms: int, buckets: int) -> None:
    expected = (
        rf"window 'w': length_ms and buckets must be positive, got "
        rf"length_ms={length_ms}, buckets={buckets}"
    )
    with pytest.raises(ValueError, match=expected):
        WindowSpec(name="w", length_ms=length_ms, buckets=buckets)


def test_window_spec_needs_a_name() -> None:
    with pytest.raises(ValueError, match="a window needs a non-empty name"):
        WindowSpec(name="", length_ms=60_000)


def test_window_spec_is_frozen() -> None:
    spec = WindowSpec(name="1m", length_ms=60_000)

    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.length_ms = 1  # type: ignore[misc]


def test_rolling_windows_needs_distinct_windows() -> None:
    spec = WindowSpec(name="5m", length_ms=300_000)

    with pytest.raises(ValueError, match="at least one WindowSpec"):
        RollingWindows([])
    with pytest.raises(ValueError, match=r"must be distinct; repeated: \['5m'\]"):
        RollingWindows([spec, dataclasses.replace(spec, buckets=30)])


@pytest.mark.parametrize(
    ("times", "losses"),
    [([0, 1], [1.0]), ([[0]], [[1.0]]), ([], [1.0])],
)
def test_add_refuses_arrays_of_other_shapes(
    times: list[int], losses: list[float]
) -> None:
    windows = RollingWindows([SPEC_1S])

    with pytest.raises(ValueError, match=r"1-D arrays of one length, got shapes"):
        windows.add(np.array(times, dtype=np.int64), np.array(losses))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1e-12])
def test_add_refuses_losses_that_are_not_finite_and_non_negative(bad: float) -> None:
    windows = RollingWindows([SPEC_1S])

    with pytest.raises(
        ValueError, match=rf"finite and not negative, got {bad!r} at index 1"
    ):
        windows.add(np.array([0, 1]), np.array([0.5, bad]))
    assert windows.is_empty(now_ms=1)


def test_a_ring_that_cannot_take_the_batch_leaves_every_ring_unchanged() -> None:
    windows = RollingWindows(
        [
            WindowSpec(name="a", length_ms=4_000, buckets=4),
            WindowSpec(name="b", length_ms=6_000, buckets=3),
        ]
    )
    before = ring_slots(windows)
    windows._rings["b"].events.setflags(write=False)
    with pytest.raises(ValueError, match="events is read-only"):
        windows.add(np.array([1_000]), np.array([2.0]))
    assert ring_slots(windows) == before


def test_inputs_in_another_byte_order_are_read_as_numbers() -> None:
    spec = WindowSpec(name="a", length_ms=4_000, buckets=4)
    native = RollingWindows([spec], extra_columns=3)
    swapped = RollingWindows([spec], extra_columns=3)
    values = np.array([0.25, 0.75, 2.0])
    for windows, form in ((native, "<f8"), (swapped, ">f8")):
        given = values.astype(form)
        windows.add_binned(
            np.arange(3, dtype=">i8" if form == ">f8" else "<i8") * 100,
            given,
            [given],
            given,
            [None],
            edges=np.array([0.5], dtype=form),
        )
    assert native.stats(1_000)["a"] == swapped.stats(1_000)["a"]
    assert native.stats(1_000)["a"].extra_sums == (3.0, 1.0, 2.0)
