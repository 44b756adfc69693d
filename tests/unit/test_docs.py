"""The README's references stay equal to the code they describe."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from streamer.config import Config, reference_markdown
from streamer.metrics import ConsumerHealth, PipelineCollector
from streamer.pipeline import Pipeline
from tests.scrape import parse
from tests.unit.test_pipeline import Message

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_holds_the_generated_configuration_reference() -> None:
    assert reference_markdown() in README.read_text(encoding="utf-8")


def _exported_names() -> set[str]:
    pipeline = Pipeline(Config())
    now = int(time.time() * 1000)
    prediction = {"event_id": "a", "model": "m", "timestamp": now, "probability": 0.4}
    pipeline.process(
        [
            Message("predictions", 0, json.dumps(prediction).encode()),
            Message("outcomes", 0, b'{"event_id": "a", "label": 1}', timestamp_ms=now),
            Message("outcomes", 0, b"{"),
        ]
    )
    health = ConsumerHealth(
        lag={("t", 0): 3},
        assigned={("t", 0)},
        last_checkpoint_wall_s=time.time(),
        last_restore_duration_s=0.2,
    )
    suffix = {"counter": "_total", "info": "_info"}
    names = {
        family.name + suffix.get(family.type, "")
        for family in PipelineCollector(pipeline, health).collect()
    }
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline, health))
    exposed = parse(generate_latest(registry).decode())
    assert {"driftstream_window_log_loss", "driftstream_build_info"} <= set(
        exposed.samples
    )
    return names


def test_readme_documents_every_exported_metric() -> None:
    documented = set(
        re.findall(r"^\| `(driftstream_[a-z_]+)` \|", README.read_text(), re.M)
    )
    assert documented == _exported_names()
