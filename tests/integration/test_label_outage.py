"""Memory under a label outage: pending predictions stop at join.max_pending."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from streamer.localkafka import create_topics
from tests.integration.test_state import RunProcess
from tests.scrape import Scrape, scrape, wait_for

pytestmark = pytest.mark.integration

MAX_PENDING = int(os.environ.get("X_MAX_PENDING", 50_000))
PARTITIONS = 2
HELD = MAX_PENDING * PARTITIONS
BATCH = 3 * HELD
MIB = 1 << 20


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _produce(bootstrap: str, topic: str, run: str, indices: range) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4",
         "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    now_ms = time.time_ns() // 1_000_000
    for index in indices:
        event_id = f"{run}-{index}"
        value = orjson.dumps(
            {"event_id": event_id, "model": "fraud", "model_version": "7",
             "timestamp": now_ms, "probability": (index % 997) / 997}
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


def test_label_outage(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = (f"outage-pred-{suffix}", f"outage-out-{suffix}")
    create_topics(kafka_bootstrap, dict.fromkeys(topics, PARTITIONS))
    settings = {
        "kafka": {
            "bootstrap_servers": kafka_bootstrap,
            "group_id": f"outage-{suffix}",
            "predictions_topic": topics[0],
            "outcomes_topic": topics[1],
            "statistics_interval_ms": 500,
            "extra": yaml.safe_load(os.environ.get("X_EXTRA", "{}")),
        },
        "join": {"max_pending": MAX_PENDING},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "state": {
            "store": os.environ.get("X_STORE", "none"),
            "checkpoint_interval_s": float(os.environ.get("X_CKPT", 30)),
        },
    }
    config_path = tmp_path / "driftstream.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    run = RunProcess(config_path, tmp_path / "run.log")
    started = time.monotonic()
    try:
        run.start()
        assert run.process is not None
        pid = run.process.pid
        wait_for(
            run.url,
            lambda p: p.value("driftstream_assigned_partitions") == 2 * PARTITIONS,
        )
        time.sleep(3)
        baseline = _status_kib(pid, "VmRSS") * 1024
        print(f"baseline rss={baseline / MIB:.1f} hwm={_status_kib(pid, 'VmHWM') / 1024:.1f}")

        t = time.monotonic()
        _produce(kafka_bootstrap, topics[0], suffix, range(BATCH))
        print(f"produce {time.monotonic() - t:.1f}s")
        page = _wait_predictions(run.url, BATCH)
        print(f"consumed {time.monotonic() - t:.1f}s")
        rss1 = _status_kib(pid, "VmRSS") * 1024
        hwm1 = _status_kib(pid, "VmHWM") * 1024
        pending = page.value("driftstream_pending_entries", side="prediction")
        evicted = page.total("driftstream_evictions_total", side="prediction")
        print(f"after 1: rss={rss1 / MIB:.1f} hwm={hwm1 / MIB:.1f} pending={pending} evicted={evicted}")
        print(f"bytes/entry rss={(rss1 - baseline) / HELD:.0f} hwm={(hwm1 - baseline) / HELD:.0f}")
        for _ in range(5):
            time.sleep(2)
            print(f"  rss={_status_kib(pid, 'VmRSS') / 1024:.1f} hwm={_status_kib(pid, 'VmHWM') / 1024:.1f}")

        t = time.monotonic()
        _produce(kafka_bootstrap, topics[0], suffix, range(BATCH, 2 * BATCH))
        page = _wait_predictions(run.url, 2 * BATCH)
        print(f"batch2 {time.monotonic() - t:.1f}s")
        rss2 = _status_kib(pid, "VmRSS") * 1024
        hwm2 = _status_kib(pid, "VmHWM") * 1024
        pending = page.value("driftstream_pending_entries", side="prediction")
        evicted = page.total("driftstream_evictions_total", side="prediction")
        print(f"after 2: rss={rss2 / MIB:.1f} hwm={hwm2 / MIB:.1f} pending={pending} evicted={evicted}")
        print(f"total {time.monotonic() - started:.1f}s")
    finally:
        if run.process is not None and run.process.poll() is None:
            run.terminate()


def _wait_predictions(url: str, count: int) -> Scrape:
    return wait_for(
        url,
        lambda p: p.total("driftstream_predictions_total") >= count,
        timeout_s=120,
    )
