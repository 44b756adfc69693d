"""The segment budget: a bounded set of values per segment key.

Whatever producers send, each key keeps at most ``segments.max_values``
values (the first ones seen in this process), or exactly its allow-list;
every other value becomes ``other`` and is counted, so ``/metrics`` cannot
grow without bound. An absent value (``""``) is kept and costs no budget.

The budget is per process: replicas that see values in a different order may
keep different ones; allow-lists give the same series everywhere.
"""

from __future__ import annotations

from streamer.config import SegmentsConfig
from streamer.records import OTHER_SEGMENT


class SegmentBudget:
    """Maps raw segment values to kept ones, counting what it folds away."""

    def __init__(self, config: SegmentsConfig) -> None:
        self.keys = config.keys
        self.max_values = config.max_values
        self._allowed = {key: frozenset(values) for key, values in config.allow.items()}
        self._kept: dict[str, set[str]] = {key: set() for key in config.keys}
        self.dropped: dict[str, int] = {key: 0 for key in config.keys}

    def admit(self, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            self._admit_one(key, value)
            for key, value in zip(self.keys, values, strict=True)
        )

    def _admit_one(self, key: str, value: str) -> str:
        if value in ("", OTHER_SEGMENT):
            return value
        allowed = self._allowed.get(key)
        if allowed is not None:
            if value in allowed:
                return value
        else:
            kept = self._kept[key]
            if value in kept:
                return value
            if len(kept) < self.max_values:
                kept.add(value)
                return value
        self.dropped[key] += 1
        return OTHER_SEGMENT
