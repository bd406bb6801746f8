"""Sink input topics the core does not create (``policy_log``), created on a Kafka bus."""

from __future__ import annotations

from dnsflow.bus import Bus, BusError


async def ensure_topics(bus: Bus, topics: list[str]) -> None:
    """Create sink input topics the core does not (``policy_log``) on a Kafka bus."""
    bootstrap = getattr(bus, "bootstrap", None)
    if not bootstrap:
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, 1, 1) for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise BusError(f"kafka {bootstrap}: cannot create sink topics: {exc}") from exc
    finally:
        await admin.close()
