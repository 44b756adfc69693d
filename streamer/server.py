"""The HTTP endpoint: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

A thin adapter: it gets the registry and a readiness check passed in and
serves them from a daemon thread. Optionally over TLS, and with basic auth on
``/metrics`` (bcrypt hashes, as Prometheus' own web configuration takes
them); the probes stay open, since kubelets do not authenticate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamer.errors import EndpointError
from streamer.ratelimit import RateLimitedLog

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
        tls: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        handler = _handler_class(registry, readiness, BasicAuth(users or {}))
        try:
            self._server = _Server((host, port), handler)
        except OSError as exc:
            raise EndpointError(
                f"cannot listen on {host}:{port} for /metrics: {exc.strerror}; "
                "set metrics.port (DRIFTSTREAM__METRICS__PORT) to a free port, "
                "or metrics.host to an address of this machine"
            ) from exc
        if tls is not None:
            self._server.socket = _tls_context(*tls).wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that fails the TLS handshake or hangs up is its own problem:
        # one line at a bounded rate, not a traceback per connection.
        _client_errors.note("client", "client=%s", client_address)


_client_errors = RateLimitedLog(log, "metrics client error", 60.0)


def _tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    except (OSError, ssl.SSLError) as exc:
        raise EndpointError(
            f"cannot load metrics.tls_cert_file={cert_file} with "
            f"metrics.tls_key_file={key_file}: {exc}"
        ) from exc
    return context


class BasicAuth:
    """Checks basic-auth credentials against bcrypt hashes; open when empty.

    bcrypt is slow on purpose, so a pair that passed once is remembered (by
    its SHA-256, never in clear) and later scrapes cost a dictionary look-up.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {user: hashed.encode() for user, hashed in users.items()}
        self._passed: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return bool(self.users)

    def allows(self, header: str | None) -> bool:
        if not self.users:
            return True
        if header is None or not header.startswith("Basic "):
            return False
        try:
            user, _, password = (
                base64.b64decode(header[6:], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        fingerprint = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with self._lock:
            if fingerprint in self._passed:
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._passed.add(fingerprint)
        return True


def _handler_class(
    registry: CollectorRegistry, readiness: Readiness, auth: BasicAuth
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and not auth.allows(
                self.headers.get("Authorization")
            ):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="driftstream"')
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/metrics":
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
