"""Kafka admin and positions through the bus (``dnsflow.bus``), the same on the real broker
and the in-process bus: components create topics, count partitions, read end offsets and
commit exact positions without knowing which bus or consumer they have."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from dnsflow.bus import Bus
from dnsflow.bus.kafka import KafkaBus
from dnsflow.bus.memory import MemoryBus
from dnsflow.policies.topic import read_compacted
from dnsflow.topics import Topics, TopicSpec


async def _exercise(bus: Bus, prefix: str) -> None:
    log, compacted = f"{prefix}admin-log", f"{prefix}admin-compact"
    assert await bus.partition_count(log) is None and await bus.end_offsets(log) == {}
    await bus.create_topics([TopicSpec(log, 3),
                             TopicSpec(compacted, 1, {"cleanup.policy": "compact"})])
    await bus.create_topics([TopicSpec(log, 5)])  # existing: left as it is
    assert await bus.partition_count(log) == 3
    assert await bus.end_offsets(log) == {0: 0, 1: 0, 2: 0}
    await bus.send_many(log, [(b"k%d" % i, b"v%d" % i) for i in range(30)])
    ends = await bus.end_offsets(log)
    assert sum(ends.values()) == 30
    # a group consumer commits exactly the positions it is given
    c = bus.consumer([log], "g1")
    await c.start()
    got = []
    for _ in range(40):
        got += await c.getmany(timeout_ms=250)
        if len(got) >= 30:
            break
    assert len(got) == 30
    for p, end in ends.items():
        if end:
            assert await c.position(log, p) == end
    first = {(log, p): 1 for p, end in ends.items() if end}
    await c.commit_positions(first)
    await c.stop()
    again = bus.consumer([log], "g1")
    await again.start()
    rest = []
    for _ in range(40):
        rest += await again.getmany(timeout_ms=250)
        if len(rest) >= 30 - len(first):
            break
    await again.stop()
    assert len(rest) == 30 - len(first) and all(m.offset >= 1 for m in rest)
    # a compacted topic read to its end: the newest value per key
    await bus.send_many(compacted, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")])
    assert await read_compacted(bus, compacted) == {"a": b"2", "b": b"1"}


async def test_memory_bus_admin() -> None:
    await _exercise(MemoryBus(Topics("m.")), "m.")


@pytest.mark.kafka
async def test_kafka_bus_admin(kafka_bootstrap: str, topic_prefix: str) -> None:
    async with KafkaBus(kafka_bootstrap, Topics(topic_prefix)) as bus:
        await _exercise(bus, topic_prefix)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            res = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, f"{topic_prefix}admin-compact")])
            configs = {c[0]: c[1] for c in res[0].resources[0][4]}
            assert configs["cleanup.policy"] == "compact"
        finally:
            await admin.close()
