"""The optional dead-letter topic: a copy of every invalid message, with why.

Each copy keeps the original key, value and timestamp, and carries headers
``driftstream.source.topic``, ``driftstream.source.partition``,
``driftstream.source.offset`` and ``driftstream.reason``. Sending never
blocks or stops consumption: a full queue or a failed delivery is counted in
``driftstream_dead_letter_failures_total`` and logged at a bounded rate.

Delivery is at least once with respect to restarts: invalid messages after
the last checkpoint are consumed again after a crash, and copied again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamer.pipeline import MessageLike
from streamer.ratelimit import LIBRDKAFKA_LOGGER, RateLimitedLog

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_MS = 30_000
"""How long librdkafka tries one copy (an unknown topic fails after this)."""


class DeadLetters:
    """Copies invalid messages to ``topic``; counts what arrived and what not."""

    def __init__(self, topic: str, client_settings: dict[str, Any]) -> None:
        self.topic = topic
        self.sent = 0
        self.failures = 0
        self._log = RateLimitedLog(log, "dead letter not delivered", 30.0)
        self._producer = Producer(
            {
                **client_settings,
                "logger": LIBRDKAFKA_LOGGER,
                "compression.type": "lz4",
                "linger.ms": 20,
                "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            }
        )

    def send(self, invalid: Sequence[tuple[MessageLike, str]]) -> None:
        for message, reason in invalid:
            self._send_one(message, reason)

    def poll(self) -> None:
        """Serve delivery reports; call it once per consume loop."""
        self._producer.poll(0)

    def _send_one(self, message: MessageLike, reason: str) -> None:
        kind, timestamp_ms = message.timestamp()
        headers: list[tuple[str, str | bytes | None]] = [
            ("driftstream.source.topic", (message.topic() or "").encode()),
            ("driftstream.source.partition", str(message.partition()).encode()),
            ("driftstream.source.offset", str(message.offset()).encode()),
            ("driftstream.reason", reason.encode()),
        ]
        try:
            self._producer.produce(
                self.topic,
                key=message.key(),
                value=message.value(),
                headers=headers,
                timestamp=timestamp_ms if kind != 0 and timestamp_ms >= 0 else 0,
                on_delivery=self._on_delivery,
            )
        except BufferError:
            self._fail("local queue full")
        except Exception as exc:
            self._fail(str(exc))

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.sent += 1
        else:
            self._fail(error.str())

    def _fail(self, reason: str) -> None:
        self.failures += 1
        self._log.note("delivery", "topic=%s error=%s", self.topic, reason)

    def close(self, *, timeout_s: float) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            self.failures += left
            log.warning("dead letters not delivered at shutdown count=%d", left)
