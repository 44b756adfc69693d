"""False alarms and detection delay of ``streamer.drift.LossCusum`` on log losses.

A script, not a test. On stable synthetic streams of per-event log loss it
measures how often the CUSUM raises a false alarm at the configured ARL0
(target: at most 1 per 1e6 events), and how many events it needs to detect
shifts of +10 %, +20 % and +50 % in the mean loss; then how fast ``update``
is. It prints the tables and writes them to ``benchmarks/drift_results.md``.

    .venv/bin/python benchmarks/drift_false_alarms.py            # ~2 minutes, 2 cores
    .venv/bin/python benchmarks/drift_false_alarms.py --quick    # a smoke run

Streams (binary, calibrated while stable; the loss is ``streamer.loss``'s):

- ``beta(1,3)``: ``p ~ Beta(1, 3)``, ``y ~ Bernoulli(p)``. Shifted: the
  model turns overconfident, reporting ``sigmoid(g * logit(p))`` with
  ``g > 1`` while the labels still follow ``p``.
- ``fraud``: the demo generator's fraud model (``streamer.generate``: prior
  0.1, separation 1.5, the exact posterior as the prediction). Shifted: the
  generator's drift, the scores lose separation while the model maps them
  as before.

Each shift's parameter is solved so that the expected mean loss rises by
exactly that share.

Detectors. The baseline is learned from a reference window of 1e6 stable
events (``Baseline.from_window`` of its sums). Each stream gets detectors
tuned for a smallest shift of 10 % and of 50 % (``shift_std = r * mean /
std``), each with three thresholds for ARL0 = 1e6: Siegmund's Gaussian one, and
``calibrate_threshold`` on the reference window's losses, with
``margin_std=0`` and with its default margin (``2 / sqrt(reference
events)``, for the baseline's own sampling error). There are 8 reference
windows per stream, each with its own detectors, so that the rates average
over the luck of the reference too.

False alarms: every detector runs on the same fresh stable events (never the
reference), restarting after each alarm; the rate is alarms per 1e6 events
with an exact Poisson 95 % interval. Delay: after a warm-up of 20 000 stable
events (so the statistic starts from its stable state, not from 0) the stream
shifts; the delay is the number of events from the shift to the first alarm,
over independent replicates, censored at a cap.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2  # type: ignore[import-untyped]  # via scikit-learn

from streamer.drift import (
    Baseline,
    LossCusum,
    calibrate_threshold,
    siegmund_threshold,
)
from streamer.loss import binary_log_loss

FloatArray = NDArray[np.float64]

ARL0_EVENTS = 1e6
REFERENCE_EVENTS = 1_000_000
TUNED_SHIFTS = (0.1, 0.5)
DETECTED_SHIFTS = (0.1, 0.2, 0.5)
WARM_UP_EVENTS = 20_000
CHUNK_EVENTS = 1 << 20
DELAY_CHUNK_EVENTS = 2048
RESULTS = Path(__file__).with_name("drift_results.md")

FRAUD_PRIOR, FRAUD_SEPARATION = 0.1, 1.5
QUADRATURE_POINTS = 200_000


# --- streams ---------------------------------------------------------------------


def beta_losses(rng: np.random.Generator, events: int, drift: float) -> FloatArray:
    """``drift`` is the overconfidence ``g - 1`` of the reported log-odds."""
    p = rng.beta(1.0, 3.0, events)
    return binary_log_loss(_overconfident(p, 1.0 + drift), rng.random(events) < p)


def fraud_losses(rng: np.random.Generator, events: int, drift: float) -> FloatArray:
    """``drift`` is the share of separation lost, as in ``streamer.generate``."""
    label = rng.random(events) < FRAUD_PRIOR
    noise = rng.standard_normal(events)
    return binary_log_loss(_fraud_probability(label, noise, drift), label)


def _overconfident(p: FloatArray, factor: float) -> FloatArray:
    if factor == 1.0:
        return p
    with np.errstate(divide="ignore"):
        log_odds = np.log(p) - np.log1p(-p)
    return np.exp(-np.logaddexp(0.0, -factor * log_odds))


def _fraud_probability(
    label: NDArray[np.bool_], noise: FloatArray, drift: float
) -> FloatArray:
    separation = FRAUD_SEPARATION * (1.0 - drift)
    score = np.where(label, separation, -separation) + noise
    prior_logit = math.log(FRAUD_PRIOR / (1.0 - FRAUD_PRIOR))
    return np.exp(-np.logaddexp(0.0, -(2.0 * FRAUD_SEPARATION * score + prior_logit)))


def beta_expected_loss(drift: float) -> float:
    """The population mean loss: the expectation over ``y`` given ``p``, then
    the midpoint rule over ``p`` against the Beta(1, 3) density."""
    p = (np.arange(QUADRATURE_POINTS) + 0.5) / QUADRATURE_POINTS
    density = 3.0 * (1.0 - p) ** 2
    return float(np.mean(density * _expected_given(p, _overconfident(p, 1.0 + drift))))


def fraud_expected_loss(drift: float) -> float:
    """The population mean loss, by Gauss-Hermite quadrature over the score noise."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / math.sqrt(2.0 * math.pi)
    total = 0.0
    for label, share in ((True, FRAUD_PRIOR), (False, 1.0 - FRAUD_PRIOR)):
        labels = np.full(nodes.size, label)
        loss = binary_log_loss(_fraud_probability(labels, nodes, drift), labels)
        total += share * float(weights @ loss)
    return total


def _expected_given(p: FloatArray, reported: FloatArray) -> FloatArray:
    positive = binary_log_loss(reported, np.ones(p.size, dtype=np.bool_))
    negative = binary_log_loss(reported, np.zeros(p.size, dtype=np.bool_))
    return p * positive + (1.0 - p) * negative


@dataclass(frozen=True)
class Stream:
    name: str
    draw: Callable[[np.random.Generator, int, float], FloatArray]
    expected_loss: Callable[[float], float]
    drift_upper: float

    def drift_for(self, relative_shift: float) -> float:
        """The drift parameter whose expected mean loss is ``1 + shift`` times."""
        stable = self.expected_loss(0.0)
        low, high = 0.0, self.drift_upper
        for _ in range(40):
            middle = (low + high) / 2.0
            if self.expected_loss(middle) < stable * (1.0 + relative_shift):
                low = middle
            else:
                high = middle
        return (low + high) / 2.0


STREAMS = (
    Stream("beta(1,3)", beta_losses, beta_expected_loss, drift_upper=20.0),
    Stream("fraud", fraud_losses, fraud_expected_loss, drift_upper=0.99),
)
STREAMS_BY_NAME = {stream.name: stream for stream in STREAMS}
DRAWS = {stream.name: stream.draw for stream in STREAMS}
METHODS = ("Siegmund (Gaussian)", "calibrated, no margin", "calibrated (default)")


# --- detectors -------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One detector built on one reference window."""

    stream: str
    tuned_for: float
    method: str
    state: dict[str, Any]
    adjustment_ratio: float | None
    calibration_s: float

    @property
    def key(self) -> tuple[str, float, str]:
        return (self.stream, self.tuned_for, self.method)

    @property
    def threshold(self) -> float:
        return float(self.state["threshold"])

    @property
    def allowance_std(self) -> float:
        return float(self.state["shift_std"]) / 2.0


@dataclass(frozen=True)
class Reference:
    """A reference window: the baseline learned from it and how lucky it was."""

    stream: str
    baseline: Baseline
    skewness: float
    offset_se: float
    """Reference mean minus the population mean, in standard errors."""
    detectors: tuple[Detector, ...]


def prepare_task(task: tuple[str, int]) -> Reference:
    """Draw a reference window, learn its baseline, build every detector on it."""
    name, seed = task
    stream = STREAMS_BY_NAME[name]
    losses = stream.draw(np.random.default_rng(seed), REFERENCE_EVENTS, 0.0)
    baseline = Baseline.from_window(
        losses.size, float(losses.sum()), float(np.square(losses).sum())
    )

    standardised = (losses - baseline.mean_loss) / baseline.std_loss
    standard_error = baseline.std_loss / math.sqrt(losses.size)
    offset = (baseline.mean_loss - stream.expected_loss(0.0)) / standard_error
    return Reference(
        stream=name,
        baseline=baseline,
        skewness=float(np.mean(standardised**3)),
        offset_se=offset,
        detectors=tuple(_detectors(name, baseline, losses)),
    )


def _detectors(name: str, baseline: Baseline, losses: FloatArray) -> list[Detector]:
    result = []
    for tuned_for in TUNED_SHIFTS:
        shift_std = tuned_for * baseline.mean_loss / baseline.std_loss
        siegmund = siegmund_threshold(shift_std=shift_std, arl0_events=ARL0_EVENTS)
        thresholds: list[tuple[str, float, float | None, float]] = [
            (METHODS[0], siegmund, None, 0.0)
        ]
        for method, margin_std in zip(METHODS[1:], (0.0, None), strict=True):
            started = time.perf_counter()
            calibration = calibrate_threshold(
                losses,
                baseline=baseline,
                shift_std=shift_std,
                arl0_events=ARL0_EVENTS,
                margin_std=margin_std,
            )
            elapsed = time.perf_counter() - started
            ratio = calibration.adjustment / shift_std
            thresholds.append((method, calibration.threshold, ratio, elapsed))

        for method, threshold, theta_ratio, elapsed in thresholds:
            detector = LossCusum(baseline, shift_std=shift_std, threshold=threshold)
            state = detector.to_state()
            result.append(
                Detector(name, tuned_for, method, state, theta_ratio, elapsed)
            )
    return result


# --- work done in the pool -------------------------------------------------------


def false_alarm_task(task: tuple[Reference, int, int]) -> list[int]:
    """Alarms of each detector of a reference on ``events`` fresh stable events."""
    reference, events, seed = task
    detectors = [LossCusum.from_state(d.state) for d in reference.detectors]
    rng = np.random.default_rng(seed)
    for start in range(0, events, CHUNK_EVENTS):
        losses = DRAWS[reference.stream](rng, min(CHUNK_EVENTS, events - start), 0.0)
        for detector in detectors:
            detector.update(losses)
    return [detector.alarms for detector in detectors]


def delay_task(
    task: tuple[Reference, list[float], int, int],
) -> list[list[int | None]]:
    """Per shift and detector: events from the shift to the first alarm."""
    reference, drifts, cap, seed = task
    rng = np.random.default_rng(seed)
    warm = [LossCusum.from_state(d.state) for d in reference.detectors]
    stable = DRAWS[reference.stream](rng, WARM_UP_EVENTS, 0.0)
    for detector in warm:
        detector.update(stable)

    return [_delays(reference.stream, warm, drift, cap, rng) for drift in drifts]


def _delays(
    stream: str,
    warm: Sequence[LossCusum],
    drift: float,
    cap: int,
    rng: np.random.Generator,
) -> list[int | None]:
    # Keep each warmed-up statistic, clear the counters: first_alarm_event
    # then counts from the shift.
    cleared: dict[str, object] = {"events": 0, "alarms": 0, "drift_detected": False}
    cleared |= {"first_alarm_event": None, "last_alarm_event": None}
    detectors = [LossCusum.from_state(d.to_state() | cleared) for d in warm]

    seen = 0
    while seen < cap and any(d.alarms == 0 for d in detectors):
        losses = DRAWS[stream](rng, DELAY_CHUNK_EVENTS, drift)
        for detector in detectors:
            if detector.alarms == 0:
                detector.update(losses)
        seen += losses.size
    return [
        d.first_alarm_event
        if d.first_alarm_event is not None and d.first_alarm_event <= cap
        else None
        for d in detectors
    ]


# --- speed -----------------------------------------------------------------------


def naive_update(
    losses: FloatArray, mean: float, std: float, allowance: float, threshold: float
) -> int:
    statistic, alarms = 0.0, 0
    for loss in losses.tolist():
        statistic = max(0.0, statistic + (loss - mean) / std - allowance)
        if statistic > threshold:
            alarms, statistic = alarms + 1, 0.0
    return alarms


def speed(detector: Detector, quick: bool) -> list[tuple[str, float]]:
    """Events per second of the vectorised update, the naive loop and the draws."""
    rng = np.random.default_rng(99)
    events = 1_000_000 if quick else 4_000_000
    stable = DRAWS[detector.stream](rng, events, 0.0)
    shifted = DRAWS[detector.stream](
        rng, events, 4.0 if "beta" in detector.stream else 0.6
    )

    def per_second(run: Callable[[], object], count: int) -> float:
        started = time.perf_counter()
        run()
        return count / (time.perf_counter() - started)

    def batches(losses: FloatArray, size: int) -> Callable[[], None]:
        def run() -> None:
            cusum = LossCusum.from_state(detector.state)
            for start in range(0, losses.size, size):
                cusum.update(losses[start : start + size])

        return run

    baseline = LossCusum.from_state(detector.state).baseline
    naive_events = 500_000
    drifting = LossCusum.from_state(detector.state)
    drifting.update(shifted)
    spacing = shifted.size / max(drifting.alarms, 1)
    return [
        (
            "vectorised, batches of 10 000, stable",
            per_second(batches(stable, 10_000), events),
        ),
        (
            "vectorised, batches of 500, stable",
            per_second(batches(stable, 500), events),
        ),
        (
            f"vectorised, batches of 10 000, drifting (an alarm every {spacing:,.0f} "
            "events)",
            per_second(batches(shifted, 10_000), events),
        ),
        (
            "naive Python loop per event",
            per_second(
                lambda: naive_update(
                    stable[:naive_events],
                    baseline.mean_loss,
                    baseline.std_loss,
                    detector.state["shift_std"] / 2.0,
                    detector.threshold,
                ),
                naive_events,
            ),
        ),
        (
            f"drawing {detector.stream} losses (for scale)",
            per_second(lambda: DRAWS[detector.stream](rng, events, 0.0), events),
        ),
    ]


# --- report ----------------------------------------------------------------------

Key = tuple[str, float, str]


@dataclass
class Tally:
    """Everything measured for one kind of detector, over all reference windows."""

    detectors: list[Detector]
    alarms: int = 0
    events: int = 0
    delays: list[list[int | None]] | None = None


def poisson_interval(count: int) -> tuple[float, float]:
    """Exact (Garwood) 95 % interval of a Poisson mean observed as ``count``."""
    low = 0.0 if count == 0 else chi2.ppf(0.025, 2 * count) / 2.0
    return float(low), float(chi2.ppf(0.975, 2 * count + 2) / 2.0)


def delay_cell(delays: Sequence[int | None], cap: int) -> str:
    censored = sum(delay is None for delay in delays)
    values = np.array([cap if delay is None else delay for delay in delays], float)
    median, p90 = np.percentile(values, [50, 90])
    if censored * 2 > len(delays):
        return f"> {cap:,} ({censored}/{len(delays)} undetected)"
    text = f"{median:,.0f} ({p90:,.0f})"
    return text + (f", {censored} undetected" if censored else "")


def header(command: str, elapsed_s: float, workers: int) -> list[str]:
    return [
        "# Drift detector: false alarms and detection delay",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: nproc={os.cpu_count()}, {platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}; "
        f"{workers} worker processes",
        f"- command: `{command}` ({elapsed_s:.0f} s)",
        f"- target: ARL0 = {ARL0_EVENTS:.0e} events, at most 1 false alarm per "
        "1e6 events",
        "",
    ]


def stream_table(
    references: list[Reference], shifts: dict[str, list[float]]
) -> list[str]:
    lines = [
        "## Streams",
        "",
        f"Each stream has {len(references) // len(STREAMS)} reference windows of "
        f"{REFERENCE_EVENTS:,} events; the baseline of each is learned from it.",
        "",
        "| stream | mean loss | std | skewness | reference means vs population "
        "| drift parameter for +10 % / +20 % / +50 % |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for stream in STREAMS:
        mine = [r for r in references if r.stream == stream.name]
        offsets = sorted(r.offset_se for r in mine)
        lines.append(
            f"| {stream.name} | {np.mean([r.baseline.mean_loss for r in mine]):.4f} | "
            f"{np.mean([r.baseline.std_loss for r in mine]):.4f} | "
            f"{np.mean([r.skewness for r in mine]):.2f} | "
            f"{offsets[0]:+.2f} to {offsets[-1]:+.2f} SE | "
            + " / ".join(f"{drift:.4f}" for drift in shifts[stream.name])
            + " |"
        )
    return [*lines, ""]


def false_alarm_table(tallies: dict[Key, Tally]) -> list[str]:
    lines = [
        "## False alarms on stable streams",
        "",
        "k, h and theta / 2k are means over the reference windows; theta is the "
        "exponent `calibrate_threshold` found (2k for Gaussian losses).",
        "",
        "| stream | tuned for | k (std) | threshold | h (std) | theta / 2k | alarms "
        "| events | per 1e6 events (95 % CI) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (stream, tuned_for, method), tally in tallies.items():
        low, high = poisson_interval(tally.alarms)
        ratios = [d.adjustment_ratio for d in tally.detectors]
        known = [r for r in ratios if r is not None]
        ratio = "—" if len(known) < len(ratios) else f"{np.mean(known):.3f}"
        rate = tally.alarms / tally.events * 1e6
        lines.append(
            f"| {stream} | +{tuned_for:.0%} | "
            f"{np.mean([d.allowance_std for d in tally.detectors]):.4f} | {method} | "
            f"{np.mean([d.threshold for d in tally.detectors]):.1f} | {ratio} | "
            f"{tally.alarms} | {tally.events:.2e} | **{rate:.2f}** "
            f"({low / tally.events * 1e6:.2f} to {high / tally.events * 1e6:.2f}) |"
        )
    return [*lines, ""]


def delay_table(tallies: dict[Key, Tally], cap: int) -> list[str]:
    replicates = len(next(iter(tallies.values())).delays[0])  # type: ignore[index]
    lines = [
        "## Detection delay",
        "",
        "Events from the shift to the first alarm, after 20 000 stable events: "
        f"median (90th percentile) over {replicates} replicates, censored at "
        f"{cap:,} events.",
        "",
        "| stream | tuned for | threshold | "
        + " | ".join(f"+{shift:.0%} mean loss" for shift in DETECTED_SHIFTS)
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in DETECTED_SHIFTS) + " |",
    ]
    for (stream, tuned_for, method), tally in tallies.items():
        assert tally.delays is not None
        cells = [delay_cell(per_shift, cap) for per_shift in tally.delays]
        lines.append(
            f"| {stream} | +{tuned_for:.0%} | {method} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


def speed_table(
    speeds: list[tuple[str, float]], tallies: dict[Key, Tally]
) -> list[str]:
    seconds = [
        d.calibration_s
        for t in tallies.values()
        for d in t.detectors
        if d.calibration_s
    ]
    return [
        "## Speed (one core)",
        "",
        "| what | events/s |",
        "| --- | --- |",
        *(f"| {name} | {rate / 1e6:.1f} M |" for name, rate in speeds),
        "",
        f"`calibrate_threshold` on {REFERENCE_EVENTS:,} reference losses took "
        f"{min(seconds):.2f} to {max(seconds):.2f} s.",
        "",
    ]


NOTES = [
    "## How these are measured",
    "",
    "- Losses are `streamer.loss.binary_log_loss` of a calibrated binary model: "
    "`beta(1,3)` has p ~ Beta(1, 3), y ~ Bernoulli(p); `fraud` is the demo "
    "generator's fraud model. Shifts make the model overconfident (beta: the "
    "reported log-odds scaled up; fraud: the generator's loss of separation), "
    "solved so that the population mean loss rises by exactly 10, 20, 50 %.",
    "- A baseline is `Baseline.from_window` of a reference window of stable "
    "events; `tuned for +r` means `shift_std = r * mean / std`, `k = shift_std "
    "/ 2`. False alarms are counted on fresh stable events, the detector "
    "restarting after each one, so alarms / events estimates 1 / ARL0; the "
    "interval is the exact Poisson one.",
    "- `Siegmund (Gaussian)` is `siegmund_threshold`; `calibrated` is "
    "`calibrate_threshold` on the reference window's own losses (pilot run "
    "of 2e6 resampled events at ARL0 ~ 1e3, extrapolated with the exact "
    "exponent theta); `no margin` trusts the learned baseline mean exactly, "
    "`default` allows for its sampling error (`margin_std = 2 / sqrt(n)`).",
    "- Delay: 20 000 stable events, then the shift; the statistic is kept "
    "across it, so this is the delay from a detector in its stable state.",
    "",
]


# --- main ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events-per-stream",
        type=float,
        default=4e8,
        help="stable events for the false-alarm rate, per stream (default 4e8)",
    )
    parser.add_argument("--references", type=int, default=8, help="per stream")
    parser.add_argument("--replicates", type=int, default=100, help="delay runs")
    parser.add_argument("--delay-cap", type=int, default=300_000, help="events")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events_per_stream, args.replicates, args.delay_cap = 2e7, 20, 100_000

    started = time.perf_counter()
    seeds = iter(np.random.SeedSequence(args.seed).generate_state(10_000).tolist())
    shifts = {
        s.name: [s.drift_for(shift) for shift in DETECTED_SHIFTS] for s in STREAMS
    }

    with multiprocessing.Pool(args.workers) as pool:
        references = pool.map(
            prepare_task,
            [(s.name, next(seeds)) for s in STREAMS for _ in range(args.references)],
        )
        progress("references and thresholds", started)

        events = int(args.events_per_stream) // args.references
        alarm_tasks = [(r, events, next(seeds)) for r in references]
        per_stream = {
            s.name: [r for r in references if r.stream == s.name] for s in STREAMS
        }
        delay_tasks = [
            (
                per_stream[s.name][i % args.references],
                shifts[s.name],
                args.delay_cap,
                next(seeds),
            )
            for s in STREAMS
            for i in range(args.replicates)
        ]
        alarm_results = pool.map_async(false_alarm_task, alarm_tasks)
        delay_results = pool.map_async(delay_task, delay_tasks)
        alarms = alarm_results.get()
        progress("false alarms", started)
        delays = delay_results.get()
        progress("delays", started)

    tallies = tally(references, alarms, events, delay_tasks, delays)
    fraud = next(d for d in references[-1].detectors if d.tuned_for == 0.1)
    speeds = speed(fraud, args.quick)

    report = "\n".join(
        [
            *header(
                " ".join([".venv/bin/python", *sys.argv]),
                time.perf_counter() - started,
                args.workers,
            ),
            *stream_table(references, shifts),
            *false_alarm_table(tallies),
            *delay_table(tallies, args.delay_cap),
            *speed_table(speeds, tallies),
            *NOTES,
        ]
    )
    print(report)
    args.output.write_text(report)
    return 0


def tally(
    references: list[Reference],
    alarms: list[list[int]],
    events: int,
    delay_tasks: list[tuple[Reference, list[float], int, int]],
    delays: list[list[list[int | None]]],
) -> dict[Key, Tally]:
    tallies: dict[Key, Tally] = {}
    for reference, counts in zip(references, alarms, strict=True):
        for detector, count in zip(reference.detectors, counts, strict=True):
            entry = tallies.setdefault(detector.key, Tally([]))
            entry.detectors.append(detector)
            entry.alarms += count
            entry.events += events

    for (reference, *_), per_shift in zip(delay_tasks, delays, strict=True):
        for shift_index, per_detector in enumerate(per_shift):
            for detector, delay in zip(reference.detectors, per_detector, strict=True):
                entry = tallies[detector.key]
                if entry.delays is None:
                    entry.delays = [[] for _ in DETECTED_SHIFTS]
                entry.delays[shift_index].append(delay)
    return tallies


def progress(step: str, started: float) -> None:
    print(f"{step} done at {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
