"""The throughput benchmark's peer: the same join and windows as a Quix Streams app.

Run by ``throughput.py`` with the interpreter of the peer's own venv
(``~/.cache/driftstream/bench-venv``, from ``requirements-peer.txt``: Quix
pins a confluent-kafka of its own), never inside driftstream's venv. It
imports nothing of driftstream.

What it does, the way a Quix user would write it:

1. both topics as dataframes, concatenated (Quix aligns them by timestamp);
2. a stateful ``apply`` keyed by the message key (the event id): the first
   side to arrive is kept in the key's state, the second one completes the
   pair, and the event's log loss is computed (natural log, probabilities
   clipped to float64 eps, as driftstream and scikit-learn do);
3. the joined event takes its outcome's timestamp (driftstream windows an
   event at its outcome's time), is re-keyed by model (``group_by``, which
   goes through a repartition topic), and a 1 h tumbling window in event
   time keeps the mean log loss and the count per model.

State goes to RocksDB without changelog topics (driftstream runs with its
checkpoints off, so neither side pays for durability). It stops once the
window stage has seen every labelled event, and prints a result line (see
``probe.py``) with the counts it checks.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from probe import STALL_TIMEOUT_S, Interval, emit
from quixstreams import Application, State
from quixstreams.dataframe.windows import Count, Mean

EPS = 2.220446049250313e-16
"""float64 machine epsilon: the clipping driftstream's default and sklearn use."""

WINDOW_MS = 3_600_000
GRACE_MS = 3_600_000
"""Re-keyed by model, events of eight partitions meet out of order: with a
10 min grace 13 % of them came too late for their window on this data set."""


class PeerRun:
    """The app's counters, its stop condition and the timing of one run."""

    def __init__(self, app: Application, expected_joined: int) -> None:
        self.app = app
        self.expected_joined = expected_joined
        self.interval = Interval()
        self.consumed = 0
        self.joined = 0
        self.windowed = 0
        self.late = 0
        self.closed_windows = 0
        self.loss_by_model: defaultdict[str, list[float]] = defaultdict(
            lambda: [0, 0.0]
        )
        self.last_progress_s = time.monotonic()
        self.stalled = False

    def join(
        self,
        value: dict[str, Any],
        key: Any,
        timestamp: int,
        headers: Any,
        state: State,
    ) -> dict[str, Any] | None:
        """Pair a prediction and its outcome by event id; None while one waits."""
        self.interval.begin()
        self.consumed += 1
        self.last_progress_s = time.monotonic()
        is_outcome = "label" in value
        waiting = state.get("waiting")
        if waiting is None:
            if is_outcome:
                state.set("waiting", {"label": value["label"], "ts": timestamp})
            else:
                state.set("waiting", _prediction_part(value))
            return None

        state.delete("waiting")
        if is_outcome:
            prediction, label, outcome_ts = waiting, value["label"], timestamp
        else:
            prediction, label, outcome_ts = (
                _prediction_part(value),
                waiting["label"],
                waiting["ts"],
            )
        loss = _log_loss(prediction, label)
        self.joined += 1
        totals = self.loss_by_model[prediction["model"]]
        totals[0] += 1
        totals[1] += loss
        return {"model": prediction["model"], "loss": loss, "ts": outcome_ts}

    def count_windowed(self, value: dict[str, Any]) -> None:
        self.windowed += 1
        if self.windowed == self.expected_joined:
            self.interval.end()
            self.app.stop()

    def on_late(self, *args: Any) -> bool:
        self.late += 1
        return False

    def count_closed(self, value: dict[str, Any]) -> None:
        self.closed_windows += 1

    def watch(self, done: threading.Event) -> None:
        """Stop the app, and say so, when nothing has moved for a while."""
        while not done.wait(1.0):
            if time.monotonic() - self.last_progress_s > STALL_TIMEOUT_S:
                self.stalled = True
                self.app.stop()
                return


def _prediction_part(value: dict[str, Any]) -> dict[str, Any]:
    if "probabilities" in value:
        return {"model": value["model"], "probabilities": value["probabilities"]}
    return {"model": value["model"], "probability": value["probability"]}


def _log_loss(prediction: dict[str, Any], label: Any) -> float:
    if "probabilities" in prediction:
        p_true = prediction["probabilities"][str(label)]
    else:
        p = prediction["probability"]
        p_true = p if label in (1, True) else 1.0 - p
    return -math.log(min(max(p_true, EPS), 1.0 - EPS))


def build(args: argparse.Namespace, state_dir: str) -> tuple[Application, PeerRun]:
    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group_id,
        auto_offset_reset="earliest",
        use_changelog_topics=False,
        state_dir=state_dir,
        consumer_extra_config={"fetch.queue.backoff.ms": 10},
        loglevel="WARNING",
    )
    run = PeerRun(app, args.labelled)
    predictions = app.dataframe(app.topic(args.predictions_topic))
    outcomes = app.dataframe(app.topic(args.outcomes_topic))
    events = predictions.concat(outcomes)
    joined = events.apply(run.join, stateful=True, metadata=True)
    joined = joined.filter(lambda value: value is not None)
    joined = joined.set_timestamp(lambda value, key, timestamp, headers: value["ts"])
    by_model = joined.group_by("model")
    by_model = by_model.update(run.count_windowed)
    windows = (
        by_model.tumbling_window(WINDOW_MS, grace_ms=GRACE_MS, on_late=run.on_late)
        .agg(mean_log_loss=Mean("loss"), events=Count())
        .final()
    )
    windows.update(run.count_closed)
    return app, run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--predictions-topic", required=True)
    parser.add_argument("--outcomes-topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--labelled", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="quix-peer-") as state_dir:
        app, run = build(args, state_dir)
        done = threading.Event()
        threading.Thread(target=run.watch, args=(done,), daemon=True).start()
        app.run()
        done.set()

    checks = {
        "consumed": run.consumed,
        "joined": run.joined,
        "windowed": run.windowed,
        "late": run.late,
        "closed_windows": run.closed_windows,
        "mean_log_loss_by_model": {
            model: loss_sum / events
            for model, (events, loss_sum) in run.loss_by_model.items()
        },
    }
    if run.stalled or run.joined != args.labelled or run.windowed != args.labelled:
        raise SystemExit(
            f"the peer joined {run.joined} and windowed {run.windowed} of "
            f"{args.labelled} labelled events (stalled: {run.stalled}): {checks}"
        )
    emit(run.interval.report(run.consumed, **checks))


if __name__ == "__main__":
    main()
