"""Checkpoint and restore time and size for one partition with 10^6 pending predictions.

Run: ``.venv/bin/python benchmarks/checkpoint.py [--pending N]``

It fills one partition's join with N pending binary predictions (the shape
the generator sends), then measures, in one run:

- encode (state -> bytes) and decode (bytes -> state), in process;
- save and load through the directory store, and through the Kafka store on
  the local Apache Kafka broker (chunked compacted topic);
- the reference: the same rows as a flat list through orjson + zlib, the
  floor any JSON-based checkpoint has to pay.

It prints a table and the ratios against the reference; numbers go into
benchmarks/RESULTS.md by hand, with the machine and the date.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import zlib
from pathlib import Path

import orjson

from streamer.checkpoint import DirectoryStore, KafkaStore
from streamer.config import Config
from streamer.events import ModelKey, Prediction
from streamer.localkafka import LocalKafka
from streamer.state import JoinOptions, PartitionState, decode, encode
from streamer.windows import parse_window

T0 = 1_764_583_200_000


def _state(pending: int) -> PartitionState:
    options = JoinOptions(
        prediction_ttl_ms=7 * 86_400_000, outcome_ttl_ms=3_600_000, max_pending=pending
    )
    join = options.new_join()
    model = ModelKey("fraud", "7")
    for index in range(pending):
        prediction = Prediction(f"fraud-{index}", model, T0 + index, 0.123456789)
        join.add_prediction(prediction, now_ms=T0)
    return PartitionState(join=join, next_offsets={"prediction": pending})


def _timed(label: str, action, rows: list[tuple[str, float, int]], size: int = 0):
    started = time.perf_counter()
    result = action()
    rows.append((label, time.perf_counter() - started, size))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=1_000_000)
    args = parser.parse_args()
    specs = tuple(parse_window(text) for text in ("5m", "1h", "24h"))
    options = JoinOptions(7 * 86_400_000, 3_600_000, args.pending)
    rows: list[tuple[str, float, int]] = []

    state = _timed(
        "fill join (reference: not a checkpoint)", lambda: _state(args.pending), rows
    )
    flat = [
        [f"fraud-{i}", "fraud", "7", T0 + i, 0.123456789] for i in range(args.pending)
    ]
    reference = _timed(
        "reference: orjson+zlib of the flat rows",
        lambda: zlib.compress(orjson.dumps(flat), level=1),
        rows,
    )
    rows[-1] = (rows[-1][0], rows[-1][1], len(reference))
    payload = _timed("encode", lambda: encode(state), rows)
    rows[-1] = (rows[-1][0], rows[-1][1], len(payload))
    _timed("decode", lambda: decode(payload, options=options, specs=specs), rows)

    with tempfile.TemporaryDirectory() as directory:
        store = DirectoryStore(Path(directory))
        store.prepare(1)
        _timed(
            "directory store: save", lambda: store.save(0, payload), rows, len(payload)
        )
        _timed("directory store: load", lambda: store.load(0), rows, len(payload))

    with LocalKafka() as kafka:
        config = Config.model_validate(
            {
                "kafka": {
                    "bootstrap_servers": kafka.bootstrap_servers,
                    "group_id": "bench",
                }
            }
        )
        kafka_store = KafkaStore(config)
        kafka_store.prepare(1)
        _timed(
            "kafka store: save",
            lambda: kafka_store.save(0, payload),
            rows,
            len(payload),
        )
        loaded = _timed(
            "kafka store: load", lambda: kafka_store.load(0), rows, len(payload)
        )
        assert loaded == payload
        kafka_store.close()

    print(
        f"pending predictions: {args.pending:,}; python {platform.python_version()}; "
        f"cores {os.cpu_count()}"
    )
    print(f"{'step':<42} {'seconds':>9} {'bytes':>12}")
    for label, seconds, size in rows:
        print(f"{label:<42} {seconds:>9.3f} {size or '':>12}")
    timings = {label: seconds for label, seconds, _ in rows}
    floor = timings["reference: orjson+zlib of the flat rows"]
    print(f"\nencode / reference: {timings['encode'] / floor:.2f}")
    print(
        f"checkpoint to Kafka (encode + save) / reference: "
        f"{(timings['encode'] + timings['kafka store: save']) / floor:.2f}"
    )
    print(
        f"restore from Kafka (load + decode) / reference: "
        f"{(timings['kafka store: load'] + timings['decode']) / floor:.2f}"
    )
    per_entry = len(payload) / args.pending
    print(f"bytes per pending prediction in the checkpoint: {per_entry:.1f}")


if __name__ == "__main__":
    main()
