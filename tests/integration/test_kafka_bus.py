"""The Kafka bus against the real local broker: topics, delivery, groups, compaction config."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from dnsflow.bus import BusError
from dnsflow.bus.kafka import KafkaBus
from dnsflow.topics import Topics

pytestmark = pytest.mark.kafka


async def _drain(consumer, want: int, rounds: int = 40):
    out = []
    for _ in range(rounds):
        out.extend(await consumer.getmany(timeout_ms=250))
        if len(out) >= want:
            break
    return out


async def test_topics_created_with_contract_configs(kafka_bootstrap, topic_prefix):
    async with KafkaBus(kafka_bootstrap, Topics(topic_prefix)) as bus:
        assert bus.source_id.startswith("kafka:") and kafka_bootstrap not in bus.source_id
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            names = set(await admin.list_topics())
            for short in ("events", "telemetry", "anomalies", "alerts", "policies", "dlq"):
                assert topic_prefix + short in names
            res = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, bus.topics.policies)]
            )
            configs = {c[0]: c[1] for c in res[0].resources[0][4]}
            assert configs["cleanup.policy"] == "compact"
        finally:
            await admin.close()


async def test_delivery_order_and_group_resume(kafka_bootstrap, topic_prefix):
    async with KafkaBus(kafka_bootstrap, Topics(topic_prefix)) as bus:
        topic = bus.topics.events
        await bus.send_many(topic, [(b"shop", b"%d" % i) for i in range(100)])
        c1 = bus.consumer([topic], topic_prefix + "g")
        await c1.start()
        got = await _drain(c1, 100)
        await c1.commit()
        await c1.stop()
        assert [m.value for m in got] == [b"%d" % i for i in range(100)]
        await bus.send_many(topic, [(b"shop", b"late")])
        c2 = bus.consumer([topic], topic_prefix + "g")
        await c2.start()
        try:
            assert [m.value for m in await _drain(c2, 1)] == [b"late"]
        finally:
            await c2.stop()


async def test_unreachable_broker_raises_bus_error():
    bus = KafkaBus("127.0.0.1:1", Topics("nowhere."), request_timeout_ms=1000)
    with pytest.raises(BusError, match=r"127\.0\.0\.1:1"):
        await bus.start()
