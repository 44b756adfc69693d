"""The measurements of ``throughput.py`` on driftstream's side, one per subprocess.

Run by ``throughput.py``, never by hand (but ``--help`` works). Each command
prints one result line (see ``probe.py``) and exits non-zero if what it saw
is not what the data set holds:

- ``bare``: a ``consume(num_messages=...)`` loop over both topics that only
  counts: the limit of the client on this machine;
- ``decode``: the same loop plus ``orjson.loads`` of every value;
- ``pipeline``: driftstream's own consumer (``KafkaSource``) driving
  ``Pipeline.process``, windows in event time, checkpoints off; at the end
  the joined count must equal the labelled events;
- ``pending``: memory of the join: 10^6 predictions and no outcomes, fed to a
  ``Pipeline`` straight from the generator (no Kafka), RSS before and after.

The consumers use ``streamer.consumer.consumer_settings`` (range assignor,
``fetch.queue.backoff.ms`` 10, ...) with a fresh group id, from the earliest
offset, and stop once they have seen every message.
"""

from __future__ import annotations

import argparse
import gc
import logging
import threading
import time
import tracemalloc
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer
from probe import STALL_TIMEOUT_S, Interval, emit, peak_rss_bytes, rss_bytes
from throughput_data import MODELS, generator_config, start_ms_for

from streamer.checkpoint import NoStore
from streamer.config import Config
from streamer.consumer import KafkaSource, consumer_settings
from streamer.generate import GeneratorConfig, SyntheticStream
from streamer.metrics import ConsumerHealth
from streamer.pipeline import MessageLike, Pipeline, WindowRow


class MeasurementError(RuntimeError):
    """The measurement did not see the data set it was promised."""


def _config(args: argparse.Namespace, **sections: Any) -> Config:
    return Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": args.bootstrap_servers,
                "group_id": args.group_id,
                "predictions_topic": args.predictions_topic,
                "outcomes_topic": args.outcomes_topic,
                "consume_batch_size": args.batch_size,
            },
            "windows": {"clock": "event"},
            "state": {"store": "none"},
            **sections,
        }
    )


# -- (a) the limit -------------------------------------------------------------


def consume_loop(args: argparse.Namespace, *, decode: bool) -> dict[str, Any]:
    """Count (and optionally decode) every message of both topics."""
    kafka = _config(args).kafka
    consumer = Consumer(consumer_settings(kafka, auto_commit=True))
    interval = Interval()
    consumer.subscribe([kafka.predictions_topic, kafka.outcomes_topic])
    seen = errors = 0
    last_progress_s = time.monotonic()
    try:
        while seen < args.messages:
            batch = consumer.consume(num_messages=args.batch_size, timeout=0.5)
            if not batch:
                if time.monotonic() - last_progress_s > STALL_TIMEOUT_S:
                    raise MeasurementError(_stalled(seen, args.messages))
                continue
            interval.begin()
            last_progress_s = time.monotonic()
            if decode:
                for message in batch:
                    value = message.value()
                    if value is None:
                        errors += 1
                        continue
                    orjson.loads(value)
            seen += len(batch)
        interval.end()
    finally:
        consumer.close()
    if seen != args.messages or errors:
        raise MeasurementError(
            f"saw {seen} messages ({errors} without a value), expected {args.messages}"
        )
    return interval.report(seen)


def _stalled(seen: int, expected: int) -> str:
    return (
        f"no message for {STALL_TIMEOUT_S:g} s after {seen} of {expected}: the "
        "topics hold fewer messages than the data set, or the broker stopped"
    )


# -- (b) driftstream -----------------------------------------------------------


class _MeasuredPipeline(Pipeline):
    """A Pipeline that times itself and stops its source after the last message."""

    def __init__(self, config: Config, *, expected: int, stop: threading.Event):
        super().__init__(config)
        self.expected = expected
        self.seen = 0
        self.stop_event = stop
        self.interval = Interval()
        self.last_progress_s = time.monotonic()
        self.final_rows: list[WindowRow] = []
        self.final_guard = 0

    def process(self, messages: Sequence[MessageLike]) -> list[tuple[MessageLike, str]]:
        self.interval.begin()
        invalid = super().process(messages)
        self.seen += len(messages)
        self.last_progress_s = time.monotonic()
        if self.seen >= self.expected:
            self.interval.end()
            # Closing the consumer revokes the partitions, and their state.
            self.final_rows = self.window_rows()
            self.final_guard = sum(
                state.join.duplicate_guard_size for state in self.partitions.values()
            )
            self.stop_event.set()
        return invalid


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """driftstream's consumer and pipeline over the whole data set."""
    config = _config(args)
    stop = threading.Event()
    pipeline = _MeasuredPipeline(config, expected=args.messages, stop=stop)
    source = KafkaSource(config, pipeline, ConsumerHealth(), stop, NoStore())
    stalled = threading.Event()
    watchdog = threading.Thread(
        target=_watch, args=(pipeline, stop, stalled), daemon=True
    )
    watchdog.start()
    source.run()
    if stalled.is_set():
        raise MeasurementError(_stalled(pipeline.seen, args.messages))
    return pipeline.interval.report(pipeline.seen, **_check_pipeline(pipeline, args))


def _watch(
    pipeline: _MeasuredPipeline, stop: threading.Event, stalled: threading.Event
) -> None:
    while not stop.wait(1.0):
        if time.monotonic() - pipeline.last_progress_s > STALL_TIMEOUT_S:
            stalled.set()
            stop.set()


def _check_pipeline(pipeline: _MeasuredPipeline, args: argparse.Namespace) -> Any:
    """What the pipeline made of the data set; raises if it lost or added any."""
    counters = pipeline.counters
    joined = sum(counters.joined.values())
    predictions = sum(counters.predictions.values())
    problems = {
        "invalid": dict(counters.invalid),
        "duplicates": dict(counters.duplicates),
        "expired": {str(key): count for key, count in counters.expired.items()},
        "evicted": {str(key): count for key, count in counters.evicted.items()},
        "redelivered": counters.redelivered,
    }
    by_model: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    windowed = 0
    for row in pipeline.final_rows:
        if row.window == "24h":
            windowed += row.stats.events
            by_model[row.model.model][0] += row.stats.events
            by_model[row.model.model][1] += row.stats.loss_sum
    checks = {
        "joined": joined,
        "predictions": predictions,
        "outcomes": counters.outcomes,
        "window_24h_events": windowed,
        "late": dict(counters.late),
        "duplicate_guard_ids": pipeline.final_guard,
        "mean_log_loss_by_model": {
            model: loss_sum / events for model, (events, loss_sum) in by_model.items()
        },
        **problems,
    }
    if (
        pipeline.seen != args.messages
        or joined != args.labelled
        or any(value for value in problems.values())
    ):
        raise MeasurementError(
            f"the pipeline saw {pipeline.seen} of {args.messages} messages and "
            f"joined {joined} of {args.labelled} labelled events: {checks}"
        )
    return checks


# -- memory per pending prediction ---------------------------------------------


class _Message:
    """A ``confluent_kafka.Message`` stand-in: what ``Pipeline.process`` reads."""

    __slots__ = ("_key", "_offset", "_partition", "_timestamp_ms", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._timestamp_ms = timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)


def _prediction_batches(
    args: argparse.Namespace, topic: str
) -> Iterator[list[_Message]]:
    models = [
        spec
        for spec in MODELS
        if args.kind == "all" or spec.is_multiclass == (args.kind == "multiclass")
    ]
    config = GeneratorConfig.model_validate(
        {
            **generator_config(seed=args.seed, missing_label_fraction=1.0).model_dump(),
            "models": models,
        }
    )
    offsets = [0] * args.partitions
    batch: list[_Message] = []
    stream = SyntheticStream(config, start_ms=start_ms_for(args.events))
    for count, generated in enumerate(stream, start=1):
        partition = zlib.crc32(generated.key) % args.partitions
        batch.append(
            _Message(
                topic,
                partition,
                offsets[partition],
                generated.key,
                # orjson's bytes carry a buffer of about 4 KiB; a Kafka
                # message's value is its own size.
                bytes(memoryview(generated.value)),
                generated.timestamp_ms,
            )
        )
        offsets[partition] += 1
        if len(batch) == args.batch_size or count == args.events:
            yield batch
            batch = []
        if count == args.events:
            return


def measure_pending(args: argparse.Namespace) -> dict[str, Any]:
    """Bytes of RSS per pending prediction, at ``args.events`` pending."""
    config = _config(args, join={"max_pending": args.events})
    if args.tracemalloc:
        tracemalloc.start()
    pipeline = Pipeline(config)
    batches = _prediction_batches(args, config.kafka.predictions_topic)
    batch = next(batches)
    gc.collect()
    rss_before = rss_bytes()
    traced_before = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0

    started_s = time.perf_counter()
    while batch:
        pipeline.process(batch)
        batch = next(batches, [])
    elapsed_s = time.perf_counter() - started_s
    gc.collect()
    rss_after = rss_bytes()
    traced_after = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0

    pending = pipeline.pending()["prediction"]
    if pending != args.events:
        raise MeasurementError(
            f"{pending} predictions pending after {args.events} were fed; "
            f"evicted: {dict(pipeline.counters.evicted)}"
        )
    result: dict[str, Any] = {
        "kind": args.kind,
        "pending": pending,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "bytes_per_pending": (rss_after - rss_before) / pending,
        "elapsed_s": elapsed_s,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    if args.tracemalloc:
        result["traced_bytes_per_pending"] = (traced_after - traced_before) / pending
    return result


# -- command line --------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("bare", "decode", "pipeline", "pending"))
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--predictions-topic", default="bench-predictions")
    parser.add_argument("--outcomes-topic", default="bench-outcomes")
    parser.add_argument("--group-id", default="bench")
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--labelled", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="pending only")
    parser.add_argument("--partitions", type=int, default=8, help="pending only")
    parser.add_argument("--seed", type=int, default=1, help="pending only")
    parser.add_argument(
        "--kind", choices=("all", "binary", "multiclass"), default="all"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="pending only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = _parse_args(argv)
    if args.command == "pending":
        emit(measure_pending(args))
    elif args.command == "pipeline":
        emit(run_pipeline(args))
    else:
        emit(consume_loop(args, decode=args.command == "decode"))


if __name__ == "__main__":
    main()
