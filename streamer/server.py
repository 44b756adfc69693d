"""The HTTP endpoint: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

A thin adapter: it gets the registry and a readiness check passed in and
serves them from a daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamer.errors import EndpointError

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, a one-line reason shown in the /readyz body)."""


class MetricsServer:
    """Serves the endpoints on ``host:port`` until :meth:`stop`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        *,
        host: str,
        port: int,
    ) -> None:
        handler = _handler_class(registry, readiness)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise EndpointError(
                f"cannot listen on {host}:{port} for /metrics: {exc.strerror}; "
                "set metrics.port (DRIFTSTREAM__METRICS__PORT) to a free port, "
                "or metrics.host to an address of this machine"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        host, port = self._server.server_address[:2]
        log.info("metrics endpoint listening host=%s port=%s", host, port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(
    registry: CollectorRegistry, readiness: Readiness
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ready, reason = readiness()
                self._send(200 if ready else 503, reason.encode() + b"\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(
            self, status: int, body: bytes, content_type: str = "text/plain"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would flood the log; errors still show.
            return

    return Handler
