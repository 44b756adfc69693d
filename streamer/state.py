"""Per-partition state, and its encoding as checkpoint bytes.

Everything driftstream knows about one input partition lives in one
:class:`PartitionState`: the pending join entries and duplicate guard, the
window aggregates per model, the two topics' event-time watermarks, and the
offsets of the next message of each topic that the state does not yet
reflect. A checkpoint is exactly that, so restoring it and resuming from its
offsets continues as if the process had never stopped.

The encoding is orjson-serialised plain data, zlib-compressed. It is pure:
the stores in ``checkpoint.py`` move the bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from streamer.events import ModelKey
from streamer.join import EventJoin
from streamer.windows import RollingWindows, WindowSpec

Side = Literal["prediction", "outcome"]

SeriesKey = tuple[ModelKey, tuple[str, ...]]
"""What windows are kept under: the model version and the segment values."""

STATE_FORMAT: Final = 1


class StateFormatError(ValueError):
    """Checkpoint bytes that this version cannot read."""


@dataclass(frozen=True)
class JoinOptions:
    """What the join needs besides its state; from the configuration."""

    prediction_ttl_ms: int
    outcome_ttl_ms: int
    max_pending: int

    def new_join(self) -> EventJoin:
        return EventJoin(
            prediction_ttl_ms=self.prediction_ttl_ms,
            outcome_ttl_ms=self.outcome_ttl_ms,
            max_pending=self.max_pending,
        )


@dataclass
class PartitionState:
    """All state of one input partition: it moves with the partition."""

    join: EventJoin
    windows: dict[SeriesKey, RollingWindows] = field(default_factory=dict)
    prediction_watermark_ms: int = -1
    outcome_watermark_ms: int = -1
    next_offsets: dict[Side, int] = field(default_factory=dict)

    @property
    def join_clock_ms(self) -> int:
        """The older of the two topics' newest timestamps in this partition."""
        return min(self.prediction_watermark_ms, self.outcome_watermark_ms)

    def already_seen(self, side: Side, offset: int) -> bool:
        """True for a message the state already reflects (a redelivery)."""
        return offset < self.next_offsets.get(side, -1)


def encode(state: PartitionState) -> bytes:
    """The checkpoint bytes of ``state``."""
    plain = {
        "format": STATE_FORMAT,
        "join": state.join.to_state(),
        "windows": [
            [model.model, model.version, list(segment), windows.to_state()]
            for (model, segment), windows in state.windows.items()
        ],
        "prediction_watermark_ms": state.prediction_watermark_ms,
        "outcome_watermark_ms": state.outcome_watermark_ms,
        "next_offsets": state.next_offsets,
    }
    return zlib.compress(orjson.dumps(plain), level=1)


def decode(
    payload: bytes, *, options: JoinOptions, specs: Sequence[WindowSpec]
) -> PartitionState:
    """Rebuild the state :func:`encode` made, under today's configuration.

    Raises
    ------
    StateFormatError
        The bytes are not a checkpoint of this format.
    """
    try:
        plain: dict[str, Any] = orjson.loads(zlib.decompress(payload))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise StateFormatError(f"checkpoint is not readable: {exc}") from exc
    found = plain.get("format") if isinstance(plain, dict) else None
    if found != STATE_FORMAT:
        raise StateFormatError(
            f"checkpoint has format {found!r}, expected {STATE_FORMAT}"
        )
    try:
        return _rebuild(plain, options, specs)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFormatError(f"checkpoint is malformed: {exc}") from exc


def _rebuild(
    plain: dict[str, Any], options: JoinOptions, specs: Sequence[WindowSpec]
) -> PartitionState:
    join = EventJoin.from_state(
        plain["join"],
        prediction_ttl_ms=options.prediction_ttl_ms,
        outcome_ttl_ms=options.outcome_ttl_ms,
        max_pending=options.max_pending,
    )
    windows = {
        (ModelKey(str(model), str(version)), tuple(str(v) for v in segment)): (
            RollingWindows.from_state(specs, saved)
        )
        for model, version, segment, saved in plain["windows"]
    }
    offsets: dict[Side, int] = {}
    for side, offset in plain["next_offsets"].items():
        if side not in ("prediction", "outcome"):
            raise ValueError(f"unknown side {side!r} in next_offsets")
        offsets[side] = int(offset)
    return PartitionState(
        join=join,
        windows=windows,
        prediction_watermark_ms=int(plain["prediction_watermark_ms"]),
        outcome_watermark_ms=int(plain["outcome_watermark_ms"]),
        next_offsets=offsets,
    )
