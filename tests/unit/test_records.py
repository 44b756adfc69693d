"""The decoder: every input is a record or a named reason, never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.config import FieldsConfig
from streamer.events import ModelKey, Outcome, Prediction
from streamer.records import (
    Invalid,
    decode_outcome,
    decode_prediction,
    resolve_binary_label,
)

FIELDS = FieldsConfig()
KAFKA_TS = 1_764_583_200_000  # 2025-12-01T10:00:00Z


def _prediction(value: bytes | None, key: bytes | None = b"k-1") -> object:
    return decode_prediction(value, key, KAFKA_TS, fields=FIELDS, sum_tolerance=1e-6)


def _outcome(value: bytes | None, key: bytes | None = b"k-1") -> object:
    return decode_outcome(value, key, KAFKA_TS, fields=FIELDS)


def test_binary_prediction_with_iso_timestamp() -> None:
    value = json.dumps(
        {"event_id": "e-1", "model": "fraud", "model_version": "7",
         "timestamp": "2026-12-01T10:00:00Z", "probability": 0.93,
         "segment": {"country": "DE"}}
    ).encode()  # fmt: skip
    assert _prediction(value) == Prediction(
        "e-1", ModelKey("fraud", "7"), 1_764_583_200_000 + 365 * 86_400_000, 0.93
    )


def test_multiclass_prediction_sorts_classes() -> None:
    value = json.dumps(
        {"event_id": "e-2", "model": "intent", "timestamp": 1_700_000_000_123,
         "probabilities": {"upgrade": 0.25, "billing": 0.5, "cancel": 0.25}}
    ).encode()  # fmt: skip
    decoded = _prediction(value)
    assert decoded == Prediction(
        "e-2",
        ModelKey("intent", ""),
        1_700_000_000_123,
        None,
        ("billing", "cancel", "upgrade"),
        (0.5, 0.25, 0.25),
    )


def test_fallbacks_to_kafka_key_and_timestamp() -> None:
    value = b'{"model": "fraud", "model_version": 3, "probability": 1}'
    assert _prediction(value, key=b"from-key") == Prediction(
        "from-key", ModelKey("fraud", "3"), KAFKA_TS, 1.0
    )
    assert _outcome(b'{"label": true}', key=b"from-key") == Outcome(
        "from-key", True, KAFKA_TS
    )


def test_naive_iso_timestamp_is_utc() -> None:
    value = b'{"event_id": "a", "label": 0, "timestamp": "2026-12-01T10:00:00"}'
    assert _outcome(value) == Outcome("a", 0, 1_764_583_200_000 + 365 * 86_400_000)


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (None, b"k", Invalid.TOMBSTONE),
        (b"\xff\xfe", b"k", Invalid.NOT_UTF8),
        (b"{", b"k", Invalid.INVALID_JSON),
        (b'{"event_id": "a", "model": "m", "probability": NaN}', b"k",
         Invalid.INVALID_JSON),
        (b'{"event_id": "a", "model": "m", "probability": Infinity}', b"k",
         Invalid.INVALID_JSON),
        (b'{"event_id": "a", "model": "m", "probability": 1e999}', b"k",
         Invalid.INVALID_JSON),
        (b'"just a string"', b"k", Invalid.NOT_AN_OBJECT),
        (b'{"model": "m", "probability": 0.1}', None, Invalid.MISSING_EVENT_ID),
        (b'{"model": "m", "probability": 0.1}', b"\xff", Invalid.NOT_UTF8),
        (b'{"event_id": ["a"], "model": "m", "probability": 0.1}', b"k",
         Invalid.MISSING_EVENT_ID),
        (b'{"event_id": "a", "probability": 0.1}', b"k", Invalid.MISSING_MODEL),
        (b'{"event_id": "a", "model": ""}', b"k", Invalid.MISSING_MODEL),
        (b'{"event_id": "a", "model": "m"}', b"k", Invalid.MISSING_PROBABILITY),
        (b'{"event_id": "a", "model": "m", "probability": -0.01}', b"k",
         Invalid.BAD_PROBABILITY),
        (b'{"event_id": "a", "model": "m", "probability": 1.0001}', b"k",
         Invalid.BAD_PROBABILITY),
        (b'{"event_id": "a", "model": "m", "probability": true}', b"k",
         Invalid.BAD_PROBABILITY),
        (b'{"event_id": "a", "model": "m", "probabilities": {"x": 1.0}}', b"k",
         Invalid.BAD_PROBABILITY),
        (b'{"event_id": "a", "model": "m", "probabilities": {"x": 0.6, "y": 0.6}}',
         b"k", Invalid.PROBABILITIES_NOT_NORMALISED),
        (b'{"event_id": "a", "model": "m", "probabilities": {"x": 2, "y": -1}}',
         b"k", Invalid.BAD_PROBABILITY),
        (b'{"event_id": "a", "model": "m", "probability": 0.1, "timestamp": "x"}',
         b"k", Invalid.BAD_TIMESTAMP),
        (b'{"event_id": "a", "model": "m", "probability": 0.1, "timestamp": -5}',
         b"k", Invalid.BAD_TIMESTAMP),
        (b'{"event_id": "a", "model": "m", "probability": 0.1, "timestamp": {}}',
         b"k", Invalid.BAD_TIMESTAMP),
    ],
)  # fmt: skip
def test_invalid_predictions_name_their_reason(
    value: bytes | None, key: bytes | None, reason: Invalid
) -> None:
    assert _prediction(value, key) is reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_id": "a"}', Invalid.MISSING_LABEL),
        (b'{"event_id": "a", "label": null}', Invalid.MISSING_LABEL),
        (b'{"event_id": "a", "label": 0.5}', Invalid.BAD_LABEL),
        (b'{"event_id": "a", "label": {"x": 1}}', Invalid.BAD_LABEL),
        (b"", Invalid.INVALID_JSON),
        (None, Invalid.TOMBSTONE),
    ],
)
def test_invalid_outcomes_name_their_reason(
    value: bytes | None, reason: Invalid
) -> None:
    assert _outcome(value) is reason


def test_sum_tolerance_is_the_documented_bound() -> None:
    inside = (
        b'{"event_id": "a", "model": "m", "probabilities": {"x": 0.5, "y": 0.5000009}}'
    )
    outside = (
        b'{"event_id": "a", "model": "m", "probabilities": {"x": 0.5, "y": 0.500002}}'
    )
    assert isinstance(_prediction(inside), Prediction)
    assert _prediction(outside) is Invalid.PROBABILITIES_NOT_NORMALISED


@pytest.mark.parametrize(
    ("label", "expected"),
    [(1, True), (0, False), (True, True), (False, False), ("true", True),
     ("FALSE", False), ("1", True), ("0", False), ("fraud", True),
     ("legit", False), (2, None), ("maybe", None)],
)  # fmt: skip
def test_binary_labels(label: bool | int | str, expected: bool | None) -> None:
    assert resolve_binary_label(label, positive="fraud", negative="legit") is expected


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=200)),
       key=st.one_of(st.none(), st.binary(max_size=20)))  # fmt: skip
def test_random_bytes_never_raise(value: bytes | None, key: bytes | None) -> None:
    decoded = _prediction(value, key)
    assert isinstance(decoded, Prediction | Invalid)
    assert isinstance(_outcome(value, key), Outcome | Invalid)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["event_id", "model", "model_version", "timestamp",
                         "probability", "probabilities", "label"]),
        json_values,
    )
)  # fmt: skip
def test_mutated_messages_never_raise(fields: dict[str, object]) -> None:
    value = json.dumps(fields).encode()
    prediction = _prediction(value)
    outcome = _outcome(value)
    assert isinstance(prediction, Prediction | Invalid)
    assert isinstance(outcome, Outcome | Invalid)
    if isinstance(prediction, Prediction) and prediction.probability is not None:
        assert 0.0 <= prediction.probability <= 1.0


@pytest.mark.parametrize(
    "timestamp", ["1e300", "253402300800000", '"0001-01-01T00:00:00+14:00"']
)
def test_timestamps_outside_the_calendar_are_rejected(timestamp: str) -> None:
    value = f'{{"event_id": "a", "label": 1, "timestamp": {timestamp}}}'.encode()
    assert _outcome(value) is Invalid.BAD_TIMESTAMP


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("2023-08-08T12:00:00Z", 1_691_496_000_000),
        ("20230808T120000Z", 1_691_496_000_000),
        ("2023-08-08 12:00:00.5+00:00", 1_691_496_000_500),
        ("2023-08-08", 1_691_452_800_000),
        # Python 3.11 reads these as 20:00; they are refused, not misread.
        ("20230808120000Z", None),
        ("2023-08-08120000Z", None),
    ],
)
def test_iso_timestamps_are_read_right_or_refused(
    text: str, expected_ms: int | None
) -> None:
    value = f'{{"event_id": "a", "label": 1, "timestamp": "{text}"}}'.encode()
    decoded = _outcome(value)
    if expected_ms is None:
        assert decoded is Invalid.BAD_TIMESTAMP
    else:
        assert decoded == Outcome("a", 1, expected_ms)


def test_a_model_keys_table_shares_one_key_per_model() -> None:
    import streamer.records as records
    from streamer.config import FieldsConfig

    table: dict = {}
    decoded = [
        records.decode_prediction(
            b'{"event_id": "e%d", "model": "fraud", "model_version": "7", '
            b'"timestamp": 1, "probability": 0.5}' % index,
            None,
            None,
            fields=FieldsConfig(),
            sum_tolerance=1e-6,
            model_keys=table,
        )
        for index in range(3)
    ]
    keys = [prediction.model for prediction in decoded]  # type: ignore[union-attr]
    assert keys[0] is keys[1] is keys[2]
    assert list(table) == [keys[0]]


def test_a_model_keys_table_stops_growing_at_its_bound(monkeypatch) -> None:
    import streamer.records as records
    from streamer.config import FieldsConfig

    monkeypatch.setattr(records, "MAX_SHARED_MODEL_KEYS", 2)
    table: dict = {}
    for index in range(5):
        prediction = records.decode_prediction(
            b'{"event_id": "e", "model": "m%d", "timestamp": 1, "probability": 0.5}'
            % index,
            None,
            None,
            fields=FieldsConfig(),
            sum_tolerance=1e-6,
            model_keys=table,
        )
        assert prediction.model.model == f"m{index}"  # type: ignore[union-attr]
    assert len(table) == 2
