"""A log that says each kind of event at most once per interval, with a count."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs the first event of each key per interval and counts the rest.

    For the hot loop and for error callbacks that can fire many times a
    second: the log stays readable and no event goes unmentioned.
    """

    def __init__(self, logger: logging.Logger, what: str, interval_s: float) -> None:
        self.logger = logger
        self.what = what
        self.interval_s = interval_s
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``key`` was logged within the interval."""
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_logged[key] = now
        suppressed = self._suppressed.pop(key, 0)
        self.logger.warning(
            f"{self.what} {message} similar_since_last_log=%d", *args, suppressed
        )


class RateLimitFilter(logging.Filter):
    """Lets through one record per message shape per interval.

    The shape is the message with its digits removed, so librdkafka's
    "Connect to ipv4#127.0.0.1:9092 failed ... (after 0ms)" lines, which differ
    only in numbers, share one.
    """

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last_passed: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        shape = "".join(c for c in record.getMessage() if not c.isdigit())
        now = time.monotonic()
        last = self._last_passed.get(shape)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._last_passed) > 1000:
            self._last_passed.clear()
        self._last_passed[shape] = now
        return True


LIBRDKAFKA_LOGGER = logging.getLogger("streamer.librdkafka")
"""Where every librdkafka client of driftstream logs, at most once per shape."""
LIBRDKAFKA_LOGGER.addFilter(RateLimitFilter(30.0))
