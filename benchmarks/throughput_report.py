"""The figures of ``throughput.py``: the machine, the table, the ratios, the targets.

Pure formatting over the results the measurements returned; ``render_text``
is what the command prints, ``render_markdown`` the section it appends to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import confluent_kafka

from streamer.localkafka import KAFKA_VERSION

GIB = 1 << 30
MIB = 1 << 20

TARGET_VS_LIMIT = 0.60
TARGET_VS_PEER = 10.0
TARGET_PENDING = 1_000_000
TARGET_BYTES_PER_PENDING = 120.0

ROWS = (
    ("bare", "(a) bare consume() loop"),
    ("decode", "(a) consume() + orjson.loads"),
    ("pipeline", "(b) driftstream, consume to windows"),
    ("peer", "(c) Quix Streams peer"),
)


@dataclass(frozen=True)
class Report:
    command: str
    events: int
    partitions: int
    pending: int
    results: dict[str, Any]
    machine: dict[str, str]
    total_s: float

    def ratio(self, numerator: str, denominator: str) -> float | None:
        if numerator not in self.results or denominator not in self.results:
            return None
        return float(
            self.results[numerator]["messages_per_s"]
            / self.results[denominator]["messages_per_s"]
        )

    def targets(self) -> list[tuple[str, str, bool | None]]:
        """(what, measured, met) for each of the issue's three targets."""
        vs_limit = self.ratio("pipeline", "decode")
        vs_peer = self.ratio("pipeline", "peer")
        per_pending = self.results["pending_all"]["bytes_per_pending"]
        return [
            (
                f"b >= {TARGET_VS_LIMIT:.0%} of consume + decode",
                _fmt_ratio(vs_limit, percent=True),
                None if vs_limit is None else vs_limit >= TARGET_VS_LIMIT,
            ),
            (
                f"b >= {TARGET_VS_PEER:g} x the peer",
                _fmt_ratio(vs_peer),
                None if vs_peer is None else vs_peer >= TARGET_VS_PEER,
            ),
            (
                f"<= {TARGET_BYTES_PER_PENDING:g} bytes per pending prediction "
                f"at {TARGET_PENDING:,} pending",
                f"{per_pending:.0f} bytes at {self.pending:,}"
                + ("" if self.pending == TARGET_PENDING else " (rerun at 10^6)"),
                # Fixed costs (arenas, tables) weigh on a smaller count, so
                # the target is judged only where it is set.
                per_pending <= TARGET_BYTES_PER_PENDING
                if self.pending == TARGET_PENDING
                else None,
            ),
        ]


def machine_facts(
    load_before: tuple[float, float, float], load_after: tuple[float, float, float]
) -> dict[str, str]:
    cpu_model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    with open("/etc/debian_version", encoding="ascii") as debian:
        debian_version = debian.read().strip()
    java = subprocess.run(
        ["java", "-version"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {cpu_model}",
        "memory": f"{mem_kib / (1 << 20):.0f} GiB",
        "os": f"Debian {debian_version}, Linux {platform.release()}",
        "python": platform.python_version(),
        "client": f"confluent-kafka {confluent_kafka.version()}, librdkafka "
        f"{confluent_kafka.libversion()[0]}",
        "broker": f"Apache Kafka {KAFKA_VERSION} (local, single node, loopback), "
        f"{java[0] if java else 'java ?'}",
        "load": f"load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after (1 min)",
    }


def _fmt_ratio(value: float | None, *, percent: bool = False) -> str:
    if value is None:
        return "not measured"
    return f"{value:.0%}" if percent else f"{value:.1f} x"


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "NOT met")


def _table_rows(report: Report) -> list[list[str]]:
    rows = []
    for key, label in ROWS:
        result = report.results.get(key)
        if result is None:
            continue
        rows.append(
            [
                label,
                f"{result['messages']:,}",
                f"{result['elapsed_s']:.1f}",
                f"{result['messages_per_s']:,.0f}",
                f"{result['cpu_s']:.1f}",
                f"{result['cpu_s'] / result['messages'] * 1e6:.2f}",
                f"{result['peak_rss_bytes'] / MIB:,.0f}",
                f"{result['load_1m']:.1f}",
            ]
        )
    return rows


HEADER = [
    "measurement",
    "messages",
    "s",
    "msg/s",
    "CPU s",
    "CPU us/msg",
    "peak MiB",
    "load",
]


def _memory_lines(report: Report) -> list[str]:
    results = report.results
    per_pending = results["pending_all"]["bytes_per_pending"]
    lines = [
        f"bytes per pending prediction at {report.pending:,} pending (RSS delta / "
        f"count): {per_pending:.0f} (binary models only: "
        f"{results['pending_binary']['bytes_per_pending']:.0f}, multiclass only: "
        f"{results['pending_multiclass']['bytes_per_pending']:.0f}; Python "
        f"objects only, by tracemalloc at {results['pending_traced']['pending']:,} "
        f"pending: {results['pending_traced']['traced_bytes_per_pending']:.0f}, "
        "the join's native memory not traced)",
        f"largest pending count in 1 GiB: {GIB / per_pending:,.0f}",
    ]
    return lines


def _limit_runs(report: Report) -> str:
    labels = (("bare_runs", "(a) bare"), ("decode_runs", "(a) + decode"))
    labels += (("pipeline_runs", "(b)"),)
    parts = [
        f"{label} " + ", ".join(f"{rate:,.0f}" for rate in report.results[key])
        for key, label in labels
        if key in report.results
    ]
    return "msg/s of each run, the median in the table: " + "; ".join(parts)


def _guard(report: Report) -> str:
    ids = report.results["pipeline"]["duplicate_guard_ids"]
    return f"{ids:,} joined event ids"


def _late_line(report: Report) -> str:
    """Events the windows dropped as too old: counted, but worth knowing."""
    ours = report.results["pipeline"]["late"]
    line = "events dropped as late: driftstream " + ", ".join(
        f"{window} {count:,}" for window, count in sorted(ours.items())
    )
    if "peer" in report.results:
        line += f"; peer (1 h window) {report.results['peer']['late']:,}"
    return line


def _cross_check(report: Report) -> str | None:
    """Per-model mean log loss, driftstream's 24h window against the peer."""
    if "peer" not in report.results:
        return None
    ours = report.results["pipeline"]["mean_log_loss_by_model"]
    theirs = report.results["peer"]["mean_log_loss_by_model"]
    if set(ours) != set(theirs):
        return f"models differ: driftstream {sorted(ours)}, peer {sorted(theirs)}"
    worst = max(abs(ours[model] - theirs[model]) for model in ours)
    return (
        f"mean log loss per model over all events, driftstream (24h window) vs "
        f"peer: largest difference {worst:.1e}"
    )


def render_text(report: Report) -> str:
    rows = _table_rows(report)
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [HEADER, *rows]
    ]
    lines.append("")
    lines.append(_limit_runs(report))
    vs_decode = _fmt_ratio(report.ratio("pipeline", "decode"), percent=True)
    lines.append(f"b / (a + decode): {vs_decode}")
    vs_bare = _fmt_ratio(report.ratio("pipeline", "bare"), percent=True)
    lines.append(f"b / a bare: {vs_bare}")
    lines.append(f"b / c: {_fmt_ratio(report.ratio('pipeline', 'peer'))}")
    lines.extend(_memory_lines(report))
    lines.append(_late_line(report))
    check = _cross_check(report)
    if check:
        lines.append(check)
    lines.append("")
    for what, measured, met in report.targets():
        lines.append(f"target {what}: {measured}, {_met(met)}")
    profile = report.results.get("profile")
    if profile:
        lines.append("")
        lines.append(f"(b) own time, py-spy, {profile['samples']} samples:")
        for entry in profile["top"]:
            lines.append(f"  {entry['share']:6.1%}  {entry['function']}")
    lines.append(f"\ntotal {report.total_s:.0f} s; {report.machine['load']}")
    lines.append(f"duplicate guard at the end of (b): {_guard(report)}")
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    machine = report.machine
    results = report.results
    produce = results["produce"]
    lines = [
        f"## Throughput and memory: {report.events:,} events, "
        f"{2 * report.events:,} messages, {report.partitions} partitions",
        "",
        f"Command: `{report.command}` (total {report.total_s / 60:.1f} min, "
        f"producing the data set {produce['produce_s']:.0f} s of it).",
        f"Machine: {machine['cpu']}, {machine['memory']}, {machine['os']}, Python "
        f"{machine['python']}, {machine['client']}; {machine['broker']}. "
        f"Shared with other work (a test suite now and then): "
        f"{machine['load']}.",
        f"Date: {machine['date']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| --- |" + " ---: |" * (len(HEADER) - 1),
        *("| " + " | ".join(row) + " |" for row in _table_rows(report)),
        "",
        "msg/s and CPU s from the first batch in hand to the last message; peak "
        "MiB over the subprocess's life; load: the 1-minute load average as the "
        "measurement started (2 cores, the broker on the same machine).",
        "",
        "Ratios of msg/s: b / (a + decode) "
        f"{_fmt_ratio(report.ratio('pipeline', 'decode'), percent=True)}; "
        f"b / a bare {_fmt_ratio(report.ratio('pipeline', 'bare'), percent=True)}; "
        f"b / c {_fmt_ratio(report.ratio('pipeline', 'peer'))}.",
        "",
        f"- {_limit_runs(report)}",
        *(f"- {line}" for line in _memory_lines(report)),
        f"- {_late_line(report)}",
        f"- the duplicate guard held {_guard(report)} at the end of (b)",
    ]
    check = _cross_check(report)
    if check:
        lines.append(f"- {check}")
    if "peer_versions" in results:
        versions = results["peer_versions"]
        lines.append(
            f"- peer: Quix Streams {versions['quixstreams']} on confluent-kafka "
            f"{versions['confluent_kafka']} (librdkafka {versions['librdkafka']})"
        )
    lines += ["", "| target | measured | |", "| --- | ---: | --- |"]
    lines += [
        f"| {what} | {measured} | {_met(met)} |"
        for what, measured, met in report.targets()
    ]
    profile = results.get("profile")
    if profile:
        lines += [
            "",
            f"Profile of (b), a second run under py-spy at {profile['rate_hz']} Hz "
            f"({profile['messages_per_s']:,.0f} msg/s while sampled): own time "
            "in the consume loop by the frame on top, native ones included "
            "(`py-spy --native`: Rust in `streamer/_native*.so`, librdkafka and "
            "confluent-kafka's C in `cimpl`), "
            f"{profile['samples']:,} samples:",
            "",
            "| own time | function |",
            "| ---: | --- |",
            *(
                f"| {entry['share']:.1%} | `{entry['function']}` |"
                for entry in profile["top"]
            ),
        ]
    return "\n".join(lines) + "\n"
