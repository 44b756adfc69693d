"""Drift alerts end to end: one model drifts, its alerts reach the webhook, no other's.

Real parts only: the session's Apache Kafka broker, ``driftstream generate``
and ``driftstream run`` as child processes, Prometheus with the shipped rules
(``for:`` shortened, see ``harness.write_shortened_rules``), Alertmanager and a
webhook receiver.

The stream: the generator's three models (binary ``fraud`` and ``churn``,
multiclass ``intent``) at 1500 predictions/s in all, labels 0.3 s later (median,
2 s at most), 10 % never labelled. Each series learns its reference from its
first 2000 joined events per partition (about 9 s); at +20 s ``churn`` loses
60 % of its separation, so its log loss doubles (0.32 to 0.63 nats), while
``fraud`` and ``intent`` stay as they were. The windows are 1m, 5m and 1h: the
model rules and the dashboard read the 1h window, and with live generation on
the wall clock a 1h window simply holds the whole run.

The run is shared by the tests of this module (it takes about a minute); each
test reads what the webhook and Prometheus saw.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streamer.localkafka import create_topics
from tests.alerting.harness import (
    Alert,
    AlertingStack,
    Binaries,
    DriftstreamRun,
    ManagedProcess,
    driftstream_settings,
    running_stack,
)
from tests.dashboard import dashboard_queries
from tests.scrape import scrape, wait_for

pytestmark = [pytest.mark.alerting, pytest.mark.integration]

PARTITIONS = 2
RATE_PER_S = 1500
REFERENCE_EVENTS = 2000
DRIFT_MODEL, DRIFT_VERSION = "churn", "3"
STABLE_MODELS = ("fraud", "intent")
DRIFT_AT_S = 20.0
DRIFT_STRENGTH = 0.6

DRIFT_ALERTS = ("DriftstreamLossChangeDetected", "DriftstreamLogLossDrift")
ALERT_TIMEOUT_S = 90.0
"""From the drift to both drift alerts at the webhook; about 15 s in our runs."""

QUIET_S = 10.0
"""How long the stream runs on after the drift alerts, for a stable model to misfire."""


@dataclass
class DriftRun:
    stack: AlertingStack
    driftstream: DriftstreamRun
    drift_wall_s: float
    """Wall-clock time at or before which the drift began (a lower bound)."""


def _settings(
    bootstrap: str, predictions_topic: str, outcomes_topic: str
) -> dict[str, Any]:
    """driftstream's configuration for this run (drift.* as streamer/config.py has it).

    - ``drift.reference_events`` / ``reference_predictions``: 2000, so that the
      references are learned in seconds; ``calibration_events`` at its minimum,
      for a quick calibration of the change detector's threshold.
    - ``drift.shift`` is left at its default: every series must still get a
      change detector from a 2000-event reference (``fraud``'s loss is small
      and skewed, mean about 0.09 and deviation 0.37 nats, which is where a
      short reference is hardest), and :func:`_wait_for_references` fails
      the run if one has none.
    - ``drift.arl0_events``: 1e8 instead of the default 1e6. A stable series
      sees about 13 000 events per partition here, and four of them (two
      stable models, two partitions) at the default would raise a false alarm
      in about one run in twenty; at 1e8 in about one in two thousand. The
      drifting model's loss doubles, so its detector still alarms within
      seconds of the drift.
    - ``drift.thresholds.log_loss``: 5 nats, far above every model, so that the
      dashboard's threshold query has a series and DriftstreamLogLossHigh
      stays silent.
    - ``join.max_pending`` 2000 and ``join.outcome_ttl_s`` 10: the stream's
      unlabelled predictions pass 2000 per partition after about 20 s (evicted,
      oldest first: they are older than any labelled one still waiting), and
      the orphan outcomes of :func:`_send_extras` expire, so that the
      dashboard's eviction and expiry panels have data.
    - ``windows.min_events`` 100: no mean, PSI or ratio of a handful of events.
    """
    settings = driftstream_settings(
        bootstrap, predictions_topic, outcomes_topic, f"g-{uuid.uuid4().hex[:12]}"
    )
    settings.update(
        {
            "windows": {"lengths": ["1m", "5m", "1h"], "min_events": 100},
            "join": {"max_pending": 2000, "outcome_ttl_s": 10},
            "drift": {
                "reference_events": REFERENCE_EVENTS,
                "reference_predictions": REFERENCE_EVENTS,
                "calibration_events": 100_000,
                "arl0_events": 1e8,
                "thresholds": {"log_loss": 5.0},
            },
        }
    )
    return settings


def _generator(
    bootstrap: str, predictions_topic: str, outcomes_topic: str, log_path: Path
) -> ManagedProcess:
    return ManagedProcess(
        "driftstream generate",
        [
            sys.executable, "-m", "streamer.cli", "generate",
            "--bootstrap-servers", bootstrap,
            "--predictions-topic", predictions_topic,
            "--outcomes-topic", outcomes_topic,
            "--rate-per-s", str(RATE_PER_S),
            "--label-delay-median-s", "0.3",
            "--label-delay-max-s", "2",
            "--drift-model", DRIFT_MODEL,
            "--drift-at-s", str(DRIFT_AT_S),
            "--drift-strength", str(DRIFT_STRENGTH),
            "--seed", "11",
        ],
        log_path,
    )  # fmt: skip


def _wait_for_references(url: str, *, until_s: float) -> None:
    """Wait until every series has learned its reference in every partition.

    Then each must have a change detector (its statistic is exported), or the
    test could not tell a silent stable model from one that is not watched.
    """
    complete = PARTITIONS * REFERENCE_EVENTS
    models = (DRIFT_MODEL, *STABLE_MODELS)
    while True:
        page = scrape(url)
        learned = {
            model: page.total("driftstream_reference_events", model=model)
            for model in models
        }
        if all(events >= complete for events in learned.values()):
            watched = {
                labels["model"]
                for labels in page.series("driftstream_loss_drift_statistic")
            }
            assert watched == set(models), (
                f"models without a change detector after their reference: "
                f"{sorted(set(models) - watched)}"
            )
            return
        if time.time() > until_s:
            raise AssertionError(
                f"the references were not learned before the drift at "
                f"+{DRIFT_AT_S} s (reference events: {learned}, wanted {complete} "
                "each): lower drift.reference_events or raise the rate"
            )
        time.sleep(0.5)


def _send_extras(bootstrap: str, predictions_topic: str, outcomes_topic: str) -> None:
    """A few messages the generator never sends, so every dashboard panel has data.

    An invalid message on each topic, a duplicated prediction, a pair stamped
    three minutes ago (late for the 1m window) and outcomes of no prediction
    (they expire after join.outcome_ttl_s). All of ``fraud``: a handful among
    tens of thousands of its events.
    """
    now_ms = time.time_ns() // 1_000_000
    old_ms = now_ms - 180_000
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

    def send(topic: str, event_id: str, document: dict[str, Any] | bytes) -> None:
        value = document if isinstance(document, bytes) else orjson.dumps(document)
        producer.produce(topic, key=event_id.encode(), value=value)

    def prediction(event_id: str, timestamp_ms: int) -> dict[str, Any]:
        return {"event_id": event_id, "model": "fraud", "model_version": "7",
                "timestamp": timestamp_ms, "probability": 0.2}  # fmt: skip

    send(predictions_topic, "extra-invalid", b"{not json")
    send(predictions_topic, "extra-duplicate", prediction("extra-duplicate", now_ms))
    send(predictions_topic, "extra-duplicate", prediction("extra-duplicate", now_ms))
    send(predictions_topic, "extra-late", prediction("extra-late", old_ms))
    assert producer.flush(30) == 0
    # Outcomes after their predictions are surely read: one that came first
    # would wait only join.outcome_ttl_s, which the late one is already past.
    time.sleep(1.0)
    send(outcomes_topic, "extra-invalid", b"{not json")
    for event_id, timestamp_ms in (("extra-duplicate", now_ms + 100),
                                   ("extra-late", old_ms + 1000)):  # fmt: skip
        send(outcomes_topic, event_id,
             {"event_id": event_id, "label": 0, "timestamp": timestamp_ms})  # fmt: skip
    for index in range(3):
        event_id = f"extra-orphan-{index}"
        send(outcomes_topic, event_id,
             {"event_id": event_id, "label": 1, "timestamp": now_ms})  # fmt: skip
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def drift_run(
    kafka_bootstrap: str,
    alerting_binaries: Binaries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DriftRun]:
    directory = tmp_path_factory.mktemp("drift")
    suffix = uuid.uuid4().hex[:8]
    predictions_topic, outcomes_topic = f"drift-{suffix}.pred", f"drift-{suffix}.out"
    create_topics(
        kafka_bootstrap, {predictions_topic: PARTITIONS, outcomes_topic: PARTITIONS}
    )
    driftstream = DriftstreamRun(
        _settings(kafka_bootstrap, predictions_topic, outcomes_topic),
        directory / "driftstream",
    )
    generator = _generator(
        kafka_bootstrap, predictions_topic, outcomes_topic, directory / "generate.log"
    )
    driftstream.start()
    try:
        wait_for(
            driftstream.url,
            lambda page: (
                page.value("driftstream_assigned_partitions") == 2 * PARTITIONS
            ),
        )
        with running_stack(
            alerting_binaries, directory, target=driftstream.address
        ) as stack:
            stack.prometheus.wait_for('up{job="driftstream"} == 1', timeout_s=30)
            started_s = time.time()
            generator.start()
            drift_wall_s = started_s + DRIFT_AT_S
            # The drift must come after the references: else there is no
            # healthy baseline to drift from, and the test would prove nothing.
            _wait_for_references(driftstream.url, until_s=drift_wall_s - 1.0)
            _send_extras(kafka_bootstrap, predictions_topic, outcomes_topic)
            yield DriftRun(stack, driftstream, drift_wall_s)
    finally:
        generator.stop()
        driftstream.stop()


def test_drift_alerts_fire_for_the_drifting_model_only(drift_run: DriftRun) -> None:
    webhook = drift_run.stack.webhook
    deadline_s = drift_run.drift_wall_s + ALERT_TIMEOUT_S
    fired = {
        name: webhook.wait_for_alert(
            _alert_of(name, DRIFT_MODEL),
            timeout_s=max(deadline_s - time.time(), 1.0),
            what=f"firing {name} for {DRIFT_MODEL}",
        )
        for name in DRIFT_ALERTS
    }
    time.sleep(QUIET_S)

    for name, alert in fired.items():
        assert alert["labels"]["version"] == DRIFT_VERSION
        assert alert["labels"]["job"] == "driftstream"
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert DRIFT_MODEL in alert["annotations"]["summary"]
        assert alert["annotations"]["runbook_url"].endswith("#" + name.lower())
    assert fired["DriftstreamLogLossDrift"]["labels"]["window"] == "1h"

    model_alerts = [a for a in webhook.alerts(status=None) if "model" in a["labels"]]
    stable = [a for a in model_alerts if a["labels"]["model"] in STABLE_MODELS]
    assert stable == [], "a stable model alerted"
    early = [
        a
        for a in model_alerts
        if a["labels"]["model"] == DRIFT_MODEL
        and a["received_s"] < drift_run.drift_wall_s
    ]
    assert early == [], f"{DRIFT_MODEL} alerted before its drift"


def test_every_dashboard_query_returns_data(drift_run: DriftRun) -> None:
    prometheus = drift_run.stack.prometheus
    queries = dashboard_queries()
    assert len(queries) > 20
    # Some panels fill only as the run goes on (evictions start after about
    # 20 s; rates need two samples): wait a while for the last of them.
    deadline = time.monotonic() + 60.0
    empty = queries
    while empty and time.monotonic() < deadline:
        empty = [expr for expr in empty if not prometheus.query(expr)]
        if empty:
            time.sleep(1.0)
    assert empty == [], "dashboard queries without data"


def _alert_of(name: str, model: str) -> Callable[[Alert], bool]:
    def matches(alert: Alert) -> bool:
        labels = alert["labels"]
        return bool(labels.get("alertname") == name and labels.get("model") == model)

    return matches
