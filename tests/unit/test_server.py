"""The HTTP endpoint: probes open, /metrics behind optional TLS and basic auth."""

from __future__ import annotations

import base64
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from streamer.config import Config
from streamer.errors import EndpointError
from streamer.server import MetricsServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("probe_total", "A counter to find on the page.", registry=registry).inc()
    return registry


@pytest.fixture
def secured(certificate: tuple[Path, Path]) -> Iterator[MetricsServer]:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    server = MetricsServer(
        _registry(),
        lambda: (False, "not ready: test"),
        host="127.0.0.1",
        port=0,
        tls=certificate,
        users={"prometheus": hashed},
    )
    server.start()
    yield server
    server.stop()


def _get(
    url: str, *, cafile: Path | None = None, user: str | None = None, password: str = ""
) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def test_metrics_need_credentials_over_tls(
    secured: MetricsServer, certificate: tuple[Path, Path]
) -> None:
    base = f"https://127.0.0.1:{secured.port}"
    cafile = certificate[0]
    assert _get(base + "/metrics", cafile=cafile)[0] == 401
    assert (
        _get(base + "/metrics", cafile=cafile, user="prometheus", password="x")[0]
        == 401
    )
    assert (
        _get(base + "/metrics", cafile=cafile, user="nobody", password="s3cret")[0]
        == 401
    )
    for _ in range(2):  # the second scrape takes the remembered path
        status, page = _get(base + "/metrics", cafile=cafile, user="prometheus",
                            password="s3cret")  # fmt: skip
        assert status == 200
        assert "probe_total 1.0" in page
    assert _get(base + "/healthz", cafile=cafile) == (200, "ok\n")
    assert _get(base + "/readyz", cafile=cafile)[0] == 503


def test_plain_http_is_refused_on_a_tls_port(secured: MetricsServer) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{secured.port}/healthz", timeout=5)


def test_an_unknown_certificate_is_refused(secured: MetricsServer) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"https://127.0.0.1:{secured.port}/healthz", timeout=5)


def test_open_by_default() -> None:
    server = MetricsServer(
        _registry(), lambda: (True, "ready"), host="127.0.0.1", port=0
    )
    server.start()
    try:
        status, page = _get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and "probe_total" in page
        assert _get(f"http://127.0.0.1:{server.port}/readyz") == (200, "ready\n")
    finally:
        server.stop()


def test_bad_tls_files_say_which(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        EndpointError, match=r"cannot load metrics\.tls_cert_file=.*missing\.pem"
    ):
        MetricsServer(_registry(), lambda: (True, ""), host="127.0.0.1", port=0,
                      tls=(missing, missing))  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ({"tls_cert_file": "/c.pem"}, "go together: set both"),
        ({"basic_auth_users": {"p": "plain"}}, r"\['p'\] is not a bcrypt hash"),
    ],
)
def test_security_options_are_checked(metrics: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Config.model_validate({"metrics": metrics})
