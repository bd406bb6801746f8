"""The edge on a real Kafka broker: every answered query is one record on dnsflow.events
(keyed by tenant, schema v1), and policies published on the compacted topic are enforced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from dnsflow.bus import open_bus
from dnsflow.edge.service import build
from dnsflow.policies import policyset, records
from dnsflow.schema import parse_event
from dnsflow.settings import Settings
from harness.fake_upstream import FakeUpstream
from tests.helpers.policy_yaml import dns_policy

pytestmark = pytest.mark.kafka

POLICY = dns_policy("p", "shop", "shop", "rules: [{id: no-ads, match: "
                    "{suffixes: [ads.example.com]}, action: deny, denyMode: REFUSED}]")


async def read_all(bus, topic: str, want: int, timeout: float = 20.0):
    consumer = bus.consumer([topic], group=None, from_beginning=True)
    await consumer.start()
    out = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < want and loop.time() < deadline:
            out += await consumer.getmany(timeout_ms=500, max_records=5000)
    finally:
        await consumer.stop()
    return out


async def test_events_and_policies_through_kafka(kafka_bootstrap: str, topic_prefix: str,
                                                 tmp_path: Path) -> None:
    bus = open_bus(kafka_bootstrap, topic_prefix)
    await bus.start()
    docs = policyset.from_text(POLICY, "p.yaml")
    await bus.send_many(bus.topics.policies,
                        [records.encode(d, 1, 1, "test", "tester") for d in docs.values()])
    tmap = tmp_path / "map.yaml"
    tmap.write_text("clients: [{cidr: 127.0.0.0/8, tenant: shop, namespace: shop}]\n")
    up = FakeUpstream(["example.com. 60 IN A 192.0.2.1"])
    await up.start()
    svc = build(Settings(home=tmp_path, kafka=kafka_bootstrap, topic_prefix=topic_prefix), bus,
                listen="127.0.0.1:0", upstreams=[up.address], tenant_map=str(tmap),
                name="edge-kafka")[0]
    await svc.start()
    try:
        for _ in range(100):
            if svc.status()["policy"]["applied"]:
                break
            await asyncio.sleep(0.05)
        port = svc.status()["udp_port"]
        n = 200
        for i in range(n):
            name = "x.ads.example.com" if i % 10 == 0 else "example.com"
            r = await dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                                         port=port, timeout=3)
            assert r.rcode() == (dns.rcode.REFUSED if i % 10 == 0 else dns.rcode.NOERROR)
        assert svc.status()["events"]["producer"] == "librdkafka"
    finally:
        await svc.stop()
        await up.stop()
    msgs = await read_all(bus, bus.topics.events, n)
    await bus.stop()
    assert len(msgs) == n
    events = [parse_event(m.value) for m in msgs]
    assert {m.key for m in msgs} == {b"shop"}
    denied = [e for e in events if e.decision == "deny"]
    assert len(denied) == 20 and {e.rule for e in denied} == {"shop/p#no-ads"}
    assert {e.cache for e in events if e.decision == "allow"} == {"hit", "miss"}
    assert svc.status()["events"]["published"] == n
