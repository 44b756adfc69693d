"""Fixtures of the chart, image and compose tests: the tools they run."""

from __future__ import annotations

import pytest

from tests.chart.tooling import require_tool


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return require_tool("hadolint")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool")


@pytest.fixture(scope="session")
def compose_check() -> str:
    return require_tool("compose-check")
