"""Fixtures of the alerting tests: real Prometheus and Alertmanager on loopback.

The binaries are Debian's ``prometheus`` (2.42) and
``prometheus-alertmanager`` (0.25), which ``scripts/install-tools`` installs.
A missing binary fails the test that needs it, naming that script: CI installs
both, so a skip would only hide a broken install step (the chart tests do the
same, ``tests/chart/tooling.require_tool``).

When a test fails, the report shows the log of every process the harness has
running at that moment (driftstream, Prometheus with the alerts it holds,
Alertmanager) and what the webhook received.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.alerting.harness import (
    AlertingStack,
    Binaries,
    StartStack,
    diagnostics_since,
    running_stack,
)
from tests.chart.tooling import require_tool


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for name, text in diagnostics_since(call.start):
            report.sections.append((f"{name} ({report.when})", text))
    return report


@pytest.fixture(scope="session")
def alerting_binaries() -> Binaries:
    return Binaries(
        prometheus=require_tool("prometheus"),
        alertmanager=require_tool("prometheus-alertmanager"),
    )


@pytest.fixture
def start_alerting(alerting_binaries: Binaries, tmp_path: Path) -> Iterator[StartStack]:
    """``start_alerting(target)``: webhook, Alertmanager, Prometheus scraping it.

    A factory, so that the test starts Prometheus only once its target serves:
    a target that is down when Prometheus first scrapes it would start the
    DriftstreamDown alert's clock. Everything stops when the test ends.
    """
    started = itertools.count()
    with ExitStack() as stacks:

        def start(target: str) -> AlertingStack:
            directory = tmp_path / f"alerting-{next(started)}"
            return stacks.enter_context(
                running_stack(alerting_binaries, directory, target=target)
            )

        yield start
