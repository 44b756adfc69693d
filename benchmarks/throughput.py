"""Throughput and memory of driftstream against the client's limit and a peer.

Run: ``.venv/bin/python benchmarks/throughput.py [--events N] [--append-results]``

One command, in one run:

1. starts the local Apache Kafka broker, creates two topics of 8 partitions
   and produces the data set once (``throughput_data.py``: 10^6 events of ten
   models, binary and multiclass, so 2 x 10^6 messages);
2. measures, each in its own subprocess, one after the other, every one
   consuming both topics from the beginning with a fresh group id until it
   has seen every message: (a) a bare ``consume()`` loop, then the same loop
   with ``orjson.loads`` (``throughput_workers.py``); (b) driftstream's
   consumer and pipeline, consume to windows. These three run in rounds,
   three by default (``--runs``), one of each per round, and the median run
   of each is kept: they last seconds, and the broker and whatever else
   shares the machine move single runs by 10-20 %. Then (c), the Quix
   Streams peer (``quix_peer.py``, in its own venv, created on first use),
   once: it lasts a minute;
3. measures the memory of the join: RSS per pending prediction at 10^6
   pending (and a tracemalloc count beside it);
4. profiles (b) once with py-spy and lists the functions with the most own
   time;
5. prints the table, the ratios b / (a + decode) and b / c, and the targets;
   with ``--append-results`` it appends the same as a section to
   ``benchmarks/RESULTS.md``.

Throughput is messages over the time from the first batch in hand to the last
message handled; CPU seconds are the process's (all threads) over the same
span; peak RSS is the subprocess's whole life. The broker shares the machine
and its CPU is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from probe import RESULT_PREFIX
from throughput_data import DataSet, prepare
from throughput_report import Report, machine_facts, render_markdown, render_text

from streamer.localkafka import LocalKafka

HERE = Path(__file__).resolve().parent
WORKERS = HERE / "throughput_workers.py"
PEER = HERE / "quix_peer.py"
PEER_REQUIREMENTS = HERE / "requirements-peer.txt"
PEER_VENV = Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
    "driftstream",
    "bench-venv",
)
PROFILE_RATE_HZ = 200
LOOP_FRAME = "KafkaSource._loop ("
TRACED_PENDING = 200_000
"""tracemalloc slows the pipeline about fivefold: it counts at most this many."""
MEASUREMENT_TIMEOUT_S = 3600.0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events (2 messages each)"
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pending",
        type=int,
        default=1_000_000,
        help="pending predictions for the memory measurement",
    )
    parser.add_argument(
        "--runs",
        "--limit-runs",
        dest="runs",
        type=int,
        default=3,
        help="rounds of (a) bare, (a) decode and (b), one run of each per round; "
        "the median run of each",
    )
    parser.add_argument("--skip-peer", action="store_true", help="leave out (c)")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument(
        "--peer-venv", type=Path, default=PEER_VENV, help="the peer's venv"
    )
    parser.add_argument(
        "--append-results",
        nargs="?",
        const=HERE / "RESULTS.md",
        type=Path,
        help="append a section to this file (default benchmarks/RESULTS.md)",
    )
    args = parser.parse_args()
    for name in ("events", "partitions", "batch_size", "pending", "runs"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


# -- subprocesses --------------------------------------------------------------


def _run(label: str, command: list[str], *, timeout_s: float) -> dict[str, Any]:
    """Run one measurement; its result line as a dict. stderr goes to ours."""
    print(f"-- {label}", file=sys.stderr, flush=True)
    load_1m = os.getloadavg()[0]
    started_s = time.perf_counter()
    completed = subprocess.run(
        command, stdout=subprocess.PIPE, text=True, timeout=timeout_s, check=False
    )
    lines = [
        line[len(RESULT_PREFIX) :]
        for line in completed.stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    if completed.returncode != 0 or len(lines) != 1:
        raise SystemExit(
            f"{label} failed (exit code {completed.returncode}); its stdout:\n"
            f"{completed.stdout[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[0])
    result["wall_s"] = time.perf_counter() - started_s
    result["load_1m"] = load_1m
    return result


def _consumer_args(dataset: DataSet, name: str) -> list[str]:
    return [
        "--bootstrap-servers",
        dataset.bootstrap_servers,
        "--predictions-topic",
        dataset.predictions_topic,
        "--outcomes-topic",
        dataset.outcomes_topic,
        "--group-id",
        f"bench-{name}-{uuid.uuid4().hex[:8]}",
        "--messages",
        str(dataset.messages),
        "--labelled",
        str(dataset.labelled_events),
    ]


def _worker(command: str, *extra: str) -> list[str]:
    return [sys.executable, str(WORKERS), command, *extra]


def ensure_peer_venv(venv: Path) -> Path:
    """The peer venv's interpreter; created and filled from the pins if needed."""
    python = venv / "bin" / "python"
    pinned = PEER_REQUIREMENTS.read_text(encoding="utf-8")
    stamp = venv / ".driftstream-requirements"
    if python.is_file() and stamp.is_file() and stamp.read_text() == pinned:
        return python
    print(f"-- preparing the peer's venv {venv}", file=sys.stderr, flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(PEER_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(pinned, encoding="utf-8")
    return python


def _peer_versions(python: Path) -> dict[str, str]:
    script = (
        "import json, confluent_kafka, quixstreams; print(json.dumps({"
        "'quixstreams': quixstreams.__version__, "
        "'confluent_kafka': confluent_kafka.version(), "
        "'librdkafka': confluent_kafka.libversion()[0]}))"
    )
    completed = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True
    )
    versions: dict[str, str] = json.loads(completed.stdout)
    return versions


# -- the profile ---------------------------------------------------------------


def profile_pipeline(py_spy: Path, dataset: DataSet, args: argparse.Namespace) -> Any:
    """(b) once more under py-spy; the functions with the most own time."""
    raw = Path(f"/tmp/driftstream-throughput-profile-{os.getpid()}.txt")
    command = [
        str(py_spy),
        "record",
        "--format",
        "raw",
        "--rate",
        str(PROFILE_RATE_HZ),
        "--native",
        "-o",
        str(raw),
        "--",
        *_worker(
            "pipeline",
            *_consumer_args(dataset, "profile"),
            "--batch-size",
            str(args.batch_size),
        ),
    ]
    result = _run("(b) under py-spy", command, timeout_s=MEASUREMENT_TIMEOUT_S)
    own: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        # Only the consume loop: start-up (imports, group join) is left out.
        if LOOP_FRAME in stack:
            own[_function_of(stack.split(";")[-1])] += int(count)
    total = sum(own.values())
    top = [
        {"function": name, "samples": samples, "share": samples / total}
        for name, samples in own.most_common(10)
    ]
    return {
        "samples": total,
        "rate_hz": PROFILE_RATE_HZ,
        "top": top,
        "raw": str(raw),
        "messages_per_s": result["messages_per_s"],
    }


def _function_of(frame: str) -> str:
    """``name (path:line)`` -> ``name (short path)``: own time per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# -- the run -------------------------------------------------------------------


def main() -> None:
    args = _parse_args()
    started_s = time.perf_counter()
    load_before = os.getloadavg()
    peer_python = None if args.skip_peer else ensure_peer_venv(args.peer_venv)
    results: dict[str, Any] = {}

    with LocalKafka() as kafka:
        dataset = DataSet(
            bootstrap_servers=kafka.bootstrap_servers,
            predictions_topic="bench-predictions",
            outcomes_topic="bench-outcomes",
            partitions=args.partitions,
            events=args.events,
            seed=args.seed,
        )
        print("-- producing the data set", file=sys.stderr, flush=True)
        results["produce"] = prepare(dataset)
        batch = ["--batch-size", str(args.batch_size)]
        timeout_s = MEASUREMENT_TIMEOUT_S
        runs: dict[str, list[dict[str, Any]]] = {
            "bare": [],
            "decode": [],
            "pipeline": [],
        }
        labels = {
            "bare": "(a) bare",
            "decode": "(a) decode",
            "pipeline": "(b) driftstream",
        }
        for number in range(args.runs):
            # In rounds, so that a slow spell of the machine falls on all three.
            for command, done in runs.items():
                done.append(
                    _run(
                        f"{labels[command]}, run {number + 1} of {args.runs}",
                        _worker(command, *_consumer_args(dataset, command), *batch),
                        timeout_s=timeout_s,
                    )
                )
        for command, done in runs.items():
            done.sort(key=lambda run: run["messages_per_s"])
            results[command] = done[len(done) // 2]
            results[f"{command}_runs"] = [run["messages_per_s"] for run in done]
        if peer_python is not None:
            results["peer"] = _run(
                "(c) Quix Streams",
                [str(peer_python), str(PEER), *_consumer_args(dataset, "peer")],
                timeout_s=timeout_s,
            )
            results["peer_versions"] = _peer_versions(peer_python)
        if not args.skip_profile:
            # py-spy is pinned with the peer's requirements.
            py_spy = ensure_peer_venv(args.peer_venv).parent / "py-spy"
            results["profile"] = profile_pipeline(py_spy, dataset, args)

    pending = ["--events", str(args.pending), "--partitions", str(args.partitions)]
    for kind in ("all", "binary", "multiclass"):
        results[f"pending_{kind}"] = _run(
            f"memory: {args.pending} pending predictions ({kind})",
            _worker("pending", *pending, "--kind", kind),
            timeout_s=MEASUREMENT_TIMEOUT_S,
        )
    traced = min(args.pending, TRACED_PENDING)
    results["pending_traced"] = _run(
        f"memory: {traced} pending predictions under tracemalloc",
        _worker(
            "pending",
            *["--events", str(traced), "--partitions", str(args.partitions)],
            *["--kind", "all", "--tracemalloc"],
        ),
        timeout_s=MEASUREMENT_TIMEOUT_S,
    )

    report = Report(
        command=" ".join(
            [".venv/bin/python", "benchmarks/throughput.py", *sys.argv[1:]]
        ),
        events=args.events,
        partitions=args.partitions,
        pending=args.pending,
        results=results,
        machine=machine_facts(load_before, os.getloadavg()),
        total_s=time.perf_counter() - started_s,
    )
    print(render_text(report))
    if args.append_results is not None:
        with args.append_results.open("a", encoding="utf-8") as results_file:
            results_file.write("\n" + render_markdown(report))
        print(f"appended to {args.append_results}")


if __name__ == "__main__":
    main()
