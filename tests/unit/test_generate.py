"""The synthetic producer: contract, timing, label coverage, drift, config errors."""

from __future__ import annotations

import json
import math
import re
import statistics
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError
from sklearn.metrics import log_loss

from streamer.generate import (
    DEFAULT_MODELS,
    DEFAULT_START_MS,
    GeneratedMessage,
    GeneratorConfig,
    ModelSpec,
    SyntheticStream,
    format_timestamp_ms,
)
from streamer.produce import ProduceCounts, produce_stream

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SPECS = {spec.name: spec for spec in DEFAULT_MODELS}


def generate(**fields: Any) -> list[GeneratedMessage]:
    return list(SyntheticStream(GeneratorConfig(**fields)))


def split(
    messages: list[GeneratedMessage],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    predictions: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    for message in messages:
        document = json.loads(message.value)
        side = predictions if message.topic_kind == "predictions" else outcomes
        assert document["event_id"] not in side
        side[document["event_id"]] = document
    return predictions, outcomes


def epoch_ms(timestamp: str) -> int:
    assert ISO_MS.match(timestamp), timestamp
    moment = datetime.fromisoformat(timestamp)
    assert moment.utcoffset() is not None
    return round(moment.timestamp() * 1000)


@pytest.fixture(scope="module")
def default_messages() -> list[GeneratedMessage]:
    return generate(duration_s=120, seed=3)


# --- determinism -------------------------------------------------------------


def test_same_seed_gives_the_same_bytes() -> None:
    config = GeneratorConfig(duration_s=30, seed=11, drift_model="churn", drift_at_s=10)

    assert list(SyntheticStream(config)) == list(SyntheticStream(config))


def test_iterating_again_starts_over() -> None:
    stream = SyntheticStream(GeneratorConfig(duration_s=30, seed=11))

    assert list(stream) == list(stream)


def test_another_seed_gives_another_stream() -> None:
    assert generate(duration_s=30, seed=1) != generate(duration_s=30, seed=2)


def test_start_ms_shifts_every_timestamp() -> None:
    config = GeneratorConfig(duration_s=30, seed=5)
    base = list(SyntheticStream(config))
    shifted = list(SyntheticStream(config, start_ms=DEFAULT_START_MS + 60_000))

    assert [m.timestamp_ms + 60_000 for m in base] == [m.timestamp_ms for m in shifted]


# --- data contract -----------------------------------------------------------


def test_predictions_follow_the_contract(
    default_messages: list[GeneratedMessage],
) -> None:
    predictions = [m for m in default_messages if m.topic_kind == "predictions"]

    for message in predictions:
        document = json.loads(message.value)
        spec = SPECS[document["model"]]
        common = {"event_id", "model", "model_version", "timestamp"}
        payload = "probabilities" if spec.is_multiclass else "probability"

        assert set(document) == common | {payload}
        assert message.key == document["event_id"].encode()
        assert document["model_version"] == spec.version
        assert epoch_ms(document["timestamp"]) == message.timestamp_ms
        check_probabilities(spec, document[payload])

    assert {json.loads(m.value)["model"] for m in predictions} == set(SPECS)


def check_probabilities(spec: ModelSpec, payload: Any) -> None:
    if not spec.is_multiclass:
        assert type(payload) is float
        assert 0.0 <= payload <= 1.0
        return

    assert sorted(payload) == list(spec.classes)
    assert all(type(p) is float and 0.0 <= p <= 1.0 for p in payload.values())
    assert math.fsum(payload.values()) == pytest.approx(1.0, abs=1e-9)


def test_outcomes_follow_the_contract(
    default_messages: list[GeneratedMessage],
) -> None:
    predictions, _ = split(default_messages)
    outcomes = [m for m in default_messages if m.topic_kind == "outcomes"]

    for message in outcomes:
        document = json.loads(message.value)
        spec = SPECS[predictions[document["event_id"]]["model"]]

        assert set(document) == {"event_id", "label", "timestamp"}
        assert message.key == document["event_id"].encode()
        assert epoch_ms(document["timestamp"]) == message.timestamp_ms
        if spec.is_multiclass:
            assert document["label"] in spec.classes
        else:
            assert type(document["label"]) is int
            assert document["label"] in (0, 1)


def test_event_ids_are_unique_and_prefixed() -> None:
    messages = generate(duration_s=30, event_id_prefix="run2-")
    keys = [m.key for m in messages if m.topic_kind == "predictions"]

    assert len(keys) == len(set(keys))
    assert all(key.startswith(b"run2-") for key in keys)


def test_format_timestamp_ms_is_iso_utc_with_milliseconds() -> None:
    assert format_timestamp_ms(DEFAULT_START_MS + 123) == "2026-12-01T10:00:00.123Z"
    assert format_timestamp_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp_ms(1_000_000_000_999) == "2001-09-09T01:46:40.999Z"


# --- timing ------------------------------------------------------------------


def delays_ms(messages: list[GeneratedMessage]) -> list[int]:
    sent_ms: dict[bytes, int] = {}
    delays: list[int] = []
    for message in messages:
        if message.topic_kind == "predictions":
            sent_ms[message.key] = message.timestamp_ms
        else:
            # A KeyError here would mean an outcome sent before its prediction.
            delays.append(message.timestamp_ms - sent_ms[message.key])
    return delays


def test_messages_come_in_send_order(
    default_messages: list[GeneratedMessage],
) -> None:
    times_ms = [m.timestamp_ms for m in default_messages]

    assert times_ms == sorted(times_ms)


def test_outcome_comes_after_its_prediction_within_the_cap(
    default_messages: list[GeneratedMessage],
) -> None:
    config = GeneratorConfig()
    delays = delays_ms(default_messages)

    assert len(delays) > 1000
    assert min(delays) >= 1
    assert max(delays) <= math.ceil(config.label_delay_max_s * 1000)


def test_fixed_delay_is_exact() -> None:
    messages = generate(
        duration_s=30, label_delay_distribution="fixed", label_delay_median_s=2.5
    )

    assert set(delays_ms(messages)) == {2500}


@pytest.mark.parametrize("distribution", ["lognormal", "exponential"])
def test_delay_median_is_honoured(distribution: str) -> None:
    messages = generate(
        duration_s=200,
        label_delay_distribution=distribution,
        label_delay_median_s=4.0,
        label_delay_max_s=600.0,
    )

    assert statistics.median(delays_ms(messages)) == pytest.approx(4000, rel=0.05)


def test_delay_cap_is_honoured() -> None:
    messages = generate(
        duration_s=60, label_delay_median_s=5.0, label_delay_max_s=6.0, seed=4
    )
    delays = delays_ms(messages)

    assert max(delays) == 6000
    assert sum(delay == 6000 for delay in delays) > len(delays) * 0.3


def test_outcomes_due_after_the_duration_close_the_stream() -> None:
    messages = generate(duration_s=20, label_delay_median_s=5.0)
    last_prediction_ms = max(
        m.timestamp_ms for m in messages if m.topic_kind == "predictions"
    )

    assert last_prediction_ms < DEFAULT_START_MS + 20_000
    assert messages[-1].topic_kind == "outcomes"
    assert messages[-1].timestamp_ms > last_prediction_ms


@pytest.mark.parametrize("rate_per_s", [5.0, 50.0, 2000.0])
def test_rate_is_honoured(rate_per_s: float) -> None:
    duration_s = 40_000 / rate_per_s
    messages = generate(rate_per_s=rate_per_s, duration_s=duration_s, seed=8)
    predictions = [m for m in messages if m.topic_kind == "predictions"]

    # Poisson arrivals: 40,000 expected, standard deviation 200.
    assert len(predictions) / duration_s == pytest.approx(rate_per_s, rel=0.025)
    assert predictions[-1].timestamp_ms < DEFAULT_START_MS + duration_s * 1000


def test_traffic_is_shared_by_traffic_share() -> None:
    models = (
        ModelSpec(name="big", traffic_share=3.0),
        ModelSpec(name="small", traffic_share=1.0),
    )
    messages = generate(models=models, rate_per_s=100, duration_s=200)
    predictions, _ = split(messages)
    per_model = Counter(document["model"] for document in predictions.values())

    assert per_model["big"] / len(predictions) == pytest.approx(0.75, abs=0.015)


def test_forever_stream_keeps_going() -> None:
    stream = iter(SyntheticStream(GeneratorConfig(rate_per_s=1000)))
    first = [next(stream) for _ in range(60_000)]
    predictions = [m for m in first if m.topic_kind == "predictions"]

    assert len(predictions) > 30_000
    assert predictions[-1].timestamp_ms > DEFAULT_START_MS + 30_000


# --- label coverage ----------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.35, 1.0])
def test_missing_label_fraction_is_honoured(fraction: float) -> None:
    stream = SyntheticStream(
        GeneratorConfig(rate_per_s=200, duration_s=150, missing_label_fraction=fraction)
    )
    messages = list(stream)
    predictions, outcomes = split(messages)
    withheld = len(predictions) - len(outcomes)

    # 30,000 predictions: the standard deviation of the share is under 0.003.
    assert withheld / len(predictions) == pytest.approx(fraction, abs=0.015)
    assert set(outcomes) <= set(predictions)
    assert stream.counts.predictions == len(predictions)
    assert stream.counts.outcomes == len(outcomes)
    assert stream.counts.labels_withheld == withheld


# --- drift -------------------------------------------------------------------


Parsed = list[tuple[GeneratedMessage, dict[str, Any]]]


def parse(messages: list[GeneratedMessage]) -> Parsed:
    return [(message, json.loads(message.value)) for message in messages]


def model_log_loss(
    documents: Parsed, model: str, after_drift: bool, drift_ms: int
) -> float:
    """sklearn's log loss of one model over the labelled events of one half."""
    spec = SPECS[model]
    labels_by_id = {
        document["event_id"]: document["label"]
        for message, document in documents
        if message.topic_kind == "outcomes"
    }
    labels: list[Any] = []
    probabilities: list[Any] = []
    for message, document in documents:
        if message.topic_kind == "outcomes" or document["model"] != model:
            continue
        labelled = document["event_id"] in labels_by_id
        if not labelled or (message.timestamp_ms >= drift_ms) != after_drift:
            continue
        labels.append(labels_by_id[document["event_id"]])
        if spec.is_multiclass:
            row = document["probabilities"]
            probabilities.append([row[name] for name in spec.classes])
        else:
            probabilities.append(document["probability"])

    assert len(labels) > 5_000
    classes = list(spec.classes) if spec.is_multiclass else [0, 1]
    return float(log_loss(labels, probabilities, labels=classes))


@pytest.fixture(scope="module")
def drifting_fraud() -> Parsed:
    messages = generate(
        rate_per_s=100, duration_s=600, drift_model="fraud", drift_at_s=300, seed=21
    )
    return parse(messages)


def test_drift_raises_the_drifting_models_log_loss(
    drifting_fraud: Parsed,
) -> None:
    drift_ms = DEFAULT_START_MS + 300_000
    before = model_log_loss(drifting_fraud, "fraud", False, drift_ms)
    after = model_log_loss(drifting_fraud, "fraud", True, drift_ms)

    assert after >= 1.3 * before


@pytest.mark.parametrize("model", ["churn", "intent"])
def test_drift_leaves_the_other_models_alone(
    drifting_fraud: Parsed, model: str
) -> None:
    drift_ms = DEFAULT_START_MS + 300_000
    before = model_log_loss(drifting_fraud, model, False, drift_ms)
    after = model_log_loss(drifting_fraud, model, True, drift_ms)

    assert after == pytest.approx(before, rel=0.10)


def test_drift_at_event_index() -> None:
    messages = generate(
        rate_per_s=100, duration_s=400, drift_model="churn", drift_at_event=20_000
    )
    ordered = [m for m in messages if m.topic_kind == "predictions"]
    drift_ms = ordered[20_000].timestamp_ms

    documents = parse(messages)
    before = model_log_loss(documents, "churn", False, drift_ms)
    after = model_log_loss(documents, "churn", True, drift_ms)

    assert after >= 1.3 * before


# --- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rate_per_s": 0}, r"rate_per_s\n  Input should be greater than 0"),
        ({"duration_s": -1}, r"duration_s\n  Input should be greater than 0"),
        ({"missing_label_fraction": 1.5}, r"missing_label_fraction\n  Input should"),
        ({"label_delay_distribution": "normal"}, r"'lognormal', 'exponential'"),
        ({"rate": 5}, r"rate\n  Extra inputs are not permitted"),
        ({"models": ()}, r"models\n  .*at least 1 item"),
        (
            {"label_delay_median_s": 10, "label_delay_max_s": 5},
            r"label_delay_max_s=5.0 is below label_delay_median_s=10.0",
        ),
        (
            {"drift_model": "frod", "drift_at_s": 5},
            r"drift_model 'frod' is not a configured model; "
            r"choose one of \['fraud', 'churn', 'intent'\]",
        ),
        (
            {"drift_model": "fraud"},
            r"drift_model 'fraud' needs exactly one of drift_at_s and drift_at_event",
        ),
        (
            {"drift_model": "fraud", "drift_at_s": 1, "drift_at_event": 1},
            r"needs exactly one of drift_at_s and drift_at_event",
        ),
        ({"drift_at_s": 5}, r"drift_at_s/drift_at_event need a drift_model"),
        (
            {"drift_model": "fraud", "drift_at_s": 60, "duration_s": 60},
            r"drift_at_s=60.0 is not before duration_s=60.0",
        ),
        (
            {"models": [{"name": "a"}, {"name": "a"}]},
            r"model names must be unique, repeated: \['a'\]",
        ),
        (
            {"models": [{"name": "m", "classes": ["x"]}]},
            r"model 'm': classes must be at least two distinct names, got \['x'\]",
        ),
        (
            {"models": [{"name": "m", "classes": ["x", "y"], "positive_rate": 0.2}]},
            r"model 'm': positive_rate applies to binary models only",
        ),
        (
            {"models": [{"name": "m", "positive_rate": 1.0}]},
            r"models\.0\.positive_rate\n  Input should be less than 1",
        ),
    ],
)
def test_invalid_config_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GeneratorConfig(**fields)


def test_config_is_frozen() -> None:
    config = GeneratorConfig()

    with pytest.raises(ValidationError, match="frozen"):
        config.rate_per_s = 5  # type: ignore[misc]


def test_every_config_field_is_described() -> None:
    for model in (GeneratorConfig, ModelSpec):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


# --- Kafka adapter, without a broker -----------------------------------------


SHORT_RUN = GeneratorConfig(
    rate_per_s=50,
    duration_s=2,
    label_delay_median_s=0.2,
    label_delay_max_s=0.5,
    seed=1,
)


def unreachable(**kwargs: Any) -> ProduceCounts:
    return produce_stream(
        SHORT_RUN,
        bootstrap_servers="127.0.0.1:1",
        predictions_topic="predictions",
        outcomes_topic="outcomes",
        start_ms=DEFAULT_START_MS,
        producer_settings={"message.timeout.ms": 300, "log_level": 0},
        **kwargs,
    )


def test_failed_deliveries_are_counted() -> None:
    progress: list[ProduceCounts] = []
    counts = unreachable(realtime=False, on_progress=progress.append)
    stream = SyntheticStream(SHORT_RUN)
    expected = list(stream)

    assert counts.predictions_sent == stream.counts.predictions
    assert counts.outcomes_sent == stream.counts.outcomes
    assert counts.labels_withheld == stream.counts.labels_withheld
    assert counts.delivery_errors == len(expected)
    assert progress[-1] == counts


def test_realtime_paces_to_the_wall_clock() -> None:
    started_s = time.monotonic()
    counts = unreachable(realtime=True)

    assert counts.predictions_sent > 50
    assert 1.9 <= time.monotonic() - started_s < 10


def test_stop_ends_the_run() -> None:
    stop = threading.Event()
    stop.set()

    counts = unreachable(realtime=True, stop=stop)

    assert counts == ProduceCounts(0, 0, 0, 0)
