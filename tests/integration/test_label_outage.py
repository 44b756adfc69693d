"""Memory under a label outage: pending predictions stop at ``join.max_pending``.

Outcomes stop arriving; predictions keep coming. Nothing expires then (the
join's clock is the older of the two topics' newest timestamps, and the
outcomes topic is silent), so only ``join.max_pending`` bounds the pending
predictions, per partition, by evicting the oldest. This test runs
``driftstream run`` as a child process, feeds it 3 x (max_pending x
partitions) predictions and no outcomes, and checks the pending gauge, the
eviction counter and the child's memory (``VmRSS`` and the peak ``VmHWM`` from
``/proc/<pid>/status``); then 3 x more, to show that memory stops growing.

It uses the default ``state.store: kafka``, checkpointing every second: that is
the store a deployment runs, and during an outage each checkpoint serialises
every pending entry, so its transient memory belongs in the bound a memory
limit must cover (``state.store: none`` would understate it). librdkafka's
prefetch queue is capped at 4 MiB (``queued.max.messages.kbytes``, 64 MiB by
default): it is bounded by its own setting, not by ``max_pending``, and
without the cap its fill level, which depends on how far the consumer trails
the producer, adds up to 64 MiB of noise to the measurement (30 MiB more at
the peak in our runs).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from streamer.localkafka import create_topics
from tests.integration.test_state import RunProcess
from tests.scrape import Scrape, wait_for

pytestmark = pytest.mark.integration

MAX_PENDING = 50_000
PARTITIONS = 2
HELD = MAX_PENDING * PARTITIONS
BATCH = 3 * HELD
MIB = 1 << 20
PREFETCH_KIB = 4096

BYTES_PER_ENTRY = 2048
"""Generous peak RSS per pending prediction over the idle process.

Measured with this test's settings on 2 cores, CPython 3.11, with the join's
entries in native memory (about 0.1 kB each, ``benchmarks/RESULTS.md``): 0.9 kB
at 10^5 pending entries over the idle process, 1.0 kB at the peak; most of it
is the checkpoints of the whole join (every second here: Python rows, then
JSON and zlib), the consumer's batches and memory the allocators keep (it was
1.3 to 1.4 kB when the entries were Python objects). The bound is twice the
measurement; an unbounded join would hold 3 x HELD entries and their
checkpoints after the first batch.
"""

GROWTH_MARGIN = 24 * MIB
"""How much the peak may rise during the second batch (measured: up to 14 MiB
with Python entries, 5 MiB with native ones).

A join that kept the second batch's entries would add their native memory, 3 x
HELD x about 100 bytes (29 MiB), and their rows in every checkpoint, several
times that at the peak.
"""


def test_pending_predictions_and_memory_stop_at_max_pending(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    topics = (f"outage-pred-{suffix}", f"outage-out-{suffix}")
    create_topics(kafka_bootstrap, dict.fromkeys(topics, PARTITIONS))
    config_path = tmp_path / "driftstream.yaml"
    config_path.write_text(yaml.safe_dump(_settings(kafka_bootstrap, topics)))
    run = RunProcess(config_path, tmp_path / "run.log")
    try:
        run.start()
        assert run.process is not None
        pid = run.process.pid
        wait_for(
            run.url,
            lambda p: p.value("driftstream_assigned_partitions") == 2 * PARTITIONS,
        )
        baseline = _idle_rss(pid)

        _produce(kafka_bootstrap, topics[0], suffix, range(BATCH))
        page = _consumed_and_checkpointed(run.url, BATCH)
        _assert_capped(page, evicted=BATCH - HELD)
        rss_1, peak_1 = _memory(pid)
        print(
            f"\nbaseline {baseline / MIB:.1f} MiB; after {BATCH} predictions: "
            f"rss {rss_1 / MIB:.1f} MiB, peak {peak_1 / MIB:.1f} MiB, "
            f"{(rss_1 - baseline) / HELD:.0f} B per pending entry "
            f"({(peak_1 - baseline) / HELD:.0f} B at the peak)"
        )
        bound = HELD * BYTES_PER_ENTRY
        assert peak_1 - baseline <= bound, (
            f"peak {peak_1 / MIB:.1f} MiB is more than {bound / MIB:.1f} MiB "
            f"over the idle {baseline / MIB:.1f} MiB for {HELD} pending entries"
        )

        _produce(kafka_bootstrap, topics[0], suffix, range(BATCH, 2 * BATCH))
        page = _consumed_and_checkpointed(run.url, 2 * BATCH)
        _assert_capped(page, evicted=2 * BATCH - HELD)
        rss_2, peak_2 = _memory(pid)
        print(
            f"after {2 * BATCH}: rss {rss_2 / MIB:.1f} MiB, peak "
            f"{peak_2 / MIB:.1f} MiB; {time.monotonic() - started:.1f} s"
        )
        assert peak_2 - peak_1 <= GROWTH_MARGIN, (
            f"peak grew from {peak_1 / MIB:.1f} to {peak_2 / MIB:.1f} MiB while "
            f"the pending entries stayed at {HELD}"
        )
        assert run.terminate() == 0
    finally:
        if run.process is not None and run.process.poll() is None:
            run.process.kill()
            run.process.wait(10)


def _settings(bootstrap: str, topics: tuple[str, str]) -> dict[str, object]:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"outage-{uuid.uuid4().hex[:8]}",
            "predictions_topic": topics[0],
            "outcomes_topic": topics[1],
            "statistics_interval_ms": 500,
            "extra": {"queued.max.messages.kbytes": PREFETCH_KIB},
        },
        "join": {"max_pending": MAX_PENDING},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "state": {"store": "kafka", "checkpoint_interval_s": 1},
    }


def _produce(bootstrap: str, topic: str, prefix: str, indices: range) -> None:
    """Valid binary predictions stamped now, spread evenly over the partitions."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4",
         "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    now_ms = time.time_ns() // 1_000_000
    for index in indices:
        event_id = f"{prefix}-{index}"
        value = orjson.dumps(
            {"event_id": event_id, "model": "fraud", "model_version": "7",
             "timestamp": now_ms, "probability": (index % 997 + 1) / 999}
        )  # fmt: skip
        while True:
            try:
                producer.produce(
                    topic, value, event_id.encode(), partition=index % PARTITIONS
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _consumed_and_checkpointed(url: str, predictions: int) -> Scrape:
    """Wait until ``predictions`` are counted and a checkpoint has run since."""
    wait_for(
        url,
        lambda p: p.total("driftstream_predictions_total") >= predictions,
        timeout_s=120,
    )
    consumed_at = time.time()

    def checkpointed_since(page: Scrape) -> bool:
        # The consumer thread checkpoints between batches, so a checkpoint that
        # ended after the last batch was counted holds the whole join.
        ages = page.samples.get("driftstream_checkpoint_age_seconds", [])
        return bool(ages) and ages[0][1] < time.time() - consumed_at - 0.5

    return wait_for(url, checkpointed_since, timeout_s=30)


def _assert_capped(page: Scrape, *, evicted: int) -> None:
    sent = evicted + HELD
    assert page.total("driftstream_predictions_total") == sent
    assert page.value("driftstream_pending_entries", side="prediction") == HELD
    assert page.value("driftstream_pending_entries", side="outcome") == 0
    assert page.total("driftstream_evictions_total", side="prediction") == evicted
    assert page.total("driftstream_expired_total") == 0
    assert page.total("driftstream_invalid_messages_total") == 0


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            kib, unit = value.split()
            assert unit == "kB"
            return int(kib) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid``, in bytes."""
    return _status_bytes(pid, "VmRSS"), _status_bytes(pid, "VmHWM")


def _idle_rss(pid: int) -> int:
    """RSS once the idle process stops changing (a 1 s window within 64 KiB)."""
    deadline = time.monotonic() + 15
    previous = _status_bytes(pid, "VmRSS")
    while True:
        time.sleep(1)
        current = _status_bytes(pid, "VmRSS")
        if abs(current - previous) <= 64 * 1024 or time.monotonic() > deadline:
            return current
        previous = current
