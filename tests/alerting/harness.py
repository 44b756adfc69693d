"""Real Prometheus, Alertmanager and driftstream processes on loopback, for tests.

Everything here is started by a test and stopped by it: a webhook receiver (a
thread in the test process) that records what Alertmanager sends, Alertmanager
and Prometheus as child processes (Debian's 0.25 and 2.42 binaries), and
``driftstream run`` as a child process. Each child writes its output to a log
file; :func:`diagnostics_since` lists what ran lately, so that a failed test can
show the logs (``tests/alerting/conftest.py`` attaches them to the report).

Prometheus loads a copy of ``helm/driftstream/files/alerts.yaml`` whose only
change is shorter ``for:`` durations (:func:`write_shortened_rules` says why).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import yaml

from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RULES = REPO_ROOT / "helm" / "driftstream" / "files" / "alerts.yaml"
HOST = "127.0.0.1"

TEST_FOR_DURATION = "5s"
"""What every ``for:`` of the shipped rules becomes in the test's copy."""

SCRAPE_INTERVAL = "1s"
EVALUATION_INTERVAL = "1s"

Alert = dict[str, Any]
"""One alert of an Alertmanager webhook payload: status, labels, annotations..."""


class Diagnosable(Protocol):
    name: str

    def diagnostics(self) -> str: ...


StartStack = Callable[[str], "AlertingStack"]
"""``start(target)``: the alerting path with Prometheus scraping ``target``."""


@dataclass
class _Started:
    item: Diagnosable
    stopped_s: float | None = None


_STARTED: list[_Started] = []


def _register(item: Diagnosable) -> None:
    _STARTED.append(_Started(item))


def _unregister(item: Diagnosable, *, forget: bool = False) -> None:
    for entry in _STARTED:
        if entry.item is item and entry.stopped_s is None:
            entry.stopped_s = time.time()
            if forget:
                _STARTED.remove(entry)
            return


def diagnostics_since(since_s: float) -> list[tuple[str, str]]:
    """(name, text) of what this module started that runs now or stopped since.

    ``since_s`` is a wall-clock time (``time.time()``): a fixture that failed
    and stopped its processes before the report still has them reported.
    """
    _STARTED[:] = [e for e in _STARTED if e.stopped_s is None or e.stopped_s >= since_s]
    return [(entry.item.name, entry.item.diagnostics()) for entry in _STARTED]


# --------------------------------------------------------------------------
# Child processes


class ManagedProcess:
    """A child process whose output goes to a log file, until :meth:`stop`."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, env: Mapping[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
            )
        _register(self)

    def stop(self, *, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        _unregister(self)
        return self.process.returncode

    def require_running(self, doing: str) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise AssertionError(
                f"{self.name} exited (code {code}) while {doing}; its log:\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, chars: int = 8000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return text[-chars:] if len(text) > chars else text

    def diagnostics(self) -> str:
        return f"$ {' '.join(self.command)}\n{self.log_tail()}"


def http_status(url: str, *, timeout_s: float = 2.0) -> int | None:
    """The status of a GET of ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def wait_until_serving(
    process: ManagedProcess, url: str, *, timeout_s: float = 60.0
) -> None:
    """Poll ``url`` until it answers 200; fail with the log if it never does."""
    deadline = time.monotonic() + timeout_s
    while http_status(url) != 200:
        process.require_running(f"waiting for {url}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{process.name} did not answer 200 on {url} within {timeout_s} s; "
                f"its log:\n{process.log_tail()}"
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------
# The webhook receiver


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every JSON payload POSTed to it.

    Alertmanager's webhook payload (version 4) is a notification of one alert
    group: ``{"status", "groupLabels", "commonLabels", "alerts": [...]}``,
    each alert with ``status``, ``labels``, ``annotations`` and ``startsAt``.
    """

    name = "webhook receiver"

    def __init__(self) -> None:
        self._payloads: list[dict[str, Any]] = []
        self._received_s: list[float] = []
        self._received = threading.Condition()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/alerts"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        _register(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _unregister(self)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def payloads(self) -> list[dict[str, Any]]:
        with self._received:
            return list(self._payloads)

    def alerts(self, *, status: str | None = "firing") -> list[Alert]:
        """Every alert of every payload so far (``status`` None: any status).

        Each alert is a copy with one key added: ``received_s``, the wall-clock
        time (``time.time()``) its notification arrived.
        """
        with self._received:
            received = list(zip(self._received_s, self._payloads, strict=True))
        return [
            {**alert, "received_s": received_s}
            for received_s, payload in received
            for alert in payload.get("alerts", [])
            if status is None or alert.get("status") == status
        ]

    def wait_for_alert(
        self, wanted: Callable[[Alert], bool], *, timeout_s: float, what: str
    ) -> Alert:
        """The first firing alert that ``wanted`` accepts, waiting for it."""
        deadline = time.monotonic() + timeout_s
        with self._received:
            while True:
                found = [a for a in self.alerts() if wanted(a)]
                if found:
                    return found[0]
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise AssertionError(
                        f"no {what} reached the webhook within {timeout_s} s; "
                        f"it received:\n{self.diagnostics()}"
                    )
                self._received.wait(remaining_s)

    def diagnostics(self) -> str:
        lines = [
            f"{alert.get('status')} {alert.get('labels')} startsAt="
            f"{alert.get('startsAt')}"
            for alert in self.alerts(status=None)
        ]
        return "\n".join(lines) or "(no notification received)"

    def _record(self, payload: dict[str, Any]) -> None:
        with self._received:
            self._payloads.append(payload)
            self._received_s.append(time.time())
            self._received.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_error(400, "not JSON")
                    return
                receiver._record(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # Alertmanager posts every second; the payloads are kept.

        return Handler


# --------------------------------------------------------------------------
# Alertmanager


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """Every alert to the webhook, one group per label set, sent within ~1 s."""
    return {
        "route": {
            "receiver": "webhook",
            "group_by": ["..."],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "24h",
        },
        "receivers": [
            {
                "name": "webhook",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        ],
    }


@dataclass
class Alertmanager:
    process: ManagedProcess
    address: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@contextlib.contextmanager
def running_alertmanager(
    binary: str, directory: Path, webhook_url: str
) -> Iterator[Alertmanager]:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
    address = f"{HOST}:{free_port()}"
    process = ManagedProcess(
        "alertmanager",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={directory / 'data'}",
            f"--web.listen-address={address}",
            # Empty: no cluster (gossip) listener at all, so no port 9094.
            "--cluster.listen-address=",
            "--log.level=info",
        ],
        directory / "alertmanager.log",
    )
    process.start()
    try:
        wait_until_serving(process, f"http://{address}/-/ready")
        yield Alertmanager(process, address)
    finally:
        process.stop()


# --------------------------------------------------------------------------
# Prometheus


def write_shortened_rules(
    destination: Path, *, source: Path = SHIPPED_RULES, for_duration: str = "5s"
) -> int:
    """Copy the shipped rules with every ``for:`` set to ``for_duration``.

    Returns how many rules were changed. Nothing else changes: expressions,
    labels, annotations, groups and recording rules are the shipped ones.

    Why. ``for:`` is wall-clock time a condition must hold before the alert
    fires (5 minutes to an hour in the shipped file). A test that waited that
    long would take an hour; one that rewrote the expressions would test its
    own rules, not the shipped ones. With ``for:`` at a few seconds, which is
    still several consecutive evaluations at the 1 s interval (a one-sample
    blip does not fire), the test shows that the shipped expressions fire on
    the metrics a real driftstream exports, that their labels route through
    Alertmanager, and that they stay silent where they should. The shipped
    ``for:`` values themselves are checked on simulated time by ``promtool
    test rules`` (``files/alerts_test.yaml``). Range selectors (``[10m]``,
    ``[1h]``) stay as shipped: ``rate``, ``increase`` and ``deriv`` work on
    the samples a range holds, so a young series is enough.
    """
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    changed = 0
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_duration
                changed += 1
    destination.write_text(yaml.safe_dump(document, sort_keys=False))
    return changed


def prometheus_config(
    *, target: str, alertmanager: str, rules_file: Path
) -> dict[str, Any]:
    """Scrape ``target`` as job="driftstream" each second; alert ``alertmanager``."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
        },
        "rule_files": [str(rules_file)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
        },
        "scrape_configs": [
            {"job_name": "driftstream", "static_configs": [{"targets": [target]}]}
        ],
    }


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, process: ManagedProcess, address: str) -> None:
        self.process = process
        self.address = address
        self.name = "prometheus"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a GET of ``/api/v1/<path>``; fails on an API error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"Prometheus answered {exc.code} to {path} {params}: "
                f"{exc.read().decode(errors='replace')}"
            ) from exc
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params} failed: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` gives now (a scalar as one item)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(
        self,
        expr: str,
        *,
        timeout_s: float,
        condition: Callable[[list[dict[str, Any]]], bool] = bool,
    ) -> list[dict[str, Any]]:
        """Query ``expr`` until ``condition`` holds (default: non-empty)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if condition(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{expr} did not meet the condition within {timeout_s} s; "
                    f"last result: {result}"
                )
            time.sleep(0.5)

    def diagnostics(self) -> str:
        try:
            alerts = json.dumps(self.api("alerts")["alerts"], indent=1)[-4000:]
        except (OSError, AssertionError) as exc:
            alerts = f"(could not ask for its alerts: {exc})"
        return f"alerts it holds:\n{alerts}\n\nlog:\n{self.process.log_tail()}"


@contextlib.contextmanager
def running_prometheus(
    binary: str, directory: Path, *, target: str, alertmanager: str
) -> Iterator[Prometheus]:
    directory.mkdir(parents=True, exist_ok=True)
    rules_file = directory / "alerts.yaml"
    assert write_shortened_rules(rules_file, for_duration=TEST_FOR_DURATION) > 0
    config_path = directory / "prometheus.yml"
    config_path.write_text(
        yaml.safe_dump(
            prometheus_config(
                target=target, alertmanager=alertmanager, rules_file=rules_file
            )
        )
    )
    address = f"{HOST}:{free_port()}"
    process = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=info",
        ],
        directory / "prometheus.log",
    )
    process.start()
    prometheus = Prometheus(process, address)
    # Reported as Prometheus: its log and the alerts it holds.
    _unregister(process, forget=True)
    _register(prometheus)
    try:
        wait_until_serving(process, f"{prometheus.url}/-/ready")
        yield prometheus
    finally:
        _unregister(prometheus)
        process.stop()


# --------------------------------------------------------------------------
# The whole alerting path


@dataclass(frozen=True)
class Binaries:
    prometheus: str
    alertmanager: str


@dataclass(frozen=True)
class AlertingStack:
    webhook: WebhookReceiver
    alertmanager: Alertmanager
    prometheus: Prometheus


@contextlib.contextmanager
def running_stack(
    binaries: Binaries, directory: Path, *, target: str
) -> Iterator[AlertingStack]:
    """Webhook <- Alertmanager <- Prometheus, which scrapes ``target``."""
    with contextlib.ExitStack() as stack:
        webhook = stack.enter_context(WebhookReceiver())
        alertmanager = stack.enter_context(
            running_alertmanager(
                binaries.alertmanager, directory / "alertmanager", webhook.url
            )
        )
        prometheus = stack.enter_context(
            running_prometheus(
                binaries.prometheus,
                directory / "prometheus",
                target=target,
                alertmanager=alertmanager.address,
            )
        )
        yield AlertingStack(webhook, alertmanager, prometheus)


# --------------------------------------------------------------------------
# driftstream run


class DriftstreamRun:
    """``driftstream run`` as a child process on a port chosen here."""

    def __init__(self, settings: dict[str, Any], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        settings = {**settings, "metrics": {**settings.get("metrics", {})}}
        settings["metrics"].update({"host": HOST, "port": self.port})
        self.config_path = directory / "driftstream.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.process = ManagedProcess(
            "driftstream",
            [sys.executable, "-m", "streamer.cli", "run", "--config",
             str(self.config_path)],
            directory / "driftstream.log",
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        """Start it and wait until /healthz answers (it serves /metrics then)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM__")}
        self.process.start(env=env)
        wait_until_serving(self.process, f"{self.url}/healthz", timeout_s=30)

    def stop(self) -> int | None:
        return self.process.stop(timeout_s=30)


def driftstream_settings(
    bootstrap_servers: str, predictions_topic: str, outcomes_topic: str, group: str
) -> dict[str, Any]:
    """A configuration for a test: short group timeouts, frequent lag reports.

    No checkpoints (``state.store: none``): restarts are not under test here,
    and a checkpoint topic would only slow the start.
    """
    return {
        "kafka": {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group,
            "predictions_topic": predictions_topic,
            "outcomes_topic": outcomes_topic,
            "session_timeout_ms": 6000,
            "statistics_interval_ms": 500,
        },
        "state": {"store": "none"},
    }
