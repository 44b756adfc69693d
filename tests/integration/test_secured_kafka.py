"""driftstream against a SASL_SSL (SCRAM) listener: works, and fails clearly.

The module's broker has a PLAINTEXT listener, which the tests' own admin and
producer use, and a SASL_SSL one with a certificate signed by a CA made here
with ``openssl``; driftstream (consumer and checkpoint store) uses only the
latter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from streamer.config import Config, load_config
from streamer.consumer import KafkaSource
from streamer.errors import DriftstreamError
from streamer.localkafka import LocalKafka, SaslSslListener, create_topics
from streamer.service import Service
from tests.scrape import wait_for

pytestmark = pytest.mark.integration

USER = "alice"
PASSWORD = "alice-s3cret-Pw"
WRONG_PASSWORD = "not-alices-Pw-9"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return key, cert


def _make_broker_cert(
    directory: Path, ca_key: Path, ca_cert: Path
) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"broker.{ext}" for ext in ("key", "csr", "pem"))
    ext = directory / "broker.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
             str(ca_key), "-CAcreateserial", "-days", "2", "-out", str(cert),
             "-extfile", str(ext))  # fmt: skip
    return cert, key


class Secured:
    def __init__(self, kafka: LocalKafka, ca: Path, other_ca: Path) -> None:
        self.kafka = kafka
        self.ca = ca
        self.other_ca = other_ca


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca(directory, "test-ca")
    _, other_ca = _make_ca(directory, "other-ca")
    cert, key = _make_broker_cert(directory, ca_key, ca_cert)
    listener = SaslSslListener(
        certificate_chain=cert, private_key=key, users={USER: PASSWORD}
    )
    with LocalKafka(sasl_ssl=listener) as kafka:
        yield Secured(kafka, ca_cert, other_ca)


def _settings(
    secured: Secured,
    topics: tuple[str, str],
    *,
    password: str = PASSWORD,
    ca: Path | None = None,
    mechanism: str = "SCRAM-SHA-512",
) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": secured.kafka.sasl_ssl_bootstrap_servers,
            "group_id": f"secured-{uuid.uuid4().hex[:8]}",
            "predictions_topic": topics[0],
            "outcomes_topic": topics[1],
            "session_timeout_ms": 6000,
            "statistics_interval_ms": 500,
            "extra": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": mechanism,
                "sasl.username": USER,
                "sasl.password": password,
                "ssl.ca.location": str(ca or secured.ca),
            },
        },
        "windows": {"lengths": ["1h"], "clock": "event"},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "state": {"checkpoint_interval_s": 0.5},
    }


def _topics(secured: Secured) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    topics = (f"pred-{suffix}", f"out-{suffix}")
    create_topics(secured.kafka.bootstrap_servers, {topics[0]: 2, topics[1]: 2})
    return topics


def _produce(bootstrap: str, topics: tuple[str, str], events: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for index in range(events):
        key = f"e-{index}"
        producer.produce(topics[0], key=key, value=orjson.dumps(
            {"event_id": key, "model": "fraud", "timestamp": 1_764_583_200_000 + index,
             "probability": 0.25}))  # fmt: skip
        producer.produce(topics[1], key=key, value=orjson.dumps(
            {"event_id": key, "label": index % 2,
             "timestamp": 1_764_583_200_500 + index}))  # fmt: skip
    assert producer.flush(30) == 0


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _assert_no_password(text: str, *passwords: str) -> None:
    for password in passwords:
        assert password not in text


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_consumes_and_checkpoints_over_sasl_ssl(
    secured: Secured, all_logs: pytest.LogCaptureFixture, mechanism: str
) -> None:
    topics = _topics(secured)
    events = 50
    _produce(secured.kafka.bootstrap_servers, topics, events)
    config = Config.model_validate(_settings(secured, topics, mechanism=mechanism))
    service = Service(config)
    service.start()
    try:
        page = wait_for(
            service.metrics_url,
            lambda p: (
                p.total("driftstream_joined_total") == events
                and p.total("driftstream_checkpoint_age_seconds") >= 0
                and service.health.last_checkpoint_wall_s is not None
            ),
            timeout_s=60,
        )
        assert page.total("driftstream_checkpoint_failures") == 0
        assert "driftstream_checkpoint_age_seconds" in page.text
        _assert_no_password(page.text, PASSWORD)
    finally:
        service.stop()
    # The checkpoint store wrote its topic through the SASL_SSL listener too.
    admin = AdminClient({"bootstrap.servers": secured.kafka.bootstrap_servers})
    checkpoint_topic = config.state.topic_name(config.kafka.group_id)
    assert checkpoint_topic in admin.list_topics(timeout=10).topics
    _assert_no_password(all_logs.text, PASSWORD)


def test_consumes_with_the_password_from_a_file(
    secured: Secured, tmp_path: Path, all_logs: pytest.LogCaptureFixture
) -> None:
    """A mounted Secret: kafka.secret_files names the file, load_config reads it."""
    topics = _topics(secured)
    events = 20
    _produce(secured.kafka.bootstrap_servers, topics, events)
    settings = _settings(secured, topics)
    del settings["kafka"]["extra"]["sasl.password"]
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    settings["kafka"]["secret_files"] = {"sasl.password": str(password_file)}
    config_path = tmp_path / "driftstream.yaml"
    config_path.write_text(yaml.safe_dump(settings))

    service = Service(load_config(config_path, environ={}))
    service.start()
    try:
        page = wait_for(
            service.metrics_url,
            lambda p: p.total("driftstream_joined_total") == events,
            timeout_s=60,
        )
        _assert_no_password(page.text, PASSWORD)
    finally:
        service.stop()
    _assert_no_password(all_logs.text, PASSWORD)


def _failing_run(
    secured: Secured,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, Any],
) -> tuple[DriftstreamError, float, list[KafkaError]]:
    errors: list[KafkaError] = []
    original: Callable[[KafkaSource, KafkaError], None] = KafkaSource._on_error

    def counting(self: KafkaSource, error: KafkaError) -> None:
        errors.append(error)
        original(self, error)

    monkeypatch.setattr(KafkaSource, "_on_error", counting)
    service = Service(Config.model_validate(settings))
    started = time.monotonic()
    with pytest.raises(DriftstreamError) as raised:
        service.run()
    return raised.value, time.monotonic() - started, errors


def test_wrong_password_fails_fast_and_clearly(
    secured: Secured,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    topics = _topics(secured)
    settings = _settings(secured, topics, password=WRONG_PASSWORD)
    error, elapsed_s, errors = _failing_run(secured, monkeypatch, settings)
    message = str(error)
    print(f"wrong password: {elapsed_s:.1f} s, {len(errors)} error_cb calls: {message}")
    assert elapsed_s < 20
    assert secured.kafka.sasl_ssl_bootstrap_servers in message
    assert "SASL authentication error" in message or "Authentication failed" in message
    # librdkafka retries a failed login every ~0.4 s; we stop at the first.
    assert 1 <= len(errors) <= 10, [e.str() for e in errors]
    _assert_no_password(message + all_logs.text, WRONG_PASSWORD, PASSWORD)


def test_untrusted_certificate_fails_fast_and_clearly(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = _topics(secured)
    settings = _settings(secured, topics, ca=secured.other_ca)
    error, elapsed_s, errors = _failing_run(secured, monkeypatch, settings)
    message = str(error)
    print(f"untrusted cert: {elapsed_s:.1f} s, {len(errors)} error_cb calls: {message}")
    assert elapsed_s < 20
    assert secured.kafka.sasl_ssl_bootstrap_servers in message
    assert "certificate verify failed" in message
    # librdkafka retries a failed TLS handshake every ~50 ms without backing
    # off (~125 error_cb calls in 8 s, measured); driftstream gives up on the
    # first one it sees, so the whole failing period is a second or so.
    assert 1 <= len(errors) <= 40, [e.str() for e in errors]


def test_check_config_hides_the_password(tmp_path: Path) -> None:
    config_path = tmp_path / "driftstream.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": "127.0.0.1:9093",
                    "extra": {
                        "security.protocol": "SASL_SSL",
                        "sasl.mechanism": "SCRAM-SHA-512",
                        "sasl.username": USER,
                    },
                }
            }
        )
    )
    # The password may not sit in the file in clear: it comes from the
    # environment (or kafka.secret_files).
    environment = {**os.environ, "DRIFTSTREAM__KAFKA__EXTRA__SASL.PASSWORD": PASSWORD}
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "check-config", str(config_path)],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    _assert_no_password(result.stdout + result.stderr, PASSWORD)
    assert '"sasl.password": "***"' in result.stdout
    assert USER in result.stdout
