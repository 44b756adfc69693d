"""Wires one running driftstream: pipeline, collector, HTTP endpoint, consumer.

``driftstream run`` and ``driftstream demo`` both start a :class:`Service`;
the tests start it too, in-process, against the local broker.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamer.checkpoint import open_store
from streamer.config import Config
from streamer.consumer import KafkaSource, readiness
from streamer.metrics import ConsumerHealth, PipelineCollector
from streamer.pipeline import Pipeline
from streamer.server import MetricsServer

log = logging.getLogger(__name__)


class Service:
    """Everything ``driftstream run`` runs, with a start/stop life cycle."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.pipeline = Pipeline(config)
        self.health = ConsumerHealth()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PipelineCollector(self.pipeline, self.health))
        self.server = MetricsServer(
            self.registry,
            lambda: readiness(self.health, max_lag=config.metrics.ready_max_lag),
            host=config.metrics.host,
            port=config.metrics.port,
            tls=_tls_files(config),
            users=dict(config.metrics.basic_auth_users),
        )
        self.source = KafkaSource(
            config, self.pipeline, self.health, self.stop_event, open_store(config)
        )
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    @property
    def metrics_url(self) -> str:
        host = self.config.metrics.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        scheme = "https" if _tls_files(self.config) else "http"
        return f"{scheme}://{shown}:{self.server.port}"

    def run(self) -> None:
        """Serve and consume in this thread until :meth:`request_stop`."""
        self.server.start()
        try:
            self.source.run()
        finally:
            self.server.stop()

    def start(self) -> None:
        """Serve and consume in a background thread."""
        # A daemon: a consumer wedged in librdkafka must not keep the
        # interpreter from exiting; stop() reports it instead.
        self._thread = threading.Thread(
            target=self._run_captured, name="driftstream", daemon=True
        )
        self._thread.start()

    def _run_captured(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self.failure = exc
            log.exception("driftstream stopped on an error")

    def request_stop(self) -> None:
        self.stop_event.set()

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop a service started with :meth:`start`, re-raising its failure.

        Raises :class:`TimeoutError` if it is still running after ``timeout_s``.
        """
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise TimeoutError(f"driftstream did not stop within {timeout_s} s")
        if self.failure is not None:
            raise self.failure


def _tls_files(config: Config) -> tuple[Path, Path] | None:
    metrics = config.metrics
    if metrics.tls_cert_file is None or metrics.tls_key_file is None:
        return None
    return (metrics.tls_cert_file, metrics.tls_key_file)
