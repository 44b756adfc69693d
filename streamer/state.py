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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from streamer.columns import CALIBRATION_COLUMNS, PREDICTION_COLUMNS
from streamer.drift import Baseline
from streamer.events import ModelKey
from streamer.join import EventJoin
from streamer.reference import DriftSettings, SeriesDrift
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
    """Joined events, at outcome time, with the calibration columns."""
    prediction_windows: dict[SeriesKey, RollingWindows] = field(default_factory=dict)
    """Predictions, at prediction time: entropy and the probability histogram."""
    drift: dict[SeriesKey, SeriesDrift] = field(default_factory=dict)
    """Reference, baseline and change detector per series; kept while quiet."""
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
        "windows": _series_states(state.windows),
        "prediction_windows": _series_states(state.prediction_windows),
        "drift": _series_states(state.drift),
        "prediction_watermark_ms": state.prediction_watermark_ms,
        "outcome_watermark_ms": state.outcome_watermark_ms,
        "next_offsets": state.next_offsets,
    }
    return zlib.compress(orjson.dumps(plain), level=1)


def _series_states(
    table: Mapping[SeriesKey, RollingWindows] | Mapping[SeriesKey, SeriesDrift],
) -> list[list[Any]]:
    return [
        [model.model, model.version, list(segment), kept.to_state()]
        for (model, segment), kept in table.items()
    ]


def decode(
    payload: bytes,
    *,
    options: JoinOptions,
    specs: Sequence[WindowSpec],
    drift_settings: DriftSettings,
    baselines: Mapping[str, Baseline],
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
        return _rebuild(plain, options, specs, drift_settings, baselines)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise StateFormatError(f"checkpoint is malformed: {exc}") from exc


def _rebuild(
    plain: dict[str, Any],
    options: JoinOptions,
    specs: Sequence[WindowSpec],
    drift_settings: DriftSettings,
    baselines: Mapping[str, Baseline],
) -> PartitionState:
    join = EventJoin.from_state(
        plain["join"],
        prediction_ttl_ms=options.prediction_ttl_ms,
        outcome_ttl_ms=options.outcome_ttl_ms,
        max_pending=options.max_pending,
    )
    windows = {
        key: RollingWindows.from_state(specs, saved, extra_columns=CALIBRATION_COLUMNS)
        for key, saved in _series_items(plain["windows"])
    }
    prediction_windows = {
        key: RollingWindows.from_state(specs, saved, extra_columns=PREDICTION_COLUMNS)
        for key, saved in _series_items(plain.get("prediction_windows", []))
    }
    drift = {
        key: SeriesDrift.from_state(saved, drift_settings, baselines.get(key[0].model))
        for key, saved in _series_items(plain.get("drift", []))
    }
    offsets: dict[Side, int] = {}
    for side, offset in plain["next_offsets"].items():
        if side not in ("prediction", "outcome"):
            raise ValueError(f"unknown side {side!r} in next_offsets")
        offsets[side] = int(offset)
    return PartitionState(
        join=join,
        windows=windows,
        prediction_windows=prediction_windows,
        drift=drift,
        prediction_watermark_ms=int(plain["prediction_watermark_ms"]),
        outcome_watermark_ms=int(plain["outcome_watermark_ms"]),
        next_offsets=offsets,
    )


def _series_items(saved: list[Any]) -> list[tuple[SeriesKey, Any]]:
    return [
        ((ModelKey(str(model), str(version)), tuple(str(v) for v in segment)), kept)
        for model, version, segment, kept in saved
    ]
