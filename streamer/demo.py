"""``driftstream demo``: broker, generator and streamer in one command.

It starts the local Apache Kafka broker, creates two topics, produces a
synthetic stream in real time (one model drifts part-way through), runs the
streamer on it, and prints what ``/metrics`` says every few seconds. Then it
stops everything it started. The demo uses short windows (30s, 2m, 10m) so
that the drift shows within its two minutes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from streamer.config import Config
from streamer.generate import GeneratorConfig
from streamer.localkafka import LocalKafka, create_topics
from streamer.produce import ProduceCounts, produce_stream
from streamer.service import Service

PREDICTIONS_TOPIC = "demo-predictions"
OUTCOMES_TOPIC = "demo-outcomes"
PARTITIONS = 2
"""Few, so that every partition's detector learns its reference quickly."""
WINDOWS = ("30s", "2m", "10m")


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="run broker, generator and streamer together for a few minutes"
    )
    demo.add_argument(
        "--duration-s", type=float, default=120.0, help="how long to generate"
    )
    demo.add_argument(
        "--drift-at-s", type=float, default=50.0, help="when the drift begins"
    )
    demo.add_argument("--drift-model", default="fraud", help="the model that drifts")
    demo.add_argument(
        "--rate-per-s", type=float, default=300.0, help="predictions per second"
    )
    demo.add_argument(
        "--refresh-s", type=float, default=5.0, help="seconds between tables"
    )
    demo.add_argument("--port", type=int, default=0, help="metrics port (0: free)")
    demo.set_defaults(handler=run_demo)


@dataclass
class _Row:
    model: str
    version: str
    window: str
    events: float
    log_loss: float | None
    zscore: float | None = None


@dataclass
class _Detector:
    """A model's change detector, summed over its series."""

    statistic: float | None = None
    alarms: float = 0.0


def run_demo(args: argparse.Namespace, *, out: IO[str] = sys.stdout) -> int:
    print("starting the local Apache Kafka broker ...", file=out, flush=True)
    with LocalKafka() as kafka:
        create_topics(
            kafka.bootstrap_servers,
            {PREDICTIONS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS},
        )
        service = Service(_streamer_config(kafka.bootstrap_servers, args.port))
        service.start()
        print(f"streamer up: {service.metrics_url}/metrics", file=out, flush=True)
        try:
            _drive(args, kafka.bootstrap_servers, service, out)
        finally:
            service.stop()
    print("demo finished: broker, generator and streamer stopped", file=out)
    return 0


def _streamer_config(bootstrap: str, port: int) -> Config:
    return Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": "driftstream-demo",
                "predictions_topic": PREDICTIONS_TOPIC,
                "outcomes_topic": OUTCOMES_TOPIC,
                "session_timeout_ms": 6000,
                "statistics_interval_ms": 1000,
            },
            "windows": {"lengths": list(WINDOWS), "buckets": 30},
            "metrics": {"host": "127.0.0.1", "port": port},
            # The smallest reference allowed: learned in about 20 s here.
            "drift": {"reference_events": 1_000, "reference_predictions": 1_000},
        }
    )


def _drive(
    args: argparse.Namespace, bootstrap: str, service: Service, out: IO[str]
) -> None:
    generator = GeneratorConfig(
        rate_per_s=args.rate_per_s,
        duration_s=args.duration_s,
        drift_model=args.drift_model,
        drift_at_s=args.drift_at_s,
        label_delay_median_s=2.0,
        label_delay_max_s=15.0,
        seed=int(time.time()),
        event_id_prefix=f"{int(time.time())}-",
    )
    stop = threading.Event()
    result: list[ProduceCounts] = []
    start_ms = int(time.time() * 1000)
    thread = threading.Thread(
        target=lambda: result.append(
            produce_stream(
                generator,
                bootstrap_servers=bootstrap,
                predictions_topic=PREDICTIONS_TOPIC,
                outcomes_topic=OUTCOMES_TOPIC,
                start_ms=start_ms,
                realtime=True,
                stop=stop,
            )
        ),
        name="generator",
        daemon=True,
    )
    thread.start()
    print(
        f"generating {args.rate_per_s:.0f} predictions/s for {args.duration_s:.0f} s;"
        f" {args.drift_model!r} drifts at +{args.drift_at_s:.0f} s",
        file=out,
        flush=True,
    )
    history = _watch(args, service, start_ms, thread, out)
    stop.set()
    thread.join(30)
    _summary(args, history, result, out)


def _watch(
    args: argparse.Namespace,
    service: Service,
    start_ms: int,
    thread: threading.Thread,
    out: IO[str],
) -> list[tuple[float, list[_Row]]]:
    history: list[tuple[float, list[_Row]]] = []
    detectors: dict[str, _Detector] = {}
    deadline = time.monotonic() + args.duration_s + 3
    while time.monotonic() < deadline and thread.is_alive():
        time.sleep(args.refresh_s)
        elapsed_s = time.time() - start_ms / 1000
        text = _scrape(service.metrics_url)
        rows = _rows(text)
        detectors = _detectors(text)
        history.append((elapsed_s, rows))
        print(
            _table(elapsed_s, args, rows, _coverage(text), detectors),
            file=out,
            flush=True,
        )
    _alarm_summary(args, detectors, out)
    return history


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def _rows(text: str) -> list[_Row]:
    events: dict[tuple[str, str, str], float] = {}
    losses: dict[tuple[str, str, str], float] = {}
    zscores: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (
                sample.labels.get("model", ""),
                sample.labels.get("version", ""),
                sample.labels.get("window", ""),
            )
            if sample.name == "driftstream_window_events":
                events[key] = sample.value
            elif sample.name == "driftstream_window_log_loss":
                losses[key] = sample.value
            elif sample.name == "driftstream_window_log_loss_zscore":
                zscores[key] = sample.value
    order = {window: index for index, window in enumerate(WINDOWS)}
    return [
        _Row(model, version, window, count, losses.get(key), zscores.get(key))
        for key, count in sorted(
            events.items(), key=lambda item: (item[0][0], order.get(item[0][2], 99))
        )
        for model, version, window in [key]
    ]


def _detectors(text: str) -> dict[str, _Detector]:
    """Per model: the largest detector statistic, and the alarms so far."""
    found: dict[str, _Detector] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model", "")
            if sample.name == "driftstream_loss_drift_statistic":
                detector = found.setdefault(model, _Detector())
                detector.statistic = max(detector.statistic or 0.0, sample.value)
            elif sample.name == "driftstream_loss_drift_alarms_total":
                found.setdefault(model, _Detector()).alarms += sample.value
    return found


def _alarm_summary(
    args: argparse.Namespace, detectors: dict[str, _Detector], out: IO[str]
) -> None:
    for model, detector in sorted(detectors.items()):
        role = "drifted" if model == args.drift_model else "stable"
        print(
            f"change detector: {model} ({role}) raised {detector.alarms:.0f} alarms",
            file=out,
        )


def _coverage(text: str) -> dict[str, float]:
    """Share of each model's predictions that have been joined with a label."""
    predictions: dict[str, float] = {}
    joined: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model", "")
            if sample.name == "driftstream_predictions_total":
                predictions[model] = predictions.get(model, 0.0) + sample.value
            elif sample.name == "driftstream_joined_total":
                joined[model] = joined.get(model, 0.0) + sample.value
    return {
        model: joined.get(model, 0.0) / count
        for model, count in predictions.items()
        if count
    }


def _table(
    elapsed_s: float,
    args: argparse.Namespace,
    rows: list[_Row],
    coverage: dict[str, float],
    detectors: dict[str, _Detector],
) -> str:
    phase = "after drift" if elapsed_s >= args.drift_at_s else "before drift"
    lines = [
        "",
        f"t=+{elapsed_s:5.1f}s  ({phase} of {args.drift_model!r})",
        f"  {'model':<8} {'version':<8} {'window':<7} {'log loss':>9} "
        f"{'events':>8} {'labelled':>9} {'z-score':>8} {'detector':>9} "
        f"{'alarms':>6}",
    ]
    for row in rows:
        loss = "-" if row.log_loss is None else f"{row.log_loss:.4f}"
        share = coverage.get(row.model)
        labelled = "-" if share is None else f"{share:.1%}"
        zscore = "-" if row.zscore is None else f"{row.zscore:+.1f}"
        detector = detectors.get(row.model, _Detector())
        statistic = (
            "learning" if detector.statistic is None else (f"{detector.statistic:.2f}")
        )
        lines.append(
            f"  {row.model:<8} {row.version:<8} {row.window:<7} {loss:>9} "
            f"{row.events:>8.0f} {labelled:>9} {zscore:>8} {statistic:>9} "
            f"{detector.alarms:>6.0f}"
        )
    return "\n".join(lines)


def _summary(
    args: argparse.Namespace,
    history: list[tuple[float, list[_Row]]],
    result: list[ProduceCounts],
    out: IO[str],
) -> None:
    if result:
        counts = result[0]
        print(
            f"\nproduced {counts.predictions_sent} predictions and "
            f"{counts.outcomes_sent} outcomes ({counts.labels_withheld} labels "
            f"withheld, {counts.delivery_errors} delivery errors)",
            file=out,
        )
    before = _loss_at(history, args.drift_model, WINDOWS[0], until_s=args.drift_at_s)
    after = _loss_at(history, args.drift_model, WINDOWS[0], until_s=None)
    if before is not None and after is not None:
        print(
            f"{args.drift_model}: {WINDOWS[0]}-window log loss {before:.4f} before "
            f"the drift, {after:.4f} at the end ({after / before:.2f}x)",
            file=out,
        )


def _loss_at(
    history: list[tuple[float, list[_Row]]],
    model: str,
    window: str,
    *,
    until_s: float | None,
) -> float | None:
    value: float | None = None
    for elapsed_s, rows in history:
        if until_s is not None and elapsed_s >= until_s:
            break
        for row in rows:
            if row.model == model and row.window == window and row.log_loss:
                value = row.log_loss
    return value
