"""Shared fixtures: the session's local Apache Kafka broker, unique topic names.

The broker starts the first time a test asks for ``kafka_bootstrap`` (or
``local_kafka``) and stops when the session ends, so a run of unit tests
alone never starts one. A test that uses either fixture is marked
``integration`` here even if it forgot the mark, so ``-m "not integration"``
selects exactly the tests that need no broker.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from streamer.localkafka import LocalKafka

_BROKER_FIXTURES = frozenset({"kafka_bootstrap", "local_kafka"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_broker = _BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_broker and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_kafka() -> Iterator[LocalKafka]:
    """The session's broker. Shared: do not stop or restart it.

    A test that needs to stop or restart a broker starts a ``LocalKafka`` of
    its own.
    """
    with LocalKafka() as kafka:
        yield kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka) -> str:
    """``bootstrap.servers`` of the session's broker: ``"127.0.0.1:PORT"``."""
    return local_kafka.bootstrap_servers


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic-name prefix no other test shares: the test's name and a random tag.

    Use it as ``f"{topic_prefix}.predictions"``; the session's broker keeps
    every topic until the session ends.
    """
    test_name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")
    return f"{test_name[:80]}-{uuid.uuid4().hex[:8]}"
