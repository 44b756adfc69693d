"""Types of the compiled core (native/src/lib.rs); see streamer/join.py."""

from collections.abc import Callable
from typing import Any

from streamer.events import ModelKey

INDEX_SLACK: int
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
    def numbered(self) -> tuple[int, int, int]: ...
    def add_prediction(
        self,
        event_id: str,
        model: ModelKey,
        timestamp_ms: int,
        probability: float | None,
        probabilities: tuple[float, ...] | None,
        classes: tuple[str, ...] | None,
        segment: tuple[str, ...],
        now_ms: int,
    ) -> Any: ...
    def add_outcome(
        self, event_id: str, label: object, timestamp_ms: int, now_ms: int
    ) -> Any: ...
    def expire(self, now_ms: int) -> list[tuple[Any, str, ModelKey | None]]: ...
    def pending_by_model(self) -> dict[ModelKey, int]: ...
    def clock_ms(self) -> int | None: ...
    def prediction_rows(
        self,
    ) -> list[
        tuple[
            str,
            ModelKey,
            int,
            float | None,
            tuple[float, ...] | None,
            tuple[str, ...] | None,
            tuple[str, ...],
        ]
    ]: ...
    def outcome_rows(self) -> list[tuple[str, Any, int]]: ...
    def guard_rows(self) -> list[tuple[str, int]]: ...
    def expired_rows(self) -> list[tuple[Any, str, ModelKey | None]]: ...
    def is_pending(self, event_id: str) -> bool: ...
    def guard_contains(self, event_id: str) -> bool: ...
    def guard_newest_ms(self) -> int | None: ...
    def set_clock(self, clock_ms: int | None) -> None: ...
    def restore_prediction(
        self,
        event_id: str,
        model: ModelKey,
        timestamp_ms: int,
        probability: float | None,
        probabilities: tuple[float, ...] | None,
        classes: tuple[str, ...] | None,
        segment: tuple[str, ...],
    ) -> None: ...
    def restore_outcome(
        self, event_id: str, label: object, timestamp_ms: int
    ) -> None: ...
    def restore_guard(self, event_id: str, joined_at_ms: int) -> None: ...
    def restore_expired(
        self, outcome: bool, event_id: str, model: ModelKey | None
    ) -> None: ...
    def finish_restore(self) -> None: ...
    def heap_bytes(self) -> int: ...

class Router:
    admitted_models: int
    def __init__(
        self,
        fields: tuple[str, str, str, str, str, str, str, str],
        sum_tolerance: float,
        segment_keys: list[str],
        predictions_topic: str,
        segment_admit: Callable[[tuple[str, ...]], tuple[str, ...]] | None,
        labels: dict[str, tuple[str | None, str | None]],
        model_key_type: type[ModelKey],
    ) -> None: ...
    def admit(self, model: ModelKey) -> None: ...
    def begin(self, latest_valid_ms: int) -> None: ...
    def process(
        self, messages: list[Any], start: int, partitions: dict[int, Any]
    ) -> int: ...
    def take(self) -> dict[str, Any]: ...
    def note_offset(self, message: Any) -> None: ...
    def take_offsets(self) -> list[tuple[str, int, int]]: ...
    def decode_prediction(
        self, value: bytes | None, key: bytes | None, kafka_timestamp_ms: int | None
    ) -> (
        tuple[
            str,
            str,
            str,
            int,
            float | None,
            tuple[str, ...] | None,
            tuple[float, ...] | None,
            tuple[str, ...],
        ]
        | None
    ): ...
    def decode_outcome(
        self, value: bytes | None, key: bytes | None, kafka_timestamp_ms: int | None
    ) -> tuple[str, bool | int | str, int] | None: ...

def rings_add(
    rings: list[tuple[Any, ...]], timestamps_ms: Any, loss: Any, extra: Any
) -> tuple[list[tuple[int, int | None]], int, int]: ...
def rings_add_binned(
    rings: list[tuple[Any, ...]],
    timestamps_ms: Any,
    loss: Any,
    base: list[Any],
    score: Any,
    binned: list[Any],
    edges: Any,
) -> tuple[list[tuple[int, int | None]], int, int]: ...
def cusum_update(
    statistic: float, increments: Any, threshold: float
) -> tuple[float, int, int, int]: ...
def quick_read_agrees(value: bytes, names: list[str]) -> bool | None: ...
