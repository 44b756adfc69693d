"""The ``driftstream`` command: run, check-config, generate, demo.

Only this module configures logging. Exit codes: 0 on success, 2 for a
configuration or topic-layout problem the operator must fix, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from streamer import __version__, demo
from streamer.config import SECRET_SETTING, Config, load_config
from streamer.consumer import require_topics
from streamer.errors import ConfigError, DriftstreamError, TopicLayoutError
from streamer.generate import GeneratorConfig
from streamer.produce import produce_stream
from streamer.service import Service

log = logging.getLogger("streamer")

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
        code: int = args.handler(args)
    except (ConfigError, TopicLayoutError) as exc:
        print(f"driftstream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DriftstreamError as exc:
        print(f"driftstream: {exc}", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftstream",
        description="Streaming log-loss monitoring of ML models on Kafka.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume both topics and serve /metrics")
    run.add_argument("--config", type=Path, help="YAML configuration file")
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check-config", help="validate a configuration file without connecting"
    )
    check.add_argument("config", type=Path, help="YAML configuration file")
    check.set_defaults(handler=_check_config)

    _add_generate(commands)
    demo.add_parser(commands)
    return parser


def _add_generate(commands: Any) -> None:
    generate = commands.add_parser(
        "generate",
        help="produce synthetic predictions and outcomes to Kafka",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    generate.add_argument(
        "--bootstrap-servers", default="127.0.0.1:9092", help="Kafka to send to"
    )
    generate.add_argument(
        "--predictions-topic", default="predictions", help="existing topic"
    )
    generate.add_argument("--outcomes-topic", default="outcomes", help="existing topic")
    generate.add_argument(
        "--rate-per-s", type=float, default=100.0, help="predictions per second"
    )
    generate.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="seconds of predictions, then the labels still due; unset: forever",
    )
    generate.add_argument(
        "--label-delay-median-s", type=float, default=3.0, help="median label delay"
    )
    generate.add_argument(
        "--label-delay-max-s", type=float, default=60.0, help="longest label delay"
    )
    generate.add_argument(
        "--missing-label-fraction",
        type=float,
        default=0.1,
        help="share of predictions whose label never comes",
    )
    generate.add_argument(
        "--drift-model", default=None, help="model that drifts (fraud, churn, intent)"
    )
    generate.add_argument(
        "--drift-at-s", type=float, default=None, help="seconds until the drift"
    )
    generate.add_argument(
        "--drift-strength",
        type=float,
        default=0.5,
        help="share of the model's separation lost (0: none, 1: no signal)",
    )
    generate.add_argument("--seed", type=int, default=0, help="random seed")
    generate.add_argument(
        "--event-id-prefix",
        default=None,
        help="prefix of every event id; when not given, one made per run, so "
        "that runs into the same topics never share ids",
    )
    generate.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="do not pace to the wall clock (timestamps stay simulated)",
    )
    generate.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    try:
        config = GeneratorConfig(
            rate_per_s=args.rate_per_s,
            duration_s=args.duration_s,
            label_delay_median_s=args.label_delay_median_s,
            label_delay_max_s=args.label_delay_max_s,
            missing_label_fraction=args.missing_label_fraction,
            drift_model=args.drift_model,
            drift_at_s=args.drift_at_s,
            drift_strength=args.drift_strength,
            seed=args.seed,
            event_id_prefix=(
                args.event_id_prefix
                if args.event_id_prefix is not None
                else f"{time.time_ns() // 1_000_000:x}-"
            ),
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid generator options: {exc}") from exc
    require_topics(
        args.bootstrap_servers, (args.predictions_topic, args.outcomes_topic)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    counts = produce_stream(
        config,
        bootstrap_servers=args.bootstrap_servers,
        predictions_topic=args.predictions_topic,
        outcomes_topic=args.outcomes_topic,
        start_ms=time.time_ns() // 1_000_000,
        realtime=not args.as_fast_as_possible,
        stop=stop,
    )
    print(
        f"sent predictions={counts.predictions_sent} outcomes={counts.outcomes_sent} "
        f"labels_withheld={counts.labels_withheld} "
        f"delivery_errors={counts.delivery_errors}"
    )
    return 0 if counts.delivery_errors == 0 else 1


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    service = Service(config)

    deadline_s = config.state.shutdown_timeout_s

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info(
            "signal received signal=%s; checkpointing and stopping within %.0f s",
            signal.Signals(signum).name,
            deadline_s,
        )
        service.request_stop()
        watchdog = threading.Timer(deadline_s, _give_up, args=(deadline_s,))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info(
        "driftstream starting version=%s metrics=%s",
        __version__,
        service.metrics_url,
    )
    service.run()
    return 0


def _give_up(deadline_s: float) -> None:
    log.error(
        "shutdown did not finish within state.shutdown_timeout_s=%.0f; exiting "
        "without the final checkpoint (offsets since the last one stay uncommitted)",
        deadline_s,
    )
    logging.shutdown()
    os._exit(1)


def _check_config(args: argparse.Namespace) -> int:
    config: Config = load_config(args.config)
    shown = config.model_dump(mode="json")
    shown["kafka"]["extra"] = {
        key: "***" if SECRET_SETTING.search(key) else value
        for key, value in shown["kafka"]["extra"].items()
    }
    print(json.dumps(shown, indent=2))
    print(f"driftstream: {args.config} is valid", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
