"""The exceptions driftstream raises: one small hierarchy an operator can act on."""

from __future__ import annotations


class DriftstreamError(Exception):
    """Base of every error driftstream raises on purpose."""


class ConfigError(DriftstreamError):
    """The configuration file or an environment override is not usable."""


class TopicLayoutError(DriftstreamError):
    """The input topics are missing or not co-partitioned."""


class KafkaSetupError(DriftstreamError):
    """Kafka could not be reached or set up (broker, topics, local broker)."""


class EndpointError(DriftstreamError):
    """The HTTP endpoint cannot listen where it was told to."""
