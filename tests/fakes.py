"""A stand-in for confluent_kafka.Message, for driving the pipeline without a broker."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

_OFFSETS = itertools.count()
DEFAULT_TIMESTAMP_MS = 1_764_583_200_000


@dataclass
class Message:
    """The part of confluent_kafka.Message the pipeline reads.

    Offsets increase across all instances unless given, as they do within a
    real partition.
    """

    topic_name: str
    partition_number: int
    payload: bytes | None
    key_bytes: bytes | None = None
    offset_number: int = field(default_factory=lambda: next(_OFFSETS))
    timestamp_ms: int = DEFAULT_TIMESTAMP_MS

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_number

    def offset(self) -> int:
        return self.offset_number

    def key(self) -> bytes | None:
        return self.key_bytes

    def value(self) -> bytes | None:
        return self.payload

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)
