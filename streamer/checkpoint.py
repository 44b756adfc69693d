"""Checkpoint stores: where a partition's state bytes go, and come back from.

Two stores, one interface (:class:`CheckpointStore`):

- :class:`KafkaStore` (the default) writes to a compacted topic with the
  input topics' partition count; input partition p goes to checkpoint
  partition p. A checkpoint is split into chunks of at most ``chunk_bytes``
  (keys ``<p>/<generation>/<i>``), followed by a manifest (key ``<p>/manifest``)
  naming the generation, the chunk count and a CRC-32. The manifest is written
  last, by an idempotent producer in the same partition, so a manifest is only
  ever seen after all of its chunks; a crash half-way leaves the previous
  manifest in force. Chunks of the replaced generation are then deleted with
  tombstones, and compaction reclaims them.
- :class:`DirectoryStore` writes one file per partition, atomically (a
  temporary file renamed over the old one), for development.

A store raises :class:`CheckpointError` when a save did not complete; the
caller then keeps its offsets uncommitted and tries again later.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Protocol

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamer.config import Config
from streamer.errors import DriftstreamError, TopicLayoutError
from streamer.ratelimit import LIBRDKAFKA_LOGGER

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class CheckpointError(DriftstreamError):
    """A checkpoint could not be written or read back whole."""


class CheckpointStore(Protocol):
    """Moves checkpoint bytes; one instance per process."""

    def prepare(self, partition_count: int) -> None: ...
    def save(self, partition: int, payload: bytes) -> None: ...
    def load(self, partition: int) -> bytes | None: ...
    def close(self) -> None: ...


class NoStore:
    """``state.store: none``: nothing is kept."""

    def prepare(self, partition_count: int) -> None:
        return

    def save(self, partition: int, payload: bytes) -> None:
        return

    def load(self, partition: int) -> bytes | None:
        return None

    def close(self) -> None:
        return


class DirectoryStore:
    """One file per partition under ``directory``, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self, partition_count: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, partition: int) -> Path:
        return self.directory / f"partition-{partition}.ckpt"

    def save(self, partition: int, payload: bytes) -> None:
        target = self._path(partition)
        temporary = target.with_suffix(".tmp")
        try:
            with temporary.open("wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write checkpoint {target}: {exc.strerror}"
            ) from exc

    def load(self, partition: int) -> bytes | None:
        try:
            return self._path(partition).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(
                f"cannot read checkpoint {self._path(partition)}: {exc.strerror}"
            ) from exc

    def close(self) -> None:
        return


class KafkaStore:
    """Checkpoints in a compacted topic, chunked, manifest last."""

    def __init__(self, config: Config) -> None:
        kafka = config.kafka
        self.topic = config.state.topic_name(kafka.group_id)
        self.replication_factor = config.state.topic_replication_factor
        self.chunk_bytes = config.state.chunk_bytes
        self.client_settings: dict[str, Any] = {
            **kafka.client_settings(),
            "logger": LIBRDKAFKA_LOGGER,
        }
        self._producer = Producer(
            {
                **self.client_settings,
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 5,
                "message.max.bytes": self.chunk_bytes + 64 * 1024,
            }
        )
        self._reader: Consumer | None = None
        self._generations: dict[int, tuple[int, int]] = {}
        """Per partition: (generation, chunk count) of the last manifest known."""

    # -- set-up -----------------------------------------------------------

    def prepare(self, partition_count: int) -> None:
        """Create the topic if missing; check it can hold every partition."""
        admin = AdminClient(self.client_settings)
        metadata = admin.list_topics(timeout=READ_TIMEOUT_S)
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None:
            self._create(admin, partition_count)
            return
        if len(described.partitions) < partition_count:
            raise TopicLayoutError(
                f"checkpoint topic {self.topic!r} has {len(described.partitions)} "
                f"partitions but the input topics have {partition_count}; it needs "
                "at least as many. Delete it (checkpoints are lost, offsets stay) "
                "or set state.topic to a new name."
            )

    def _create(self, admin: AdminClient, partition_count: int) -> None:
        topic = NewTopic(
            self.topic,
            num_partitions=partition_count,
            replication_factor=self.replication_factor,
            config={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
        )
        future = admin.create_topics([topic])[self.topic]
        try:
            future.result(timeout=READ_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise CheckpointError(
                    f"cannot create checkpoint topic {self.topic!r}: {exc}"
                ) from exc
        log.info(
            "checkpoint topic created topic=%s partitions=%d",
            self.topic,
            partition_count,
        )

    # -- writing ----------------------------------------------------------

    def save(self, partition: int, payload: bytes) -> None:
        previous = self._generations.get(partition)
        generation = (previous[0] if previous else 0) + 1
        chunks = [
            payload[start : start + self.chunk_bytes]
            for start in range(0, max(len(payload), 1), self.chunk_bytes)
        ]
        failures: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _message: object) -> None:
            if error is not None:
                failures.append(error)

        for index, chunk in enumerate(chunks):
            self._produce(
                partition, f"{partition}/{generation}/{index}", chunk, on_delivery
            )
        manifest = {
            "generation": generation,
            "chunks": len(chunks),
            "bytes": len(payload),
            "crc32": zlib.crc32(payload),
        }
        self._produce(
            partition, f"{partition}/manifest", orjson.dumps(manifest), on_delivery
        )
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if failures or remaining:
            raise CheckpointError(
                f"checkpoint of partition {partition} to topic {self.topic!r} not "
                f"delivered ({len(failures)} failed, {remaining} still queued): "
                f"{failures[0] if failures else 'timed out'}"
            )
        self._generations[partition] = (generation, len(chunks))
        if previous:
            self._delete_generation(partition, *previous)

    def _produce(
        self, partition: int, key: str, value: bytes | None, on_delivery: Any = None
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=key.encode(),
                    value=value,
                    partition=partition,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def _delete_generation(self, partition: int, generation: int, chunks: int) -> None:
        for index in range(chunks):
            self._produce(partition, f"{partition}/{generation}/{index}", None)
        self._producer.poll(0)

    # -- reading ----------------------------------------------------------

    def load(self, partition: int) -> bytes | None:
        """The newest whole checkpoint of ``partition``, or None if it has none."""
        records = self._read_partition(partition)
        manifest_bytes = records.get(f"{partition}/manifest")
        if manifest_bytes is None:
            return None
        manifest = orjson.loads(manifest_bytes)
        generation, count = int(manifest["generation"]), int(manifest["chunks"])
        try:
            payload = b"".join(
                records[f"{partition}/{generation}/{index}"] for index in range(count)
            )
        except KeyError as exc:
            raise CheckpointError(
                f"checkpoint of partition {partition} in topic {self.topic!r} lacks "
                f"chunk {exc.args[0]}"
            ) from exc
        if zlib.crc32(payload) != manifest["crc32"]:
            raise CheckpointError(
                f"checkpoint of partition {partition} in topic {self.topic!r} fails "
                "its CRC-32 check"
            )
        self._generations[partition] = (generation, count)
        return payload

    def _read_partition(self, partition: int) -> dict[str, bytes]:
        reader = self._reader_consumer()
        low, high = self._watermarks(reader, partition)
        records: dict[str, bytes] = {}
        if high <= low:
            return records
        reader.assign([TopicPartition(self.topic, partition, OFFSET_BEGINNING)])
        try:
            self._read_until(reader, high, records)
        finally:
            reader.unassign()
        return records

    def _watermarks(self, reader: Consumer, partition: int) -> tuple[int, int]:
        # A topic another replica has just created takes a moment to be known.
        deadline = time.monotonic() + READ_TIMEOUT_S
        while True:
            try:
                low, high = reader.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=5.0
                )
                return int(low), int(high)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise CheckpointError(
                        f"cannot read the offsets of checkpoint topic {self.topic!r} "
                        f"partition {partition}: {exc}"
                    ) from exc
                time.sleep(0.5)

    def _read_until(
        self, reader: Consumer, high: int, records: dict[str, bytes]
    ) -> None:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            for message in reader.consume(num_messages=1000, timeout=0.5):
                if message.error() is not None:
                    continue
                key = (message.key() or b"").decode()
                value = message.value()
                if value is None:
                    records.pop(key, None)
                else:
                    records[key] = value
                if (message.offset() or 0) >= high - 1:
                    return
        raise CheckpointError(
            f"reading checkpoint topic {self.topic!r} did not reach offset {high} "
            f"within {READ_TIMEOUT_S} s"
        )

    def _reader_consumer(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(
                {
                    **self.client_settings,
                    "group.id": f"{self.topic}-reader",
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                    "fetch.queue.backoff.ms": 10,
                }
            )
        return self._reader

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_S)
        if self._reader is not None:
            self._reader.close()


def open_store(config: Config) -> CheckpointStore:
    """The store ``state.store`` names."""
    if config.state.store == "kafka":
        return KafkaStore(config)
    if config.state.store == "directory":
        return DirectoryStore(config.state.directory)
    return NoStore()
