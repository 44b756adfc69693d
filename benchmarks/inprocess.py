"""The pipeline alone, in process: messages made in memory, no broker.

A quick profile target between full benchmark runs (``throughput.py`` is the
measurement of record): ``.venv/bin/python benchmarks/inprocess.py`` prints
the pipeline's messages per second over the same ten-model stream as the data
set, joined end to end, and the same loop with nothing but ``orjson.loads``
on each value as the reference measured in the same run.

    .venv/bin/python benchmarks/inprocess.py --events 200000
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput_data import data_set_messages
from throughput_workers import _Message

from streamer.config import Config
from streamer.pipeline import Pipeline

PARTITIONS = 8


def messages(events: int) -> list[_Message]:
    offsets: dict[tuple[str, int], int] = {}
    made: list[_Message] = []
    for generated in data_set_messages(events, seed=1):
        topic = generated.topic_kind
        partition = zlib.crc32(generated.key) % PARTITIONS
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        made.append(
            _Message(
                topic,
                partition,
                offset,
                generated.key,
                bytes(memoryview(generated.value)),
                generated.timestamp_ms,
            )
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    made = messages(args.events)
    batches = [
        made[start : start + args.batch_size]
        for start in range(0, len(made), args.batch_size)
    ]

    started = time.perf_counter()
    for batch in batches:
        for message in batch:
            orjson.loads(message.value())
    decode_s = time.perf_counter() - started

    config = Config.model_validate(
        {
            "kafka": {"predictions_topic": "predictions", "outcomes_topic": "outcomes"},
            "windows": {"clock": "event"},
            "state": {"store": "none"},
        }
    )
    pipeline = Pipeline(config)
    started = time.perf_counter()
    for batch in batches:
        pipeline.process(batch)
    pipeline_s = time.perf_counter() - started
    joined = sum(pipeline.counters.joined.values())
    if joined != args.events:
        raise SystemExit(f"joined {joined} of {args.events} events")
    print(
        f"messages {len(made)}: loop + orjson.loads {len(made) / decode_s:,.0f} msg/s, "
        f"pipeline {len(made) / pipeline_s:,.0f} msg/s "
        f"({pipeline_s / len(made) * 1e6:.2f} us/msg, "
        f"{decode_s / pipeline_s:.1%} of the decode loop)"
    )


if __name__ == "__main__":
    main()
