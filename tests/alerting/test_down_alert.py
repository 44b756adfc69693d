"""A health alert end to end: driftstream stops, the webhook hears DriftstreamDown.

Real parts only: the session's Apache Kafka broker, ``driftstream run`` as a
child process, Prometheus scraping it with the shipped rules (``for:``
shortened, see ``harness.write_shortened_rules``), Alertmanager and a webhook.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streamer.localkafka import create_topics
from tests.alerting.harness import (
    Alert,
    DriftstreamRun,
    StartStack,
    driftstream_settings,
)

pytestmark = [pytest.mark.alerting, pytest.mark.integration]

RUNBOOK_BASE = "https://example.com/driftstream/runbooks"


def test_down_alert_reaches_the_webhook(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    start_alerting: StartStack,
) -> None:
    predictions_topic = f"{topic_prefix}.predictions"
    outcomes_topic = f"{topic_prefix}.outcomes"
    create_topics(kafka_bootstrap, {predictions_topic: 2, outcomes_topic: 2})
    settings = driftstream_settings(
        kafka_bootstrap, predictions_topic, outcomes_topic, f"g-{uuid.uuid4().hex}"
    )
    driftstream = DriftstreamRun(settings, tmp_path / "driftstream")
    driftstream.start()
    stack = start_alerting(driftstream.address)

    # Up first, and nothing down yet: the alert below is the stop's doing.
    stack.prometheus.wait_for('up{job="driftstream"} == 1', timeout_s=30)
    stack.prometheus.wait_for("driftstream_assigned_partitions == 4", timeout_s=60)
    assert not [a for a in stack.webhook.alerts() if _is_down(a)]

    assert driftstream.stop() == 0, driftstream.process.log_tail()

    alert = stack.webhook.wait_for_alert(
        _is_down, timeout_s=60, what="firing DriftstreamDown"
    )
    assert alert["labels"] == {
        "alertname": "DriftstreamDown",
        "instance": driftstream.address,
        "job": "driftstream",
        "severity": "critical",
    }
    annotations = alert["annotations"]
    assert driftstream.address in annotations["summary"]
    assert driftstream.address in annotations["description"]
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#driftstreamdown"


def _is_down(alert: Alert) -> bool:
    return bool(alert["labels"].get("alertname") == "DriftstreamDown")
