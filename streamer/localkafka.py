"""A throw-away single-node Apache Kafka broker (KRaft) for the tests and the demo.

The broker is the real thing: ``org.apache.kafka:kafka_2.13`` fetched from Maven
Central with ``mvn`` (cached between runs), formatted into a fresh data
directory and run on the machine's Java 17 as one combined broker + controller
on 127.0.0.1.

>>> with LocalKafka() as kafka:  # doctest: +SKIP
...     create_topics(kafka.bootstrap_servers, {"predictions": 4})

Layout of the data directory::

    server.properties   the broker's configuration
    log4j2.properties   the broker's logging: INFO to stdout
    broker.log          the broker's stdout and stderr, appended across restarts
    kafka-logs/         ``log.dirs``: the KRaft metadata log and the topic data

The broker runs in a session of its own, so a Ctrl-C in a terminal reaches only
its owner, which stops it after its own clean shutdown. A broker whose owner
exits normally is stopped by an ``atexit`` hook; one whose owner is killed with
SIGKILL (or SIGTERM, in a program that does not handle it) keeps running, and
``broker.log`` names its pid.

Run ``python -m streamer.localkafka --help`` for the command line.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal, Self, get_args

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# confluent_kafka.admin re-exports NewTopic without listing it in __all__,
# which mypy --strict rejects; cimpl is where it is defined (and typed).
from confluent_kafka.cimpl import NewTopic

from streamer.errors import KafkaSetupError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.25.5"
"""The log4j release Kafka 4.4.0 depends on; its SLF4J binding must match it."""

CACHE_DIR_ENV = "DRIFTSTREAM_CACHE_DIR"
HOST = "127.0.0.1"

BrokerLogLevel = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]

_COMPLETE_MARKER = ".driftstream-complete"
_LOG_EXCERPT_LINES = 25
_TOOL_JVM_OPTS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
_BIND_ERROR = "Address already in use"

_POM = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.driftstream</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka logs through SLF4J 1.7; without a binding it logs nothing,
         not even the exception that stops it at start-up. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2_PROPERTIES = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = STDOUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""

_DEFAULT_BROKER_PROPERTIES: Mapping[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    # After a SIGKILL the controller refuses the restarted broker until the
    # old registration's session expires (9 s by default).
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "500",
    # One node: every internal topic has one replica, and one partition is
    # plenty (fifty, the default, make the first group join slow).
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
}


@dataclass(frozen=True)
class SaslSslListener:
    """A second listener, ``SASL_SSL``, with SCRAM users, beside ``PLAINTEXT``.

    The broker's key and certificate are PEM files made by the caller (for
    instance with ``openssl``); the key must be unencrypted PKCS#8 (``BEGIN
    PRIVATE KEY``). Clients trust the CA that signed ``certificate_chain`` and
    log in with one of ``users`` (name -> password) over any of
    ``mechanisms``. The broker's own traffic, and :meth:`LocalKafka.start`'s
    readiness check, stay on the ``PLAINTEXT`` listener.
    """

    certificate_chain: Path
    """PEM: the broker's certificate first, then any intermediates."""
    private_key: Path
    """PEM: the broker's unencrypted PKCS#8 private key."""
    users: Mapping[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256")
    port: int = 0
    """0 picks a free one."""


class KafkaJarsError(KafkaSetupError):
    """The Kafka jars could not be fetched with Maven."""


class BrokerStartError(KafkaSetupError):
    """The broker did not start serving; the message carries its log."""


# --------------------------------------------------------------------------
# Jars


def kafka_cache_dir() -> Path:
    """Where this Kafka version's jars are cached.

    ``$DRIFTSTREAM_CACHE_DIR/kafka-4.4.0`` if the variable is set, else
    ``$XDG_CACHE_HOME/driftstream/kafka-4.4.0`` (``~/.cache`` by default).
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        root = Path(configured).expanduser()
    else:
        xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(xdg_cache) / "driftstream"
    return root / f"kafka-{KAFKA_VERSION}"


def ensure_kafka_jars(*, cache_dir: Path | None = None, mvn: str = "mvn") -> Path:
    """Return the directory of Kafka's runtime jars, fetching them first if needed.

    The fetch runs ``mvn dependency:copy-dependencies`` on a generated
    ``pom.xml`` and takes about ten seconds with a cold Maven repository.
    Concurrent callers wait for one another; a fetch that was interrupted is
    redone, since the jars only count once a marker file lists them.

    Raises
    ------
    KafkaJarsError
        If Maven is missing or fails, for instance because Maven Central
        cannot be reached.
    """
    cache_dir = cache_dir if cache_dir is not None else kafka_cache_dir()
    libs_dir = cache_dir / "libs"
    if _jars_complete(libs_dir):
        return libs_dir

    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_dir / ".fetch.lock"):
        if not _jars_complete(libs_dir):
            _fetch_jars(cache_dir, libs_dir, mvn=mvn)
    return libs_dir


def _jars_complete(libs_dir: Path) -> bool:
    marker = libs_dir / _COMPLETE_MARKER
    if not marker.is_file():
        return False
    jar_names = marker.read_text(encoding="utf-8").split()
    return bool(jar_names) and all((libs_dir / name).is_file() for name in jar_names)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _fetch_jars(cache_dir: Path, libs_dir: Path, *, mvn: str) -> None:
    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise KafkaJarsError(
            f"cannot fetch Apache Kafka {KAFKA_VERSION}: {mvn!r} is not on PATH. "
            "Install Maven (Debian: apt-get install maven); the integration "
            "tests and `driftstream demo` need it to download the broker."
        )

    pom_path = cache_dir / "pom.xml"
    pom_path.write_text(_POM, encoding="utf-8")
    partial_dir = cache_dir / "libs.partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    command = [
        mvn_path,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom_path),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial_dir}",
        "-DincludeScope=runtime",
    ]
    logger.info("fetching kafka jars version=%s into=%s", KAFKA_VERSION, libs_dir)
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, errors="replace", check=False
    )
    jar_names = sorted(path.name for path in partial_dir.glob("*.jar"))
    if result.returncode != 0 or not jar_names:
        output = _last_lines(result.stdout + result.stderr, _LOG_EXCERPT_LINES)
        raise KafkaJarsError(
            f"could not fetch Apache Kafka {KAFKA_VERSION} with Maven: Maven "
            "Central could not be reached or the download failed, so the "
            "integration tests and `driftstream demo` cannot run. "
            f"`{' '.join(command)}` exited with {result.returncode}; "
            f"its last output:\n{output}"
        )

    (partial_dir / _COMPLETE_MARKER).write_text(
        "\n".join(jar_names) + "\n", encoding="utf-8"
    )
    shutil.rmtree(libs_dir, ignore_errors=True)
    partial_dir.rename(libs_dir)
    logger.info(
        "fetched kafka jars count=%d elapsed_s=%.1f",
        len(jar_names),
        time.monotonic() - started,
    )


# --------------------------------------------------------------------------
# The broker


class LocalKafka:
    """One Apache Kafka broker + controller on 127.0.0.1, for tests and demos.

    Parameters
    ----------
    port
        The broker's port; ``None`` or 0 picks a free one. The controller
        always gets a free port of its own.
    data_dir
        Where the broker keeps its data. ``None`` makes a temporary directory
        that :meth:`stop` removes (unless ``keep_data``); a given directory is
        never removed, and is reused as it is when it holds a formatted broker.
    keep_data
        Keep the temporary data directory after :meth:`stop`.
    start_timeout_s, stop_timeout_s
        How long to wait for the broker to serve, and for it to exit after
        SIGTERM before it is killed.
    heap_mb
        The broker's maximum Java heap.
    broker_properties
        ``server.properties`` entries that override the defaults of this
        module (the listeners and directories are always set by it).
    log_level
        The broker's log4j level in ``broker.log``.
    libs_dir
        Kafka's jars; by default :func:`ensure_kafka_jars` fetches them.
    sasl_ssl
        Also listen for ``SASL_SSL`` (SCRAM) clients; see
        :class:`SaslSslListener` and :attr:`sasl_ssl_bootstrap_servers`. Its
        users are added when the data directory is formatted.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        keep_data: bool = False,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
        heap_mb: int = 512,
        broker_properties: Mapping[str, str] | None = None,
        log_level: BrokerLogLevel = "INFO",
        libs_dir: Path | None = None,
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 picks one), got {port}")
        if log_level not in get_args(BrokerLogLevel):
            raise ValueError(
                f"log_level must be one of {', '.join(get_args(BrokerLogLevel))}, "
                f"got {log_level!r}"
            )
        self._requested_port = port or 0
        self._given_data_dir = data_dir
        self._keep_data = keep_data
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._heap_mb = heap_mb
        self._broker_properties = dict(broker_properties or {})
        self._log_level = log_level
        self._libs_dir = libs_dir
        self._sasl_ssl = sasl_ssl
        if sasl_ssl is not None:
            unknown = set(sasl_ssl.mechanisms) - {"SCRAM-SHA-256", "SCRAM-SHA-512"}
            if unknown or not sasl_ssl.mechanisms:
                raise ValueError(
                    "sasl_ssl.mechanisms must be SCRAM-SHA-256 and/or "
                    f"SCRAM-SHA-512, got {list(sasl_ssl.mechanisms)}"
                )

        self._data_dir: Path | None = None
        self._port = 0
        self._controller_port = 0
        self._sasl_ssl_port = 0
        self._cluster_id = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._class_archive: _ClassArchive | None = None
        self._lock = threading.Lock()

    # -- what callers read ---------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, for the clients' ``bootstrap.servers``."""
        if not self._port:
            raise KafkaSetupError("the broker has no address yet: call start()")
        return f"{HOST}:{self._port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"`` of the ``SASL_SSL`` listener."""
        if self._sasl_ssl is None:
            raise KafkaSetupError("this broker was started without sasl_ssl")
        if not self._sasl_ssl_port:
            raise KafkaSetupError("the broker has no address yet: call start()")
        return f"{HOST}:{self._sasl_ssl_port}"

    @property
    def port(self) -> int:
        """The broker's port (0 before the first start)."""
        return self._port

    @property
    def data_dir(self) -> Path:
        """The data directory (see the module docstring for its layout)."""
        if self._data_dir is None:
            raise KafkaSetupError("the broker has no data directory: call start()")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """``broker.log``: the broker's stdout and stderr."""
        return self.data_dir / "broker.log"

    @property
    def running(self) -> bool:
        """Whether the broker's Java process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- life cycle ----------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Format a data directory and start the broker; return once it serves.

        Raises
        ------
        BrokerStartError
            If the broker exits or does not serve within ``start_timeout_s``;
            the message holds the end of its log.
        KafkaJarsError
            If the jars have to be fetched and cannot be.
        """
        with self._lock:
            if self.running:
                raise KafkaSetupError(
                    f"the broker at {self.bootstrap_servers} is already running"
                )
            libs_dir = self._libs_dir or ensure_kafka_jars()
            try:
                self._prepare_data_dir(libs_dir)
                self._start_with_retries(libs_dir)
            except BaseException:
                self._stop_process(kill=True)
                self._remove_temporary_data(keep=self._keep_data)
                raise
        return self

    def stop(self, *, keep_data: bool | None = None) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its temporary data.

        Calling it again, or on a broker that never started, is harmless.
        ``keep_data`` overrides the constructor's choice for this call.
        """
        with self._lock:
            self._stop_process(kill=False)
            keep = self._keep_data if keep_data is None else keep_data
            self._remove_temporary_data(keep=keep)

    def restart(self, *, kill: bool = False) -> None:
        """Stop the broker and start it again on the same data and port.

        ``kill=True`` stops it with SIGKILL instead of a clean shutdown, the
        way a crash would.
        """
        with self._lock:
            if self._data_dir is None:
                raise KafkaSetupError("restart() needs a broker that was started")
            self._stop_process(kill=kill)
            libs_dir = self._libs_dir or ensure_kafka_jars()
            self._launch_and_wait(libs_dir)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Freeze the broker (SIGSTOP) for the block, then thaw it (SIGCONT).

        Its connections stay open and nothing answers: a broker in a long GC
        pause, or behind a network partition that drops packets.
        """
        with self._lock:
            if self._process is None or not self.running:
                raise KafkaSetupError("frozen() needs a running broker")
            process = self._process
            process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)

    # -- start-up steps ------------------------------------------------------

    def _prepare_data_dir(self, libs_dir: Path) -> None:
        if self._data_dir is None:
            if self._given_data_dir is not None:
                self._data_dir = self._given_data_dir
                self._data_dir.mkdir(parents=True, exist_ok=True)
            else:
                self._data_dir = Path(tempfile.mkdtemp(prefix="driftstream-kafka-"))

        self._cluster_id = _read_cluster_id(self._kafka_logs_dir)
        if not self._cluster_id:
            self._pick_ports()
            self._write_config_files()
            self._cluster_id = _random_cluster_id()
            self._format_storage(libs_dir)

    def _start_with_retries(self, libs_dir: Path) -> None:
        # Another process can take a port between our picking it and the
        # broker binding it; with ports we picked, pick again.
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            if attempt > 1 or not self._port:
                self._pick_ports()
            self._write_config_files()
            try:
                self._launch_and_wait(libs_dir)
                return
            except BrokerStartError as exc:
                if attempt == attempts or _BIND_ERROR not in str(exc):
                    raise
                logger.info("kafka port was taken, picking another port=%d", self._port)

    def _pick_ports(self) -> None:
        self._port, self._controller_port = _free_ports(2, first=self._requested_port)
        if self._sasl_ssl is not None:
            # Checked or picked on its own: _free_ports checks only the first.
            (self._sasl_ssl_port,) = _free_ports(1, first=self._sasl_ssl.port)

    @property
    def _kafka_logs_dir(self) -> Path:
        return self.data_dir / "kafka-logs"

    def _write_config_files(self) -> None:
        properties = {
            **_DEFAULT_BROKER_PROPERTIES,
            **self._broker_properties,
            "controller.quorum.voters": f"1@{HOST}:{self._controller_port}",
            "listeners": (
                f"PLAINTEXT://{HOST}:{self._port},"
                f"CONTROLLER://{HOST}:{self._controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self._port}",
            "log.dirs": str(self._kafka_logs_dir),
        }
        if self._sasl_ssl is not None:
            properties.update(self._sasl_ssl_properties(self._sasl_ssl))
        lines = [f"{key}={value}" for key, value in properties.items()]
        (self.data_dir / "server.properties").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )
        (self.data_dir / "log4j2.properties").write_text(
            _LOG4J2_PROPERTIES.format(level=self._log_level), encoding="utf-8"
        )

    def _sasl_ssl_properties(self, listener: SaslSslListener) -> dict[str, str]:
        address = f"SASL_SSL://{HOST}:{self._sasl_ssl_port}"
        prefix = "listener.name.sasl_ssl."
        properties = {
            "listeners": (
                f"PLAINTEXT://{HOST}:{self._port},{address},"
                f"CONTROLLER://{HOST}:{self._controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self._port},{address}",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "sasl.enabled.mechanisms": ",".join(listener.mechanisms),
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.certificate.chain": _pem_property(
                listener.certificate_chain
            ),
            f"{prefix}ssl.keystore.key": _pem_property(listener.private_key),
        }
        for mechanism in listener.mechanisms:
            properties[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        return properties

    def _scram_arguments(self) -> list[str]:
        if self._sasl_ssl is None:
            return []
        arguments = []
        for mechanism in self._sasl_ssl.mechanisms:
            for name, password in self._sasl_ssl.users.items():
                if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or any(
                    c in password for c in '",[]='
                ):
                    raise ValueError(
                        f"SCRAM user {name!r}: names must be [A-Za-z0-9_.-]+ and "
                        'passwords must not contain any of ",[]='
                    )
                credential = f"{mechanism}=[name={name},password={password}]"
                arguments += ["--add-scram", credential]
        return arguments

    def _format_storage(self, libs_dir: Path) -> None:
        command = [
            *self._java_command(libs_dir, jvm_opts=_TOOL_JVM_OPTS),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self._cluster_id,
            "--config",
            str(self.data_dir / "server.properties"),
            *self._scram_arguments(),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, errors="replace", check=False
        )
        if result.returncode != 0:
            output = _last_lines(result.stdout + result.stderr, _LOG_EXCERPT_LINES)
            raise BrokerStartError(
                f"formatting Kafka storage in {self._kafka_logs_dir} failed "
                f"with exit code {result.returncode}:\n{output}"
            )

    def _java_command(self, libs_dir: Path, *, jvm_opts: Sequence[str]) -> list[str]:
        return [
            _java_executable(),
            *jvm_opts,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            str(libs_dir / "*"),
        ]

    def _launch_and_wait(self, libs_dir: Path) -> None:
        self._class_archive = _ClassArchive(libs_dir, _java_executable())
        jvm_opts = (
            f"-Xms{min(128, self._heap_mb)}m",
            f"-Xmx{self._heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *self._class_archive.jvm_options(),
        )
        command = [
            *self._java_command(libs_dir, jvm_opts=jvm_opts),
            "kafka.Kafka",
            str(self.data_dir / "server.properties"),
        ]
        started = time.monotonic()
        with self.log_path.open("ab") as log_file:
            log_file.write(f"--- driftstream: starting {command}\n".encode())
            log_file.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self._stop_at_exit)

        try:
            self._wait_until_serving(self._process, started + self._start_timeout_s)
        except BaseException:
            self._stop_process(kill=True)
            raise
        logger.info(
            "kafka started bootstrap=%s pid=%d data_dir=%s elapsed_s=%.1f",
            self.bootstrap_servers,
            self._process.pid,
            self.data_dir,
            time.monotonic() - started,
        )

    def _wait_until_serving(
        self, process: subprocess.Popen[bytes], deadline: float
    ) -> None:
        admin: AdminClient | None = None
        while True:
            exit_code = process.poll()
            if exit_code is not None:
                raise BrokerStartError(
                    f"the Kafka broker for {self.bootstrap_servers} exited with "
                    f"code {exit_code} during start-up; its log (broker.log):\n"
                    f"{_log_excerpt(self.log_path)}"
                )

            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise BrokerStartError(
                    f"the Kafka broker for {self.bootstrap_servers} did not serve "
                    f"within {self._start_timeout_s:g} s (raise start_timeout_s "
                    f"on a slow machine); its log (broker.log):\n"
                    f"{_log_excerpt(self.log_path)}"
                )

            # Connecting first keeps librdkafka from logging refused connections.
            if _port_accepts(self._port):
                if admin is None:
                    admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
                if self._serves(admin, timeout_s=min(remaining_s, 2.0)):
                    return
            time.sleep(0.1)

    def _serves(self, admin: AdminClient, *, timeout_s: float) -> bool:
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        # Another process's broker on the same port would answer too.
        return bool(metadata.brokers) and metadata.cluster_id == self._cluster_id

    # -- shutdown ------------------------------------------------------------

    def _stop_process(self, *, kill: bool) -> None:
        process = self._process
        if process is None:
            return
        atexit.unregister(self._stop_at_exit)
        self._process = None
        class_archive, self._class_archive = self._class_archive, None
        if process.poll() is not None:
            if class_archive is not None:
                class_archive.discard()
            return

        started = time.monotonic()
        if not kill:
            process.terminate()
            try:
                process.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "kafka did not stop in time, killing pid=%d timeout_s=%g",
                    process.pid,
                    self._stop_timeout_s,
                )
                kill = True
        if kill:
            process.kill()
            process.wait()
        if class_archive is not None and kill:
            class_archive.discard()
        elif class_archive is not None:
            class_archive.keep()
        logger.info(
            "kafka stopped bootstrap=%s exit_code=%s elapsed_s=%.1f",
            self.bootstrap_servers,
            process.returncode,
            time.monotonic() - started,
        )

    def _remove_temporary_data(self, *, keep: bool) -> None:
        if self._data_dir is None or self._given_data_dir is not None or keep:
            return
        shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None

    def _stop_at_exit(self) -> None:
        self.stop()


class _ClassArchive:
    """A class-data-sharing archive of the broker's classes, kept beside the jars.

    With it the JVM starts the broker in about half the time. A broker started
    without one writes it when it exits after SIGTERM. The JVM silently ignores
    an archive made by another ``java`` or from other jars, so its name is tied
    to both, and a new archive replaces the old ones.
    """

    _PREFIX = "broker-classes-"

    def __init__(self, libs_dir: Path, java: str) -> None:
        real_java = Path(java).resolve()
        made_from = (
            f"{real_java}:{real_java.stat().st_mtime_ns}:"
            f"{libs_dir.resolve()}:{libs_dir.stat().st_mtime_ns}"
        )
        digest = hashlib.sha256(made_from.encode()).hexdigest()[:12]
        self.path = libs_dir.parent / f"{self._PREFIX}{digest}.jsa"
        self._dump_path: Path | None = None

    def jvm_options(self) -> list[str]:
        # CDS warns about every class it cannot archive; that is not news.
        if self.path.is_file():
            return [f"-XX:SharedArchiveFile={self.path}", "-Xlog:cds=off"]
        self._dump_path = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}")
        return [f"-XX:ArchiveClassesAtExit={self._dump_path}", "-Xlog:cds=off"]

    def keep(self) -> None:
        """After a clean exit: the dump is whole, put it in place of older ones."""
        if self._dump_path is None:
            return
        try:
            self._dump_path.replace(self.path)
            for stale in self.path.parent.glob(f"{self._PREFIX}*"):
                if stale != self.path:
                    stale.unlink(missing_ok=True)
        except OSError as exc:
            logger.info("kafka class archive not kept path=%s error=%s", self.path, exc)
        self._dump_path = None

    def discard(self) -> None:
        """After a kill or a crash: a dump may be cut short, drop it."""
        if self._dump_path is not None:
            self._dump_path.unlink(missing_ok=True)
            self._dump_path = None


# --------------------------------------------------------------------------
# Topics


def create_topics(
    bootstrap_servers: str,
    partitions_by_topic: Mapping[str, int],
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create topics and wait until every partition has a leader.

    ``config`` is applied to every topic (for instance
    ``{"cleanup.policy": "compact"}``).

    Raises
    ------
    KafkaSetupError
        If a topic cannot be created (it exists, a partition count is not
        positive, ...) or has no leaders within ``timeout_s``.
    """
    if not partitions_by_topic:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    new_topics = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        for name, partitions in partitions_by_topic.items()
    ]
    futures = admin.create_topics(
        new_topics, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaSetupError(
                f"could not create topic {name!r} with "
                f"{partitions_by_topic[name]} partitions on {bootstrap_servers}: "
                f"{exc.args[0].str()}"
            ) from exc

    deadline = time.monotonic() + timeout_s
    for name, partitions in partitions_by_topic.items():
        _wait_for_leaders(admin, name, partitions, deadline=deadline)


def _wait_for_leaders(
    admin: AdminClient, topic: str, partitions: int, *, deadline: float
) -> None:
    while True:
        try:
            metadata = admin.list_topics(topic=topic, timeout=5.0).topics[topic]
        except KafkaException as exc:
            raise KafkaSetupError(
                f"could not read the metadata of new topic {topic!r}: "
                f"{exc.args[0].str()}"
            ) from exc
        leaders = [p.leader for p in metadata.partitions.values()]
        if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
            return
        if time.monotonic() > deadline:
            raise KafkaSetupError(
                f"topic {topic!r} was created but its {partitions} partitions "
                f"have no leaders yet (leaders: {leaders})"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Helpers


def _java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerStartError(
            "cannot start Kafka: no `java` on PATH and no JAVA_HOME. Install a "
            "Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)."
        )
    return java


def _pem_property(path: Path) -> str:
    """A PEM file as one ``server.properties`` value (lines joined by ``\\n``)."""
    lines = path.read_text(encoding="ascii").strip().splitlines()
    return "\\n\\\n".join(line.strip() for line in lines)


def _random_cluster_id() -> str:
    """A cluster id in the form ``kafka-storage.sh random-uuid`` prints.

    That is a random UUID in unpadded URL-safe base64, never starting with
    ``-`` (it would read as an option); made here, it saves starting a JVM.
    """
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=")
        if not encoded.startswith(b"-"):
            return encoded.decode("ascii")


def _read_cluster_id(kafka_logs_dir: Path) -> str:
    meta_path = kafka_logs_dir / "meta.properties"
    if not meta_path.is_file():
        return ""
    for line in meta_path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return ""


def _free_ports(count: int, *, first: int = 0) -> list[int]:
    """Ports free on 127.0.0.1: ``first`` (checked) and ``count - 1`` picked ones."""
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            wanted = first if index == 0 else 0
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            # The JVM binds with SO_REUSEADDR, so a port in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, wanted))
            except OSError as exc:
                raise BrokerStartError(
                    f"port {wanted} on {HOST} is not free ({exc.strerror}); "
                    "choose another port, or 0 to pick a free one"
                ) from exc
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _last_lines(text: str, count: int) -> str:
    return "\n".join(_ANSI_ESCAPE.sub("", text).splitlines()[-count:])


_ERROR_LINE = re.compile(r"\] (ERROR|FATAL) |^Caused by: |^\S+(Exception|Error)\b")


def _log_excerpt(log_path: Path) -> str:
    """The broker's error lines, then the end of its log.

    Kafka logs a failed start-up's cause and then a page of shutdown chatter,
    so the tail alone rarely shows why.
    """
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {log_path}: {exc.strerror})"
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    tail = lines[-_LOG_EXCERPT_LINES:]
    parts = []
    if errors:
        parts.append("errors:\n" + "\n".join(errors[-_LOG_EXCERPT_LINES:]))
    parts.append("last lines:\n" + "\n".join(tail))
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.localkafka",
        description=f"A local single-node Apache Kafka {KAFKA_VERSION} broker.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser(
        "start",
        help="run a broker in the foreground until SIGINT or SIGTERM",
        description="Start a broker, print its bootstrap address on stdout once "
        "it serves, and stop it cleanly on SIGINT (Ctrl-C) or SIGTERM.",
    )
    start.add_argument(
        "--port", type=int, default=0, help="broker port (default: a free one)"
    )
    start.add_argument(
        "--data-dir",
        type=Path,
        help="keep data here and reuse it next time (default: a temporary "
        "directory, removed on exit)",
    )
    start.add_argument(
        "--start-timeout-s", type=float, default=60.0, help="default: %(default)s"
    )

    commands.add_parser(
        "fetch",
        help="only download the Kafka jars with Maven",
        description="Download the Kafka jars into the cache (DRIFTSTREAM_CACHE_DIR "
        "or ~/.cache/driftstream) and print their directory.",
    )
    args = parser.parse_args(argv)
    if args.command == "start" and not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535 (0 picks one), got {args.port}")
    return args


def _run_foreground(kafka: LocalKafka, out: IO[str]) -> int:
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    with kafka:
        print(kafka.bootstrap_servers, file=out, flush=True)
        while not stop_requested.wait(timeout=0.5):
            if not kafka.running:
                logger.error(
                    "kafka exited on its own; from %s:\n%s",
                    kafka.log_path,
                    _log_excerpt(kafka.log_path),
                )
                return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m streamer.localkafka``."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        if args.command == "fetch":
            print(ensure_kafka_jars(), flush=True)
            return 0
        kafka = LocalKafka(
            port=args.port,
            data_dir=args.data_dir,
            start_timeout_s=args.start_timeout_s,
        )
        return _run_foreground(kafka, sys.stdout)
    except KafkaSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
