"""What a measurement subprocess reports about itself: CPU, memory, its result line.

Standard library only, so both the driftstream venv (``throughput_workers.py``)
and the peer's venv (``quix_peer.py``) import it. A worker prints exactly one
line starting with :data:`RESULT_PREFIX` followed by a JSON object;
``throughput.py`` reads that line and ignores the rest of the output.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

RESULT_PREFIX = "RESULT "
STALL_TIMEOUT_S = 120.0
"""A measurement that sees no message for this long has lost some: it fails."""


def cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads (librdkafka's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """The current resident set size, from ``/proc/self/status`` (``VmRSS``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (not Linux?)")


@dataclass
class Interval:
    """Wall and CPU time from the first message handled to the last one.

    The clock starts when the first non-empty batch is in hand, so joining
    the consumer group and the first fetch are left out (they are reported
    separately as ``startup_s``).
    """

    created_s: float = field(default_factory=time.perf_counter)
    first_s: float | None = None
    last_s: float | None = None
    cpu_first_s: float = 0.0
    cpu_last_s: float = 0.0

    def begin(self) -> None:
        if self.first_s is None:
            self.first_s = time.perf_counter()
            self.cpu_first_s = cpu_seconds()

    def end(self) -> None:
        self.last_s = time.perf_counter()
        self.cpu_last_s = cpu_seconds()

    def report(self, messages: int, **extra: Any) -> dict[str, Any]:
        if self.first_s is None or self.last_s is None:
            raise RuntimeError("the interval was never started and ended")
        elapsed_s = self.last_s - self.first_s
        return {
            "messages": messages,
            "elapsed_s": elapsed_s,
            "messages_per_s": messages / elapsed_s if elapsed_s > 0 else 0.0,
            "cpu_s": self.cpu_last_s - self.cpu_first_s,
            "startup_s": self.first_s - self.created_s,
            "peak_rss_bytes": peak_rss_bytes(),
            **extra,
        }


def emit(result: dict[str, Any]) -> None:
    """Print the result line the orchestrator reads."""
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)
    sys.stdout.flush()
