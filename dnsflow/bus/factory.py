"""Pick the bus from settings: Kafka when a bootstrap is given, in-process otherwise."""

from __future__ import annotations

from dnsflow.bus.base import Bus
from dnsflow.topics import Topics


def open_bus(kafka: str | None, prefix: str = "dnsflow.") -> Bus:
    topics = Topics(prefix)
    if kafka:
        from dnsflow.bus.kafka import KafkaBus

        return KafkaBus(kafka, topics)
    from dnsflow.bus.memory import MemoryBus

    return MemoryBus(topics)
