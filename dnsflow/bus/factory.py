"""Pick the bus from settings: Kafka when a bootstrap is given, in-process otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnsflow.bus.base import Bus
from dnsflow.topics import Topics

if TYPE_CHECKING:
    from dnsflow.settings import Settings


def open_bus(kafka: str | None, prefix: str = "dnsflow.", *, replication: int = 1,
             min_insync: int = 1) -> Bus:
    """``replication``/``min_insync``: of the topics the Kafka bus creates (ignored by the
    in-process bus)."""
    topics = Topics(prefix)
    if kafka:
        from dnsflow.bus.kafka import KafkaBus

        return KafkaBus(kafka, topics, replication=replication, min_insync=min_insync)
    from dnsflow.bus.memory import MemoryBus

    return MemoryBus(topics)


def bus_for(settings: Settings) -> Bus:
    """The bus ``settings`` ask for: bootstrap, topic prefix, and the replication factor and
    ``min.insync.replicas`` of the topics it creates."""
    return open_bus(settings.kafka, settings.topic_prefix,
                    replication=settings.kafka_replication,
                    min_insync=settings.kafka_min_insync)
