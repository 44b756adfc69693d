"""The configuration: frozen pydantic models, loaded from YAML plus environment.

Every key can be overridden by an environment variable named
``DRIFTSTREAM__<SECTION>__<KEY>`` (double underscores between levels, case
ignored), for example ``DRIFTSTREAM__KAFKA__BOOTSTRAP_SERVERS=broker:9092``.
An override's value is read as a YAML scalar or flow collection, so
``DRIFTSTREAM__WINDOWS__LENGTHS='[5m, 1h]'`` sets a list. Overrides win over
the file; the file wins over the defaults documented here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streamer.errors import ConfigError
from streamer.loss import DEFAULT_EPS
from streamer.windows import WindowSpec, parse_window

ENV_PREFIX = "DRIFTSTREAM__"

SECRET_SETTING = re.compile(r"password|secret|\.pem$|jaas", re.IGNORECASE)
"""``kafka.extra`` settings whose values are never shown (check-config, errors)."""

CLEAR_SECRET = re.compile(r"password|secret|jaas|^ssl\.key\.pem$", re.IGNORECASE)
"""``kafka.extra`` settings a configuration file may not hold in clear."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaConfig(_Section):
    """Where to read from, and how."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated."
    )
    group_id: str = Field(
        "driftstream",
        description="Consumer group. Replicas in one group split the partitions.",
    )
    predictions_topic: str = Field(
        "predictions", description="Topic the models write predictions to."
    )
    outcomes_topic: str = Field(
        "outcomes", description="Topic the outcomes (ground truth) arrive on."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where a partition with no committed offset starts.",
    )
    session_timeout_ms: int = Field(
        10_000, gt=0, description="Consumer group session timeout, milliseconds."
    )
    consume_batch_size: int = Field(
        10_000, gt=0, description="Most messages taken per `consume()` call."
    )
    consume_timeout_s: float = Field(
        0.5, gt=0, description="Longest wait of one `consume()` call, seconds."
    )
    statistics_interval_ms: int = Field(
        2_000,
        gt=0,
        description="How often librdkafka reports consumer lag, milliseconds.",
    )
    dead_letter_topic: str | None = Field(
        None,
        description=(
            "Topic that gets a copy of every invalid message, with the reason "
            "in its headers; unset: no copies."
        ),
    )
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description=(
            "Further librdkafka consumer settings, passed as they are "
            "(for example `security.protocol`)."
        ),
    )

    secret_files: dict[str, Path] = Field(
        default_factory=dict,
        description=(
            "librdkafka settings read from files, such as `sasl.password: "
            "/run/secrets/kafka-password` (a mounted Secret): the file's text, "
            "less a trailing newline, is the value; read at start, never shown."
        ),
    )

    @model_validator(mode="after")
    def _secret_files_readable(self) -> Self:
        for key, path in self.secret_files.items():
            _read_secret(key, path)
        both = sorted(set(self.secret_files) & set(self.extra))
        if both:
            raise ValueError(
                f"{both} set in both kafka.extra and kafka.secret_files; keep one"
            )
        return self

    def librdkafka_extra(self) -> dict[str, str | int | float | bool]:
        """``extra`` with the ``secret_files`` read in.

        Raises
        ------
        ConfigError
            A secret file can no longer be read.
        """
        settings: dict[str, str | int | float | bool] = dict(self.extra)
        for key, path in self.secret_files.items():
            try:
                settings[key] = _read_secret(key, path)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        return settings

    def client_settings(self) -> dict[str, str | int | float | bool]:
        """What every client shares: the servers and ``extra``'s security keys."""
        shared = {
            key: value
            for key, value in self.librdkafka_extra().items()
            if key.startswith(("security.", "sasl.", "ssl.", "client.", "socket."))
        }
        return {"bootstrap.servers": self.bootstrap_servers, **shared}


def _read_secret(key: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ValueError(
            f"kafka.secret_files.{key}: cannot read {path}: {reason}"
        ) from None
    return text[:-1] if text.endswith("\n") else text


class FieldsConfig(_Section):
    """The JSON field names of the two message contracts."""

    event_id: str = Field("event_id", description="Event id (both topics).")
    model: str = Field("model", description="Model name (predictions).")
    model_version: str = Field(
        "model_version", description="Model version, optional (predictions)."
    )
    timestamp: str = Field(
        "timestamp",
        description="ISO-8601 or epoch milliseconds; absent -> the Kafka timestamp.",
    )
    probability: str = Field(
        "probability", description="Binary: probability of the positive class."
    )
    probabilities: str = Field(
        "probabilities", description="Multiclass: object class -> probability."
    )
    label: str = Field("label", description="The outcome's label (outcomes).")
    segment: str = Field(
        "segment",
        description="Object of segment values (predictions); see `segments`.",
    )


class ThresholdsConfig(_Section):
    """Alert thresholds, exported per model as `driftstream_threshold_*`.

    The shipped alert rules compare each model's series with these, so one
    rule serves every model. A threshold set to null is not exported, and its
    alert stays silent for the model.
    """

    log_loss: float | None = Field(
        None,
        gt=0,
        description="Mean log loss (nats, 1h window) above which a model pages.",
    )
    log_loss_ratio: float | None = Field(
        1.25,
        gt=0,
        description="Window mean log loss over the baseline's, for the drift alert.",
    )
    log_loss_zscore: float | None = Field(
        5.0,
        gt=0,
        description="Z-score of the window mean, for the drift alert.",
    )
    psi: float | None = Field(
        0.25,
        gt=0,
        description="PSI of predicted probabilities against the reference.",
    )
    label_coverage: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="Least share of predictions that should get a label.",
    )


THRESHOLD_NAMES: tuple[str, ...] = tuple(ThresholdsConfig.model_fields)


class DriftConfig(_Section):
    """Baselines, the change detector and the reference histogram.

    A series (model, version, segment) in a partition learns its reference
    from its first `reference_events` joined events (baseline mean and
    standard deviation of the loss, unless configured under `models`, and the
    detector's threshold) and its first `reference_predictions` predictions
    (the probability histogram PSI compares with).
    """

    reference_events: int = Field(
        10_000,
        ge=1_000,
        description="Joined events per series and partition learned as the reference.",
    )
    reference_predictions: int = Field(
        10_000,
        ge=100,
        description="Predictions per series and partition in the PSI reference.",
    )
    arl0_events: float = Field(
        1e6,
        ge=1e3,
        description="Target mean events between false alarms of the change detector.",
    )
    shift: float = Field(
        0.2,
        gt=0,
        description="Relative rise of the mean loss the detector is tuned for.",
    )
    calibration_events: int = Field(
        200_000,
        ge=100_000,
        description="Simulated events when calibrating the detector's threshold.",
    )
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)


class ModelConfig(_Section):
    """Per-model settings, keyed by model name under `models`."""

    positive_label: str | None = Field(
        None,
        description=(
            "Binary models: the label value meaning the positive class, besides "
            "1 and true."
        ),
    )
    negative_label: str | None = Field(
        None,
        description=(
            "Binary models: the label value meaning the negative class, besides "
            "0 and false."
        ),
    )
    baseline_log_loss: float | None = Field(
        None,
        ge=0,
        description=(
            "The healthy model's mean log loss (nats); with baseline_log_loss_std "
            "it replaces the learned baseline."
        ),
    )
    baseline_log_loss_std: float | None = Field(
        None, gt=0, description="The healthy model's per-event loss deviation."
    )
    thresholds: dict[str, float | None] = Field(
        default_factory=dict,
        description=(
            "Overrides of drift.thresholds for this model; a key set to null "
            "switches that one off."
        ),
    )

    @model_validator(mode="after")
    def _baseline_whole(self) -> Self:
        if (self.baseline_log_loss is None) != (self.baseline_log_loss_std is None):
            raise ValueError(
                "set baseline_log_loss and baseline_log_loss_std together, or neither"
            )
        unknown = sorted(set(self.thresholds) - set(THRESHOLD_NAMES))
        if unknown:
            raise ValueError(
                f"unknown thresholds {unknown}; known: {list(THRESHOLD_NAMES)}"
            )
        for name, value in self.thresholds.items():
            if value is not None and not value > 0:
                raise ValueError(f"threshold {name} must be > 0, got {value}")
        return self


class SegmentsConfig(_Section):
    """Per-segment windows, with a bounded number of values per key."""

    keys: tuple[str, ...] = Field(
        (),
        description=(
            "Keys of the prediction's segment object to keep windows by (for "
            "example [country]); each becomes a label of the window series."
        ),
    )
    max_values: int = Field(
        20,
        gt=0,
        le=1000,
        description=(
            "Per key without an allow-list: the first values seen are kept, "
            "later new ones are exported as `other` (and counted)."
        ),
    )
    allow: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Per key, the only values kept; everything else is `other`.",
    )

    @model_validator(mode="after")
    def _allow_names_keys(self) -> Self:
        unknown = sorted(set(self.allow) - set(self.keys))
        if unknown:
            raise ValueError(
                f"segments.allow names {unknown}, which are not in segments.keys "
                f"{list(self.keys)}"
            )
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"segments.keys repeat: {list(self.keys)}")
        return self


class JoinConfig(_Section):
    """How predictions and outcomes are paired."""

    prediction_ttl_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long a prediction waits for its outcome, seconds.",
    )
    outcome_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="How long an outcome that came first waits, seconds.",
    )
    max_pending: int = Field(
        1_000_000,
        gt=0,
        description=(
            "Most pending entries per side and per partition; the oldest is "
            "evicted (and counted) past it."
        ),
    )


class ScoringConfig(_Section):
    """How a joined event is scored."""

    eps: float = Field(
        DEFAULT_EPS,
        gt=0,
        lt=0.5,
        description=(
            "Probabilities are clipped to [eps, 1 - eps]; the default is "
            "scikit-learn 1.9's (float64 machine epsilon)."
        ),
    )
    max_future_skew_s: float = Field(
        300.0,
        ge=0,
        description=(
            "Records stamped further ahead of the wall clock are invalid "
            "(timestamp_in_future), so a skewed clock cannot move the join's "
            "clock or the windows into the future."
        ),
    )
    probability_sum_tolerance: float = Field(
        1e-6,
        gt=0,
        lt=0.5,
        description="Multiclass probabilities must sum to 1 within this.",
    )


class WindowsConfig(_Section):
    """The rolling windows kept per model and version."""

    lengths: tuple[str, ...] = Field(
        ("5m", "1h", "24h"),
        min_length=1,
        description="Window lengths: a number and s, m, h or d.",
    )
    buckets: int = Field(
        60, gt=0, description="Buckets per window: its time resolution."
    )
    min_events: int = Field(
        1, gt=0, description="A window with fewer events reports no mean."
    )
    clock: Literal["wall", "event"] = Field(
        "wall",
        description=(
            "Where windows end: the wall clock (live) or the newest event "
            "time seen (replay)."
        ),
    )

    @field_validator("lengths")
    @classmethod
    def _lengths_parse(cls, lengths: tuple[str, ...]) -> tuple[str, ...]:
        durations = [parse_window(text, buckets=1).length_ms for text in lengths]
        if len(set(durations)) != len(durations):
            raise ValueError(f"window lengths repeat: {list(lengths)}")
        return lengths

    @model_validator(mode="after")
    def _buckets_divide(self) -> Self:
        try:
            self.specs()
        except ValueError as exc:
            raise ValueError(f"windows.lengths and windows.buckets: {exc}") from exc
        return self

    def specs(self) -> tuple[WindowSpec, ...]:
        return tuple(parse_window(text, buckets=self.buckets) for text in self.lengths)


class MetricsConfig(_Section):
    """The HTTP endpoint and what it exports."""

    host: str = Field("0.0.0.0", description="Address /metrics listens on.")
    port: int = Field(
        9308, ge=0, le=65535, description="Port of /metrics (0 picks a free one)."
    )
    max_models: int = Field(
        200,
        gt=0,
        description=(
            "Most (model, version) pairs tracked; records of further ones are "
            "counted, not exported."
        ),
    )
    ready_max_lag: int = Field(
        10_000,
        ge=0,
        description="/readyz fails while any partition lags more, messages.",
    )

    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain: serve over HTTPS (with tls_key_file).",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file."
    )
    basic_auth_users: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "user -> bcrypt hash (as `htpasswd -nbB` or Prometheus' web config "
            "make them): /metrics then needs basic auth; /healthz and /readyz "
            "stay open for probes."
        ),
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "metrics.tls_cert_file and metrics.tls_key_file go together: set "
                "both for HTTPS, or neither"
            )
        for user, hashed in self.basic_auth_users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(
                    f"metrics.basic_auth_users[{user!r}] is not a bcrypt hash "
                    "(it must start with $2a$, $2b$ or $2y$); make one with "
                    "`htpasswd -nbB USER PASSWORD`"
                )
        return self


class StateConfig(_Section):
    """Where per-partition state is checkpointed, and how often."""

    store: Literal["kafka", "directory", "none"] = Field(
        "kafka",
        description=(
            "kafka: a compacted topic; directory: local files (development); "
            "none: no checkpoints (state is lost on restart)."
        ),
    )
    topic: str | None = Field(
        None,
        description=(
            "Checkpoint topic (store kafka); default `<group_id>-checkpoints`. "
            "Created compacted, with the input partition count, if missing."
        ),
    )
    topic_replication_factor: int = Field(
        -1,
        description="Replication of a created checkpoint topic; -1: broker default.",
    )
    directory: Path = Field(
        Path("driftstream-state"),
        description="Checkpoint directory (store directory).",
    )
    checkpoint_interval_s: float = Field(
        30.0, gt=0, description="Seconds between checkpoints of every partition."
    )
    chunk_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description=(
            "Largest checkpoint message (store kafka); keep it under the "
            "topic's max.message.bytes."
        ),
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM, longest wait for the final checkpoint and commit.",
    )

    def topic_name(self, group_id: str) -> str:
        return self.topic or f"{group_id}-checkpoints"


class Config(_Section):
    """The whole configuration of `driftstream run`."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    join: JoinConfig = Field(default_factory=JoinConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)

    def thresholds_for(self, model: str) -> dict[str, float]:
        """The thresholds exported for ``model``: its overrides, else the defaults."""
        chosen: dict[str, float | None] = self.drift.thresholds.model_dump()
        override = self.models.get(model)
        if override is not None:
            chosen.update(override.thresholds)
        return {name: value for name, value in chosen.items() if value is not None}


def load_config(
    path: Path | None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read ``path`` (YAML; None for defaults only) and apply the environment.

    Raises
    ------
    ConfigError
        The file is unreadable or not YAML, or a value is invalid; the
        message names the key and says what was expected.
    """
    raw = _read_yaml(path) if path is not None else {}
    if path is not None:
        _refuse_clear_secrets(raw, path)
    env = os.environ if environ is None else environ
    merged = _apply_env(raw, env)
    source = str(path) if path is not None else "defaults"
    if any(name.upper().startswith(ENV_PREFIX) for name in env):
        source += f" and {ENV_PREFIX}* environment variables"
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from exc


def _refuse_clear_secrets(raw: dict[str, Any], path: Path) -> None:
    kafka = raw.get("kafka")
    extra = kafka.get("extra") if isinstance(kafka, dict) else None
    if not isinstance(extra, dict):
        return
    found = sorted(str(key) for key in extra if CLEAR_SECRET.search(str(key)))
    if found:
        key = found[0]
        raise ConfigError(
            f"config file {path} holds the secret kafka.extra.{key} in clear; "
            f"move it to the environment ({ENV_PREFIX}KAFKA__EXTRA__{key.upper()}) "
            f"or to a file named under kafka.secret_files ({key}: /path/to/file)"
        )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top, "
            f"not {type(data).__name__}"
        )
    return data


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    merged = _deep_copy(raw)
    for name, text in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key part")
        _set_path(merged, path, _parse_env_value(name, text))
    return merged


def _parse_env_value(name: str, text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"environment variable {name}: not a YAML value") from exc


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _deep_copy(value) if isinstance(value, dict) else value
        for key, value in tree.items()
    }


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        given = error.get("input")
        if any(SECRET_SETTING.search(str(part)) for part in error["loc"]):
            given = "***"
        context = [] if isinstance(given, dict) else [f"given: {given!r}"]
        if len(error["loc"]) >= 2:
            path = "__".join(str(part) for part in error["loc"]).upper()
            context.append(f"env override: {ENV_PREFIX}{path}")
        suffix = f" ({'; '.join(context)})" if context else ""
        lines.append(f"  {key}: {error['msg']}{suffix}")
    return "\n".join(lines)


def reference_markdown() -> str:
    """The configuration reference as a Markdown table (the README embeds it)."""
    lines = [
        "| key | default | environment variable | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, field_info in Config.model_fields.items():
        section = field_info.annotation
        if name == "models":
            for key, info in ModelConfig.model_fields.items():
                env = f"{ENV_PREFIX}MODELS__<NAME>__{key}".upper()
                shown = "{}" if key == "thresholds" else "unset"
                lines.append(
                    f"| `models.<name>.{key}` | `{shown}` | `{env}` "
                    f"| {info.description} |"
                )
            continue
        assert isinstance(section, type) and issubclass(section, BaseModel)
        lines.extend(_reference_rows(name, section))
    return "\n".join(lines) + "\n"


def _reference_rows(prefix: str, section: type[BaseModel]) -> list[str]:
    rows = []
    for key, info in section.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            rows.extend(_reference_rows(f"{prefix}.{key}", nested))
            continue
        default = info.get_default(call_default_factory=True)
        env = f"{ENV_PREFIX}{prefix.replace('.', '__')}__{key}".upper()
        rows.append(
            f"| `{prefix}.{key}` | `{_show_default(default)}` | `{env}` "
            f"| {info.description} |"
        )
    return rows


def _show_default(default: object) -> str:
    if isinstance(default, tuple):
        return "[" + ", ".join(str(item) for item in default) + "]"
    if isinstance(default, Path):
        return str(default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default) if not isinstance(default, dict) else "{}"
