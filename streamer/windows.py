"""Additive rolling windows of per-event loss, in event time.

A :class:`RollingWindows` holds the windows of one key (one model version in
one partition) for a sequence of :class:`WindowSpec`. Each window keeps an
event count, a loss sum and a sum of squared losses; those add up across
partitions and replicas (:class:`WindowStats` supports ``+``), and the means
are derived from them only when asked for.

Semantics
---------
Time is event time in epoch milliseconds and is always passed in; nothing
here reads a clock.

- A window of ``length_ms`` is cut into ``buckets`` buckets of
  ``bucket_ms = length_ms // buckets``. An event at time ``t`` falls in
  bucket ``b = t // bucket_ms`` (floor division, also for negative ``t``).
- Each window keeps a ring of ``buckets`` slots holding ``(bucket id, count,
  sum, sum of squares)``; bucket ``b`` lives in slot ``b % buckets``. A slot
  is reset when a newer bucket id maps to it.
- The window's head is the largest bucket id it has seen. Events are taken in
  order, also within a batch, and the head moves as they arrive. An event
  whose bucket is ``<= head - buckets`` is older than the ring can hold: it
  is dropped from that window and counted as late for it. The same event may
  be late for a short window and counted in a long one.
- ``stats(now_ms)`` sums the slots whose bucket id is in
  ``(now_b - buckets, now_b]``, ``now_b = now_ms // bucket_ms``: the window
  covers the last ``buckets`` buckets ending with the one holding ``now``,
  so its resolution is ``bucket_ms``. Events of buckets after ``now_b``
  (clocks ahead of the consumer's) are kept and count once ``now`` reaches
  them. When ``now`` is behind the head, only the buckets the ring still
  holds, ``(head - buckets, now_b]``, are summed; so the window reported at
  any ``now`` is exactly the events whose bucket is in
  ``(max(now_b, head) - buckets, now_b]`` among those not dropped as late.
- Totals are never kept as running sums that values are subtracted from:
  every statistic is recomputed from the slots, so a burst of extreme losses
  that leaves the window leaves no residue, negative value or NaN behind.
- ``is_empty(now_ms)`` is true when no window holds an event that
  ``stats(now_ms)`` counts or will count at a later ``now``: the key can then
  be dropped (and its metric series leave) without losing anything.

The mean is reported whenever a window has at least one event; a minimum
event count before a mean is exported is the exporter's decision.

Extra columns. A :class:`RollingWindows` made with ``extra_columns=n`` keeps
``n`` more per-event values per slot beside the loss, summed the same way
(the drift layer's calibration and prediction histograms); they are held,
dropped as late and left behind exactly as the loss is.
:meth:`RollingWindows.add_binned` takes extra columns that are mostly zeros
(one-hot histogram bins) by bin instead of written out.

Adding a batch runs in the compiled core (``native/src/windows.rs``), in
place on the numpy slots everything else here reads; ``_Ring.add_reference``
is the same in numpy, and tests hold the two to the same bits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from streamer import _native

__all__ = ["RollingWindows", "WindowSpec", "WindowStats", "parse_window"]

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_WINDOW_TEXT = re.compile(r"([1-9][0-9]*)([smhd])")
_WINDOW_FORMS = (
    "<positive integer><unit> with unit s, m, h or d, e.g. 30s, 5m, 1h, 24h, 7d"
)

_NO_BUCKET = int(np.iinfo(np.int64).min)
"""Bucket id of a slot that never held an event; older than any window."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """The length and resolution of one rolling window.

    Parameters
    ----------
    name
        The window's label in metrics and state, e.g. ``"5m"``.
    length_ms
        The window's length in milliseconds.
    buckets
        How many buckets the length is cut into; ``length_ms`` must be a
        multiple of it.

    Examples
    --------
    >>> WindowSpec(name="5m", length_ms=300_000).bucket_ms
    5000
    >>> WindowSpec(name="1s", length_ms=1_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: window '1s': length_ms=1000 is not a multiple of buckets=60; ...
    """

    name: str
    length_ms: int
    buckets: int = 60

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a window needs a non-empty name, e.g. '5m'")
        if self.length_ms <= 0 or self.buckets <= 0:
            raise ValueError(
                f"window {self.name!r}: length_ms and buckets must be positive, "
                f"got length_ms={self.length_ms}, buckets={self.buckets}"
            )
        if self.length_ms % self.buckets:
            raise ValueError(
                f"window {self.name!r}: length_ms={self.length_ms} is not a "
                f"multiple of buckets={self.buckets}; pick a length or a bucket "
                "count that divides it"
            )

    @property
    def bucket_ms(self) -> int:
        """The length of one bucket in milliseconds: the window's resolution."""
        return self.length_ms // self.buckets


def parse_window(text: str, *, buckets: int = 60) -> WindowSpec:
    """Return the window spec a duration such as ``"5m"`` names.

    Parameters
    ----------
    text
        A positive whole number followed by ``s``, ``m``, ``h`` or ``d``; it
        becomes the window's name.
    buckets
        The bucket count of the window.

    Returns
    -------
    WindowSpec
        A window named ``text`` of that length.

    Raises
    ------
    ValueError
        If ``text`` is not of that form, or the length is not a multiple of
        ``buckets``.

    Examples
    --------
    >>> parse_window("5m")
    WindowSpec(name='5m', length_ms=300000, buckets=60)
    >>> parse_window("7d", buckets=168).bucket_ms
    3600000
    >>> parse_window("5 min")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: window '5 min' is not a duration; expected <positive integer>...
    """
    match = _WINDOW_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"window {text!r} is not a duration; expected {_WINDOW_FORMS}")

    amount, unit = match.groups()
    return WindowSpec(
        name=text, length_ms=int(amount) * _UNIT_MS[unit], buckets=buckets
    )


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Count and sums of the losses in one window; additive across shards.

    Examples
    --------
    >>> a = WindowStats(events=2, loss_sum=1.0, loss_squared_sum=0.5)
    >>> b = WindowStats(events=2, loss_sum=3.0, loss_squared_sum=4.5)
    >>> (a + b).mean_loss
    1.0
    >>> WindowStats().mean_loss is None
    True
    """

    events: int = 0
    loss_sum: float = 0.0
    loss_squared_sum: float = 0.0
    extra_sums: tuple[float, ...] = ()
    """Sums of the extra columns, if the windows keep any."""

    @property
    def mean_loss(self) -> float | None:
        """The mean loss in nats, or ``None`` for a window without events."""
        if self.events == 0:
            return None
        return self.loss_sum / self.events

    @property
    def mean_squared_loss(self) -> float | None:
        """The mean squared loss, or ``None`` for a window without events."""
        if self.events == 0:
            return None
        return self.loss_squared_sum / self.events

    def __add__(self, other: WindowStats) -> WindowStats:
        if not isinstance(other, WindowStats):
            return NotImplemented
        if len(self.extra_sums) != len(other.extra_sums):
            raise ValueError(
                f"cannot add windows with {len(self.extra_sums)} and "
                f"{len(other.extra_sums)} extra columns"
            )
        return WindowStats(
            events=self.events + other.events,
            loss_sum=self.loss_sum + other.loss_sum,
            loss_squared_sum=self.loss_squared_sum + other.loss_squared_sum,
            extra_sums=tuple(
                a + b for a, b in zip(self.extra_sums, other.extra_sums, strict=True)
            ),
        )


class _Ring:
    """The bucket slots of one window; see the module docstring."""

    def __init__(self, spec: WindowSpec, extra_columns: int = 0) -> None:
        self.spec = spec
        self.head: int | None = None
        self.bucket_ids = np.full(spec.buckets, _NO_BUCKET, dtype=np.int64)
        self.events = np.zeros(spec.buckets, dtype=np.int64)
        self.loss_sums = np.zeros(spec.buckets, dtype=np.float64)
        self.loss_squared_sums = np.zeros(spec.buckets, dtype=np.float64)
        self.extra_sums = np.zeros((spec.buckets, extra_columns), dtype=np.float64)

    def compiled(self) -> tuple[Any, ...]:
        """The slots and head, as the compiled core's ``rings_add`` takes them.

        It adds a batch in place on the slots, with the arithmetic of
        :meth:`add_reference`, which stays as the reference it is tested
        against (bit for bit).
        """
        return (
            self.bucket_ids,
            self.events,
            self.loss_sums,
            self.loss_squared_sums,
            self.extra_sums,
            self.head,
            self.spec.bucket_ms,
        )

    def add_reference(
        self,
        timestamp_ms: NDArray[np.int64],
        loss: NDArray[np.float64],
        extra: NDArray[np.float64],
    ) -> int:
        """What ``rings_add`` does to this ring, in numpy: its reference."""
        if timestamp_ms.size == 0:
            return 0
        bucket = timestamp_ms // self.spec.bucket_ms
        loss_squared = np.square(loss)

        running_head = np.maximum.accumulate(bucket)
        if self.head is not None:
            running_head = np.maximum(running_head, self.head)
        late = bucket <= running_head - self.spec.buckets
        self.head = int(running_head[-1])

        # Only buckets after head - buckets are held once the whole batch is
        # in; this leaves out the late events and those that a later bucket
        # of the same batch pushed out of the ring.
        first_held = self.head - self.spec.buckets + 1
        held = bucket >= first_held
        offset = bucket[held] - first_held
        self._merge(
            first_held,
            np.bincount(offset, minlength=self.spec.buckets),
            _sum_by_offset(offset, loss[held], size=self.spec.buckets),
            _sum_by_offset(offset, loss_squared[held], size=self.spec.buckets),
            _sum_rows_by_offset(offset, extra[held], size=self.spec.buckets),
        )
        return int(np.count_nonzero(late))

    def _merge(
        self,
        first_bucket: int,
        events: NDArray[np.int64],
        loss_sums: NDArray[np.float64],
        loss_squared_sums: NDArray[np.float64],
        extra_sums: NDArray[np.float64],
    ) -> None:
        """Add per-bucket totals for buckets ``first_bucket + i`` to the slots."""
        touched = np.flatnonzero(events)
        bucket_ids = touched + first_bucket
        slots = bucket_ids % self.spec.buckets

        reused = self.bucket_ids[slots] == bucket_ids
        self.bucket_ids[slots] = bucket_ids
        self.events[slots] = np.where(reused, self.events[slots], 0) + events[touched]
        self.loss_sums[slots] = (
            np.where(reused, self.loss_sums[slots], 0.0) + loss_sums[touched]
        )
        self.loss_squared_sums[slots] = (
            np.where(reused, self.loss_squared_sums[slots], 0.0)
            + loss_squared_sums[touched]
        )
        if self.extra_sums.shape[1]:
            self.extra_sums[slots] = (
                np.where(reused[:, np.newaxis], self.extra_sums[slots], 0.0)
                + extra_sums[touched]
            )

    def retained(self) -> NDArray[np.bool_]:
        """Which slots hold buckets of the ring that ends at the head."""
        if self.head is None:
            return np.zeros(self.spec.buckets, dtype=np.bool_)
        return self.bucket_ids > self.head - self.spec.buckets

    def held(self, now_ms: int) -> NDArray[np.bool_]:
        """Which slots hold events counted at ``now_ms`` or later."""
        now_bucket = now_ms // self.spec.bucket_ms
        return self.retained() & (self.bucket_ids > now_bucket - self.spec.buckets)

    def stats(self, now_ms: int) -> WindowStats:
        """Sum the slots of the buckets in the window ending at ``now_ms``."""
        now_bucket = now_ms // self.spec.bucket_ms
        visible = self.held(now_ms) & (self.bucket_ids <= now_bucket)
        return WindowStats(
            events=int(self.events[visible].sum()),
            loss_sum=float(self.loss_sums[visible].sum()),
            loss_squared_sum=float(self.loss_squared_sums[visible].sum()),
            extra_sums=tuple(self.extra_sums[visible].sum(axis=0).tolist()),
        )

    def to_state(self) -> dict[str, Any]:
        """The spec, the head and the slots the ring still holds, oldest first."""
        slots = np.flatnonzero(self.retained())
        slots = slots[np.argsort(self.bucket_ids[slots])]
        state: dict[str, Any] = {
            "length_ms": self.spec.length_ms,
            "buckets": self.spec.buckets,
            "head": self.head,
            "bucket_ids": self.bucket_ids[slots].tolist(),
            "events": self.events[slots].tolist(),
            "loss_sums": self.loss_sums[slots].tolist(),
            "loss_squared_sums": self.loss_squared_sums[slots].tolist(),
        }
        if self.extra_sums.shape[1]:
            state["extra_sums"] = self.extra_sums[slots].tolist()
        return state

    @classmethod
    def from_state(
        cls, spec: WindowSpec, state: Mapping[str, Any], extra_columns: int = 0
    ) -> _Ring:
        """Rebuild a ring from :meth:`to_state` output made for ``spec``.

        Saved state without extra columns (a checkpoint of a version that
        kept none) restores them as zeros.
        """
        _check_ring_state(spec, state)
        ring = cls(spec, extra_columns)
        ring.head = None if state["head"] is None else int(state["head"])

        bucket_ids = np.asarray(state["bucket_ids"], dtype=np.int64)
        slots = bucket_ids % spec.buckets
        ring.bucket_ids[slots] = bucket_ids
        ring.events[slots] = state["events"]
        ring.loss_sums[slots] = state["loss_sums"]
        ring.loss_squared_sums[slots] = state["loss_squared_sums"]
        extra = state.get("extra_sums")
        if extra and extra_columns:
            saved = np.asarray(extra, dtype=np.float64)
            if saved.shape != (len(bucket_ids), extra_columns):
                raise ValueError(
                    f"window {spec.name!r}: saved extra sums have shape "
                    f"{saved.shape}, expected {(len(bucket_ids), extra_columns)}"
                )
            ring.extra_sums[slots] = saved
        return ring


class RollingWindows:
    """The rolling windows of one key, fed with batches of per-event losses.

    Parameters
    ----------
    specs
        The windows to keep, with distinct names.

    Examples
    --------
    Two-second windows of 4 buckets (500 ms each):

    >>> import numpy as np
    >>> windows = RollingWindows([WindowSpec(name="2s", length_ms=2_000, buckets=4)])
    >>> windows.add(np.array([0, 600, 1_900]), np.array([1.0, 2.0, 3.0]))
    {'2s': 0}
    >>> windows.stats(now_ms=1_999)["2s"].mean_loss
    2.0

    At 2.4 s the bucket of the first event (0 to 499 ms) has left the window,
    and once an event at 2.5 s has moved the head on, an event from that
    bucket is too late to be counted:

    >>> windows.stats(now_ms=2_400)["2s"].events
    2
    >>> windows.add(np.array([2_500, 100]), np.array([0.5, 9.0]))
    {'2s': 1}
    >>> windows.is_empty(now_ms=3_999), windows.is_empty(now_ms=4_500)
    (False, True)
    """

    def __init__(self, specs: Sequence[WindowSpec], *, extra_columns: int = 0) -> None:
        _check_specs(specs)
        if extra_columns < 0:
            raise ValueError(f"extra_columns must be >= 0, got {extra_columns}")
        self.extra_columns = extra_columns
        self._rings = {spec.name: _Ring(spec, extra_columns) for spec in specs}

    @property
    def specs(self) -> tuple[WindowSpec, ...]:
        """The windows kept, in the order given."""
        return tuple(ring.spec for ring in self._rings.values())

    def add(
        self,
        timestamp_ms: NDArray[np.int64],
        loss: NDArray[np.float64],
        extra: NDArray[np.float64] | None = None,
    ) -> dict[str, int]:
        """Add a batch of events to every window.

        Parameters
        ----------
        timestamp_ms
            Each event's time in epoch milliseconds, in arrival order.
        loss
            Each event's loss: finite and not negative.
        extra
            Each event's extra columns, shape ``(events, extra_columns)``;
            required when the windows keep extra columns.

        Returns
        -------
        dict[str, int]
            Window name -> how many events of the batch were dropped from
            that window as too late.

        Raises
        ------
        ValueError
            If the arrays are not 1-D of one length, or a loss is negative,
            infinite or NaN.
        """
        timestamp_ms, loss = _checked_batch(timestamp_ms, loss)
        extra = _checked_extra(extra, loss.size, self.extra_columns)
        return self._added(
            loss,
            _native.rings_add(
                [ring.compiled() for ring in self._rings.values()],
                timestamp_ms,
                loss,
                extra,
            ),
        )

    def add_binned(
        self,
        timestamp_ms: NDArray[np.int64],
        loss: NDArray[np.float64],
        base: Sequence[NDArray[np.float64]],
        score: NDArray[np.float64],
        binned: Sequence[NDArray[np.float64] | None],
        *,
        edges: NDArray[np.float64],
    ) -> dict[str, int]:
        """:meth:`add` with extra columns that are mostly zeros, given by bin.

        Each event's extra columns are its value in each ``base`` column,
        then per ``binned`` column a group of ``len(edges) + 1`` columns, all
        0 but the one of the event's bin, which holds the event's value in
        that column (1 for ``None``). An event's bin is the number of
        ``edges`` below its ``score``. The result is exactly that of
        :meth:`add` with those columns written out, without writing them.
        """
        timestamp_ms, loss = _checked_batch(timestamp_ms, loss)
        return self._added(
            loss,
            _native.rings_add_binned(
                [ring.compiled() for ring in self._rings.values()],
                timestamp_ms,
                loss,
                [_floats(column) for column in base],
                _floats(score),
                [None if column is None else _floats(column) for column in binned],
                _floats(edges),
            ),
        )

    def _added(
        self,
        loss: NDArray[np.float64],
        result: tuple[list[tuple[int, int | None]], int, int],
    ) -> dict[str, int]:
        """The late events per window of a compiled add; its heads kept."""
        added, bad_loss, bad_extra = result
        if bad_loss >= 0:
            raise ValueError(
                f"losses must be finite and not negative, got "
                f"{float(loss[bad_loss])!r} at index {bad_loss}"
            )
        if bad_extra >= 0:
            raise ValueError("extra columns must be finite")
        late: dict[str, int] = {}
        for ring, (events_late, head) in zip(self._rings.values(), added, strict=True):
            ring.head = head
            late[ring.spec.name] = events_late
        return late

    def stats(self, now_ms: int) -> dict[str, WindowStats]:
        """Return window name -> the statistics of the window ending at ``now_ms``."""
        return {name: ring.stats(now_ms) for name, ring in self._rings.items()}

    def is_empty(self, now_ms: int) -> bool:
        """Whether no window holds an event counted at ``now_ms`` or later."""
        return not any(ring.held(now_ms).any() for ring in self._rings.values())

    def to_state(self) -> dict[str, Any]:
        """Return the windows as plain JSON-friendly data.

        ``from_state`` rebuilds windows that behave exactly like these ones;
        floats survive a JSON round trip unchanged.
        """
        return {
            "windows": {name: ring.to_state() for name, ring in self._rings.items()}
        }

    @classmethod
    def from_state(
        cls,
        specs: Sequence[WindowSpec],
        state: Mapping[str, Any],
        *,
        extra_columns: int = 0,
    ) -> RollingWindows:
        """Rebuild windows from :meth:`to_state` output.

        Windows are matched by name: a spec without saved state starts empty,
        and saved windows no longer in ``specs`` are dropped.

        Raises
        ------
        ValueError
            If the state is malformed, or a saved window has the name of a
            spec but another length or bucket count.
        """
        windows = cls(specs, extra_columns=extra_columns)
        saved = state.get("windows")
        if not isinstance(saved, Mapping):
            raise ValueError(
                "window state has no 'windows' mapping; expected the output of "
                "RollingWindows.to_state()"
            )

        for spec in specs:
            if spec.name in saved:
                windows._rings[spec.name] = _ring_from_state(
                    spec, saved[spec.name], extra_columns
                )
        return windows


def _sum_by_offset(
    offset: NDArray[np.int64], values: NDArray[np.float64], *, size: int
) -> NDArray[np.float64]:
    """Sum ``values`` into ``size`` bins by ``offset``, in order of arrival."""
    # numpy's stubs type bincount as integer even when it sums float weights.
    return cast(
        NDArray[np.float64], np.bincount(offset, weights=values, minlength=size)
    )


def _sum_rows_by_offset(
    offset: NDArray[np.int64], rows: NDArray[np.float64], *, size: int
) -> NDArray[np.float64]:
    """Sum the rows of ``rows`` into ``size`` bins by ``offset``: one bincount."""
    columns = rows.shape[1]
    if columns == 0:
        return np.zeros((size, 0), dtype=np.float64)
    flat = (offset[:, np.newaxis] * columns + np.arange(columns)).ravel()
    sums = np.bincount(flat, weights=rows.ravel(), minlength=size * columns)
    return cast(NDArray[np.float64], sums).reshape(size, columns)


def _floats(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``values`` as native-order float64 (the compiled core reads raw bytes)."""
    return np.asarray(values, dtype=np.float64)


def _checked_extra(
    extra: NDArray[np.float64] | None, events: int, columns: int
) -> NDArray[np.float64]:
    if extra is None:
        if columns:
            raise ValueError(f"these windows keep {columns} extra columns; pass them")
        return np.zeros((events, 0), dtype=np.float64)
    extra = np.asarray(extra, dtype=np.float64)
    if extra.shape != (events, columns):
        raise ValueError(
            f"extra must have shape {(events, columns)}, got {extra.shape}"
        )
    return extra


def _check_specs(specs: Sequence[WindowSpec]) -> None:
    names = [spec.name for spec in specs]
    if not names:
        raise ValueError("RollingWindows needs at least one WindowSpec")

    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"window names must be distinct; repeated: {repeated}")


def _checked_batch(
    timestamp_ms: NDArray[np.int64], loss: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    timestamp_ms = np.asarray(timestamp_ms, dtype=np.int64)
    loss = np.asarray(loss, dtype=np.float64)
    if timestamp_ms.ndim != 1 or timestamp_ms.shape != loss.shape:
        raise ValueError(
            "timestamp_ms and loss must be 1-D arrays of one length, got shapes "
            f"{timestamp_ms.shape} and {loss.shape}"
        )

    return timestamp_ms, loss


def _ring_from_state(spec: WindowSpec, state: Any, extra_columns: int) -> _Ring:
    """Rebuild one window, turning a missing or mistyped field into ``ValueError``."""
    try:
        return _Ring.from_state(spec, state, extra_columns)
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"window {spec.name!r}: saved state is malformed ({exc!r}); expected "
            "the output of RollingWindows.to_state()"
        ) from exc


def _check_ring_state(spec: WindowSpec, state: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless ``state`` is a ring of ``spec``'s shape."""
    if (state["length_ms"], state["buckets"]) != (spec.length_ms, spec.buckets):
        raise ValueError(
            f"window {spec.name!r}: saved state has length_ms={state['length_ms']}, "
            f"buckets={state['buckets']} but the spec has length_ms="
            f"{spec.length_ms}, buckets={spec.buckets}; give the changed window "
            "a new name or discard its saved state"
        )

    columns = ("bucket_ids", "events", "loss_sums", "loss_squared_sums")
    if len({len(state[column]) for column in columns}) != 1:
        raise ValueError(f"window {spec.name!r}: saved slot lists differ in length")

    bucket_ids, head = state["bucket_ids"], state["head"]
    if head is None:
        in_ring = not bucket_ids
    else:
        in_ring = all(
            head - spec.buckets < bucket_id <= head for bucket_id in bucket_ids
        )
    if len(set(bucket_ids)) != len(bucket_ids) or not in_ring:
        raise ValueError(
            f"window {spec.name!r}: saved bucket ids {bucket_ids} are not distinct "
            f"buckets of the ring ending at head={head}"
        )
