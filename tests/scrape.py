"""Read a /metrics page into plain values, for assertions."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """Samples by name; each sample is (labels, value)."""

    samples: dict[str, list[tuple[dict[str, str], float]]]
    text: str

    def value(self, name: str, **labels: str) -> float:
        """The single sample of ``name`` whose labels include ``labels``."""
        found = [
            value
            for sample_labels, value in self.samples.get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        ]
        if len(found) != 1:
            raise AssertionError(
                f"expected one sample of {name} with {labels}, found {len(found)}"
            )
        return found[0]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample_labels, value in self.samples.get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def series(self, name: str) -> list[dict[str, str]]:
        return [labels for labels, _ in self.samples.get(name, [])]


def parse(text: str) -> Scrape:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(
                (dict(sample.labels), sample.value)
            )
    return Scrape(samples, text)


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return parse(response.read().decode())


def wait_for(
    url: str, condition: Callable[[Scrape], bool], *, timeout_s: float = 60.0
) -> Scrape:
    """Scrape until ``condition`` holds; fail with the last page otherwise."""
    import time

    deadline = time.monotonic() + timeout_s
    last = scrape(url)
    while not condition(last):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met within {timeout_s} s; last scrape:\n{last.text}"
            )
        time.sleep(0.2)
        last = scrape(url)
    return last


def assert_promtool_accepts(text: str) -> None:
    """``promtool check metrics`` passes on ``text``; a missing promtool fails."""
    import subprocess

    from tests.chart.tooling import require_tool

    checked = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
