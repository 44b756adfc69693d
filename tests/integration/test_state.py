"""Nothing lost, nothing counted twice: kills, scale-out, broker restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from confluent_kafka import Producer

from streamer.config import Config
from streamer.localkafka import LocalKafka, create_topics
from streamer.service import Service
from tests.ports import free_port
from tests.scrape import Scrape, scrape, wait_for

pytestmark = pytest.mark.integration

T0 = 1_764_583_200_000
MODELS = ("fraud", "churn")
EPS = 2.0**-52


@dataclass(frozen=True)
class Stream:
    """A known stream: every prediction, and the outcomes that will arrive."""

    probabilities: np.ndarray
    labels: np.ndarray
    labelled: np.ndarray
    models: np.ndarray

    @classmethod
    def make(cls, events: int, seed: int) -> Stream:
        rng = np.random.default_rng(seed)
        return cls(
            probabilities=rng.random(events),
            labels=rng.integers(0, 2, events),
            labelled=rng.random(events) < 0.9,
            models=rng.integers(0, len(MODELS), events),
        )

    def messages(self, index: int) -> tuple[bytes, bytes, bytes | None]:
        ts = T0 + index
        key = f"s-{index}".encode()
        prediction = orjson.dumps(
            {"event_id": key.decode(), "model": MODELS[self.models[index]],
             "timestamp": ts, "probability": float(self.probabilities[index])}
        )  # fmt: skip
        outcome = None
        if self.labelled[index]:
            outcome = orjson.dumps(
                {"event_id": key.decode(), "label": int(self.labels[index]),
                 "timestamp": ts + 500}
            )  # fmt: skip
        return key, prediction, outcome

    def expected(self, model: str, until: int | None = None) -> tuple[int, float]:
        """(events, mean log loss) of the joined events of ``model``, naively."""
        chosen = self.labelled & (self.models == MODELS.index(model))
        if until is not None:
            chosen[until:] = False
        p = np.where(self.labels == 1, self.probabilities, 1 - self.probabilities)
        losses = -np.log(np.clip(p[chosen], EPS, 1 - EPS))
        return int(chosen.sum()), float(losses.mean())


def _produce(
    bootstrap: str,
    topics: tuple[str, str],
    stream: Stream,
    indices: range,
    *,
    pace_s: float = 0.0,
    gate: threading.Semaphore | None = None,
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
         "message.timeout.ms": 120_000}
    )  # fmt: skip
    for index in indices:
        key, prediction, outcome = stream.messages(index)
        _send(producer, topics[0], key, prediction)
        if outcome is not None:
            _send(producer, topics[1], key, outcome)
        if index % 1000 == 999:
            time.sleep(pace_s)
            if gate is not None:
                gate.acquire()
    assert producer.flush(120) == 0


def _send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def _settings(bootstrap: str, topics: tuple[str, str], group: str) -> dict:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "predictions_topic": topics[0],
            "outcomes_topic": topics[1],
            "session_timeout_ms": 6000,
            "statistics_interval_ms": 500,
        },
        "windows": {"lengths": ["1h", "24h"], "clock": "event"},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "state": {"checkpoint_interval_s": 0.5},
    }


def _topics(bootstrap: str, partitions: int = 4) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    topics = (f"pred-{suffix}", f"out-{suffix}")
    create_topics(bootstrap, {topics[0]: partitions, topics[1]: partitions})
    return topics


def _assert_windows(pages: list[Scrape], stream: Stream, until: int | None = None):
    for model in MODELS:
        events, mean = stream.expected(model, until)
        for window in ("1h", "24h"):
            counts = [p.total("driftstream_window_events", model=model, window=window)
                      for p in pages]  # fmt: skip
            sums = [
                p.total("driftstream_window_log_loss", model=model, window=window)
                * count
                for p, count in zip(pages, counts, strict=True)
            ]
            assert sum(counts) == events, (model, window)
            assert sum(sums) / sum(counts) == pytest.approx(mean, rel=1e-9)


def _joined_everything(stream: Stream, until: int | None = None):
    expected = sum(stream.expected(model, until)[0] for model in MODELS)

    def condition(*pages: Scrape) -> bool:
        return (
            sum(p.total("driftstream_window_events", window="24h") for p in pages)
            == expected
        )

    return condition


class RunProcess:
    """``driftstream run`` as a child process, with its own metrics port."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "DRIFTSTREAM__METRICS__PORT": str(self.port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamer.cli", "run", "--config",
                 str(self.config_path)],
                env=env, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                scrape(self.url)
                return
            except OSError:
                assert self.process.poll() is None, self.log_path.read_text()[-3000:]
                time.sleep(0.1)
        raise AssertionError("driftstream run did not serve /metrics in 30 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[RunProcess]]:
    started: list[RunProcess] = []
    yield started
    for run in started:
        if run.process is not None and run.process.poll() is None:
            run.process.kill()
            run.process.wait(10)


def test_sigkill_five_times_loses_and_doubles_nothing(
    kafka_bootstrap: str, tmp_path: Path, runs: list[RunProcess]
) -> None:
    events = 200_000
    stream = Stream.make(events, seed=1)
    topics = _topics(kafka_bootstrap)
    config_path = tmp_path / "driftstream.yaml"
    settings = _settings(kafka_bootstrap, topics, f"kill-{uuid.uuid4().hex[:6]}")
    config_path.write_text(yaml.safe_dump(settings))

    # The producer sends a sixth of the stream per life of the process, so
    # every kill lands while events flow.
    chunks_per_life = events // 1000 // 6
    gate = threading.Semaphore(chunks_per_life)
    producer = threading.Thread(
        target=_produce,
        args=(kafka_bootstrap, topics, stream, range(events)),
        kwargs={"pace_s": 0.01, "gate": gate},
    )
    producer.start()
    run = RunProcess(config_path, tmp_path / "run.log")
    runs.append(run)
    rng = np.random.default_rng(3)
    for _ in range(5):
        run.start()
        wait_for(run.url, lambda p: p.value("driftstream_assigned_partitions") > 0)
        time.sleep(float(rng.uniform(0.2, 3.0)))
        run.kill()
        gate.release(chunks_per_life)
    assert producer.is_alive(), "the kills must land while the stream flows"
    gate.release(events)
    producer.join()
    run.start()

    wait_for(run.url, _joined_everything(stream), timeout_s=180)
    time.sleep(2)
    page = scrape(run.url)
    _assert_windows([page], stream)
    pending = page.value("driftstream_pending_entries", side="prediction")
    assert pending == int((~stream.labelled).sum())
    log = run.log_path.read_text()
    assert log.count("partitions assigned") >= 6
    assert "restored=[0, 1, 2, 3]" in log
    assert run.terminate() == 0


def test_scale_out_and_in_keeps_the_sum(kafka_bootstrap: str) -> None:
    events = 30_000
    stream = Stream.make(events, seed=2)
    topics = _topics(kafka_bootstrap, partitions=6)
    config = Config.model_validate(
        _settings(kafka_bootstrap, topics, f"scale-{uuid.uuid4().hex[:6]}")
    )
    producer = threading.Thread(
        target=_produce,
        args=(kafka_bootstrap, topics, stream, range(events)),
        kwargs={"pace_s": 0.05},
    )
    producer.start()
    services = [Service(config)]
    try:
        services[0].start()
        time.sleep(2)
        for _ in range(2):
            services.append(Service(config))
            services[-1].start()
            time.sleep(3)
        producer.join()

        def all_joined() -> bool:
            pages = [scrape(s.metrics_url) for s in services]
            return _joined_everything(stream)(*pages)

        _wait(all_joined, timeout_s=120)
        pages = [scrape(s.metrics_url) for s in services]
        assert [p.value("driftstream_assigned_partitions") for p in pages] == [4, 4, 4]
        _assert_windows(pages, stream)

        for service in services[1:]:
            service.stop()
        survivor = services[0]
        wait_for(survivor.metrics_url,
                 lambda p: p.value("driftstream_assigned_partitions") == 12
                 and _joined_everything(stream)(p), timeout_s=60)  # fmt: skip
        _assert_windows([scrape(survivor.metrics_url)], stream)
    finally:
        for service in services:
            service.stop()


def test_broker_restart_mid_stream(tmp_path: Path) -> None:
    events = 20_000
    stream = Stream.make(events, seed=4)
    with LocalKafka(port=free_port()) as kafka:
        topics = _topics(kafka.bootstrap_servers, partitions=2)
        config = Config.model_validate(
            _settings(kafka.bootstrap_servers, topics, "restart")
        )
        _produce(kafka.bootstrap_servers, topics, stream, range(events // 2))
        service = Service(config)
        service.start()
        try:
            wait_for(service.metrics_url, _joined_everything(stream, events // 2),
                     timeout_s=60)  # fmt: skip
            kafka.stop(keep_data=True)
            page = wait_for(
                service.metrics_url,
                lambda p: p.value("driftstream_kafka_reachable") == 0,
                timeout_s=60,
            )
            _assert_windows([page], stream, events // 2)
            with pytest.raises(OSError, match="503"):
                scrape_ready(service.metrics_url)
            kafka.start()
            _produce(kafka.bootstrap_servers, topics, stream,
                     range(events // 2, events))  # fmt: skip
            page = wait_for(service.metrics_url, _joined_everything(stream),
                            timeout_s=120)  # fmt: skip
            time.sleep(1)
            _assert_windows([scrape(service.metrics_url)], stream)
        finally:
            service.stop()


def test_checkpoints_go_on_while_the_broker_is_frozen(tmp_path: Path) -> None:
    """The broker freezes (its connections open, nothing answering) while the
    consumer still works through the records it had fetched. With a directory
    store those are checkpointed during the freeze, each checkpoint followed
    by an offset commit. A commit that waits for the broker's answer (a
    synchronous one) froze the loop with it; CI once saw that as Kafka never
    reading unreachable, and a process that could not stop. Here checkpoints
    go on, and after the thaw nothing is lost or counted twice."""
    events, backlog = 250_000, 200_000
    stream = Stream.make(events, seed=6)
    with LocalKafka(port=free_port()) as kafka:
        topics = _topics(kafka.bootstrap_servers, partitions=2)
        settings = _settings(kafka.bootstrap_servers, topics, "frozen-broker")
        settings["state"].update(store="directory", directory=str(tmp_path / "state"))
        service = Service(Config.model_validate(settings))
        _produce(kafka.bootstrap_servers, topics, stream, range(backlog))
        service.start()
        try:
            wait_for(service.metrics_url,
                     lambda p: p.total("driftstream_joined_total") > 0,
                     timeout_s=60)  # fmt: skip
            with kafka.frozen():
                joined_at_freeze = scrape(service.metrics_url).total(
                    "driftstream_joined_total"
                )
                time.sleep(2)
                page = wait_for(
                    service.metrics_url,
                    lambda p: p.value("driftstream_checkpoint_age_seconds") < 1.0,
                    timeout_s=20,
                )
                assert page.total("driftstream_joined_total") > joined_at_freeze
            _produce(kafka.bootstrap_servers, topics, stream, range(backlog, events))
            wait_for(service.metrics_url, _joined_everything(stream), timeout_s=120)
            time.sleep(1)
            _assert_windows([scrape(service.metrics_url)], stream)
        finally:
            service.stop()


def scrape_ready(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
        return str(response.read().decode())


def _wait(condition, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)


def test_sigterm_checkpoints_and_exits_zero(
    kafka_bootstrap: str, tmp_path: Path, runs: list[RunProcess]
) -> None:
    events = 5_000
    stream = Stream.make(events, seed=5)
    topics = _topics(kafka_bootstrap, partitions=2)
    settings = _settings(kafka_bootstrap, topics, f"term-{uuid.uuid4().hex[:6]}")
    settings["state"] = {"checkpoint_interval_s": 3600, "store": "directory",
                         "directory": str(tmp_path / "state")}  # fmt: skip
    config_path = tmp_path / "driftstream.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    _produce(kafka_bootstrap, topics, stream, range(events))

    run = RunProcess(config_path, tmp_path / "run.log")
    runs.append(run)
    run.start()
    wait_for(run.url, _joined_everything(stream), timeout_s=60)
    started = time.monotonic()
    assert run.terminate() == 0
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "partition-0.ckpt",
        "partition-1.ckpt",
    ]
    # The only checkpoint was the one taken on SIGTERM: a restart resumes it.
    run.start()
    page = wait_for(run.url, _joined_everything(stream), timeout_s=60)
    _assert_windows([page], stream)
    assert page.total("driftstream_joined_total") == 0
