"""Kafka bytes -> validated predictions and outcomes, or a counted reason.

The decoder never raises on input: every message becomes a record or an
:class:`Invalid` reason, so one bad producer cannot stop the consumer.

Decisions the design leaves open, made here:

- JSON is parsed with orjson, which follows RFC 8259 strictly: the bare
  ``NaN`` and ``Infinity`` tokens that Python's ``json`` module accepts, and
  numbers that overflow a double, are ``invalid_json``.
- A timestamp is ISO-8601 (a missing offset means UTC) or epoch milliseconds
  as a JSON number; absent or null means the Kafka message timestamp.
- ``event_id`` may be a string or an integer; absent or null means the Kafka
  key decoded as UTF-8.
- ``model_version`` may be a string or a number; absent means ``""``.
- Binary labels are decided at the join, where the model is known
  (:func:`resolve_binary_label`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from streamer.config import FieldsConfig
from streamer.events import Label, ModelKey, Outcome, Prediction


class Invalid(StrEnum):
    """Why a message was not used: the ``reason`` label of the invalid counter."""

    TOMBSTONE = "tombstone"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_EVENT_ID = "missing_event_id"
    MISSING_MODEL = "missing_model"
    MISSING_PROBABILITY = "missing_probability"
    BAD_PROBABILITY = "bad_probability"
    PROBABILITIES_NOT_NORMALISED = "probabilities_not_normalised"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    MODEL_NAME_TOO_LONG = "model_name_too_long"
    MISSING_LABEL = "missing_label"
    BAD_LABEL = "bad_label"
    UNKNOWN_CLASS = "unknown_class"


class _Reject(Exception):
    """Internal: carries the reason out of nested field checks."""

    def __init__(self, reason: Invalid) -> None:
        self.reason = reason


MAX_SHARED_MODEL_KEYS = 4096
"""Model keys a ``model_keys`` table shares at most; others stay copies."""


def decode_prediction(
    value: bytes | None,
    key: bytes | None,
    kafka_timestamp_ms: int | None,
    *,
    fields: FieldsConfig,
    sum_tolerance: float,
    segment_keys: tuple[str, ...] = (),
    model_keys: dict[ModelKey, ModelKey] | None = None,
) -> Prediction | Invalid:
    """Decode one message of the predictions topic.

    ``model_keys``, if given, makes equal model keys one object (each pending
    prediction then holds no copy of its model's name and version); it keeps
    at most :data:`MAX_SHARED_MODEL_KEYS` of them.
    """
    try:
        obj = _load_object(value)
        event_id = _event_id(obj.get(fields.event_id), key)
        model = ModelKey(
            model=_model_name(obj.get(fields.model)),
            version=_version(obj.get(fields.model_version)),
        )
        if model_keys is not None:
            shared = model_keys.get(model)
            if shared is not None:
                model = shared
            elif len(model_keys) < MAX_SHARED_MODEL_KEYS:
                model_keys[model] = model
        timestamp_ms = _timestamp(obj.get(fields.timestamp), kafka_timestamp_ms)
        segment = _segment(obj.get(fields.segment), segment_keys)
        if fields.probabilities in obj:
            classes, probabilities = _distribution(
                obj[fields.probabilities], sum_tolerance
            )
            return Prediction(
                event_id, model, timestamp_ms, None, classes, probabilities, segment
            )
        probability = _probability(obj.get(fields.probability))
        return Prediction(event_id, model, timestamp_ms, probability, segment=segment)
    except _Reject as reject:
        return reject.reason


def decode_outcome(
    value: bytes | None,
    key: bytes | None,
    kafka_timestamp_ms: int | None,
    *,
    fields: FieldsConfig,
) -> Outcome | Invalid:
    """Decode one message of the outcomes topic."""
    try:
        obj = _load_object(value)
        event_id = _event_id(obj.get(fields.event_id), key)
        label = _label(obj.get(fields.label))
        timestamp_ms = _timestamp(obj.get(fields.timestamp), kafka_timestamp_ms)
        return Outcome(event_id, label, timestamp_ms)
    except _Reject as reject:
        return reject.reason


def resolve_binary_label(
    label: Label, *, positive: str | None, negative: str | None
) -> bool | None:
    """The positive-class truth of ``label``, or None if it is not binary.

    Accepted: ``1``/``0``, ``true``/``false`` (JSON booleans or those strings,
    case ignored), ``"1"``/``"0"``, and the model's configured positive and
    negative label values.

    >>> resolve_binary_label("fraud", positive="fraud", negative="legit")
    True
    >>> resolve_binary_label(2, positive=None, negative=None) is None
    True
    """
    if isinstance(label, bool):
        return label
    if isinstance(label, int):
        return {1: True, 0: False}.get(label)
    if positive is not None and label == positive:
        return True
    if negative is not None and label == negative:
        return False
    return {"1": True, "true": True, "0": False, "false": False}.get(label.lower())


def _load_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise _Reject(Invalid.TOMBSTONE)
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Reject(_json_failure(value)) from exc
    if not isinstance(obj, dict):
        raise _Reject(Invalid.NOT_AN_OBJECT)
    return obj


def _json_failure(value: bytes) -> Invalid:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return Invalid.NOT_UTF8
    return Invalid.INVALID_JSON


def _event_id(raw: object, key: bytes | None) -> str:
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if raw is not None:
        raise _Reject(Invalid.MISSING_EVENT_ID)
    if not key:
        raise _Reject(Invalid.MISSING_EVENT_ID)
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(Invalid.NOT_UTF8) from exc


OTHER_SEGMENT = "other"
"""The segment value everything outside a key's budget or allow-list becomes."""

MAX_MODEL_NAME_LENGTH = 128
"""Longest model name or version: both become label values on every series."""


def _model_name(raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise _Reject(Invalid.MISSING_MODEL)
    if len(raw) > MAX_MODEL_NAME_LENGTH:
        raise _Reject(Invalid.MODEL_NAME_TOO_LONG)
    return raw


def _version(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return str(raw)
    if not isinstance(raw, str):
        raise _Reject(Invalid.MISSING_MODEL)
    if len(raw) > MAX_MODEL_NAME_LENGTH:
        raise _Reject(Invalid.MODEL_NAME_TOO_LONG)
    return raw


MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: later (or negative) timestamps are ``bad_timestamp``."""


def _timestamp(raw: object, kafka_timestamp_ms: int | None) -> int:
    timestamp_ms = _timestamp_unchecked(raw, kafka_timestamp_ms)
    if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise _Reject(Invalid.BAD_TIMESTAMP)
    return timestamp_ms


def _timestamp_unchecked(raw: object, kafka_timestamp_ms: int | None) -> int:
    if raw is None:
        if kafka_timestamp_ms is None or kafka_timestamp_ms < 0:
            raise _Reject(Invalid.BAD_TIMESTAMP)
        return kafka_timestamp_ms
    if isinstance(raw, bool):
        raise _Reject(Invalid.BAD_TIMESTAMP)
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw) or raw < 0:
            raise _Reject(Invalid.BAD_TIMESTAMP)
        return int(raw)
    if isinstance(raw, str):
        return _iso_timestamp(raw)
    raise _Reject(Invalid.BAD_TIMESTAMP)


ISO_DATE_ONLY = re.compile(r"\d{4}-?(?:\d{2}-?\d{2}|W\d{2}(?:-?\d)?)")
"""A date with no time. Anything longer must separate date and time with T or
a space: Python 3.11's ``fromisoformat`` reads ``20230808120000Z`` as another
instant (20:00), so such strings are refused rather than misread."""


def _iso_timestamp(text: str) -> int:
    if ISO_DATE_ONLY.fullmatch(text) is None and not re.search(r"[Tt ]", text):
        raise _Reject(Invalid.BAD_TIMESTAMP)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _Reject(Invalid.BAD_TIMESTAMP) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return round(parsed.timestamp() * 1000)
    except (OverflowError, ValueError) as exc:
        raise _Reject(Invalid.BAD_TIMESTAMP) from exc


def _probability(raw: object) -> float:
    if raw is None:
        raise _Reject(Invalid.MISSING_PROBABILITY)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _Reject(Invalid.BAD_PROBABILITY)
    probability = float(raw)
    if not 0.0 <= probability <= 1.0:
        raise _Reject(Invalid.BAD_PROBABILITY)
    return probability


def _distribution(
    raw: object, sum_tolerance: float
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    if not isinstance(raw, dict) or len(raw) < 2:
        raise _Reject(Invalid.BAD_PROBABILITY)
    classes = tuple(sorted(raw))
    if any(raw[name] is None for name in classes):
        raise _Reject(Invalid.BAD_PROBABILITY)
    probabilities = tuple(_probability(raw[name]) for name in classes)
    if abs(math.fsum(probabilities) - 1.0) > sum_tolerance:
        raise _Reject(Invalid.PROBABILITIES_NOT_NORMALISED)
    return classes, probabilities


def _segment(raw: object, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The values of ``keys``; a missing, null or non-scalar value is ``""``."""
    if not keys:
        return ()
    found = raw if isinstance(raw, dict) else {}
    return tuple(_segment_value(found.get(key)) for key in keys)


def _segment_value(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (str, int, float)):
        text = str(raw)
        return text if len(text) <= MAX_MODEL_NAME_LENGTH else OTHER_SEGMENT
    return ""


def _label(raw: object) -> Label:
    if raw is None:
        raise _Reject(Invalid.MISSING_LABEL)
    if isinstance(raw, (bool, int, str)):
        return raw
    raise _Reject(Invalid.BAD_LABEL)
