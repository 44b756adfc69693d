"""Types of the compiled core (native/src/lib.rs); see streamer/join.py."""

from typing import Any

INDEX_SLACK: int
NONE: int
PREDICTION_SLOT_BYTES: int

class JoinCore:
    pending_predictions: int
    pending_outcomes: int
    guard_size: int
    def __init__(
        self,
        prediction_ttl_ms: int,
        outcome_ttl_ms: int,
        max_pending: int,
        duplicate_guard_ttl_ms: int,
        index_slack: int = ...,
    ) -> None: ...
    def add_prediction(
        self,
        event_id: str,
        model: int,
        timestamp_ms: int,
        probability: float | None,
        probabilities: tuple[float, ...] | None,
        classes: int,
        segment: int,
        now_ms: int,
    ) -> Any: ...
    def add_outcome(
        self, event_id: str, label: object, timestamp_ms: int, now_ms: int
    ) -> Any: ...
    def expire(self, now_ms: int) -> list[tuple[Any, str, int | None]]: ...
    def pending_by_model(self) -> dict[int, int]: ...
    def clock_ms(self) -> int | None: ...
    def prediction_rows(
        self,
    ) -> list[
        tuple[str, int, int, float | None, tuple[float, ...] | None, int | None, int]
    ]: ...
    def outcome_rows(self) -> list[tuple[str, Any, int]]: ...
    def guard_rows(self) -> list[tuple[str, int]]: ...
    def expired_rows(self) -> list[tuple[Any, str, int | None]]: ...
    def is_pending(self, event_id: str) -> bool: ...
    def guard_contains(self, event_id: str) -> bool: ...
    def guard_newest_ms(self) -> int | None: ...
    def set_clock(self, clock_ms: int | None) -> None: ...
    def restore_prediction(
        self,
        event_id: str,
        model: int,
        timestamp_ms: int,
        probability: float | None,
        probabilities: tuple[float, ...] | None,
        classes: int,
        segment: int,
    ) -> None: ...
    def restore_outcome(
        self, event_id: str, label: object, timestamp_ms: int
    ) -> None: ...
    def restore_guard(self, event_id: str, joined_at_ms: int) -> None: ...
    def restore_expired(
        self, outcome: bool, event_id: str, model: int | None
    ) -> None: ...
    def finish_restore(self) -> None: ...
    def numbers_in_use(self) -> tuple[set[int], set[int], set[int]]: ...
    def renumber(
        self,
        models: dict[int, int],
        classes: dict[int, int],
        segments: dict[int, int],
    ) -> None: ...
    def heap_bytes(self) -> int: ...
