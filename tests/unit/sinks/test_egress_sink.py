"""``dnsflow.egress`` → ``dnsflow.egress_events`` (#17): an EgressEvent published on the bus
is one row with its fields in their columns; a bad record goes to the DLQ, not the table."""

from __future__ import annotations

import time

import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.schema import EgressEvent, RecordError
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.rows import egress_row
from dnsflow.sinks.sink import Sink

CONFIG = SinkConfig(batch_rows=200, batch_ms=50, topics=["egress"])


def allow(ts: int, **over: object) -> dict:
    e = EgressEvent(ts=ts, edge="node-1", kind="allow", tenant="acme", namespace="shop",
                    pod="web-0", client_ip="10.1.0.5", dst_ip="203.0.113.7", protocol="tcp",
                    port=443, qname="api.stripe.com", rule="shop/base#stripe", mode="enforce",
                    ttl=65, policy_version=4).model_dump()
    e.update(over)
    return e


async def test_egress_events_are_stored_and_bad_records_go_to_dlq(store):
    bus = MemoryBus()
    ts = int(time.time() * 1e6) - 60_000_000
    topic = bus.topics.name("egress")
    await bus.send_many(topic, [
        (b"acme", orjson.dumps(allow(ts, ports=["tcp/443"]))),
        (b"acme", orjson.dumps({"v": 1, "ts": ts + 1, "edge": "node-1", "kind": "drop",
                                "tenant": "acme", "client_ip": "10.1.0.5",
                                "dst_ip": "198.51.100.9", "protocol": "TCP", "port": 22})),
        (b"acme", orjson.dumps(allow(ts + 2, port=70000))),  # no such port
        (b"acme", b"{not json"),
    ])
    sink = Sink(bus, store, CONFIG)
    await sink.start()
    for _ in range(20):
        if not await sink.step(final=True):
            break
    rows = store.client.query(
        "SELECT toUnixTimestamp64Micro(ts), tenant, namespace, pod, edge, kind, client_ip, "
        "dst_ip, protocol, port, qname, rule, mode, ttl, policy_version, extra, kafka_offset, "
        "kafka_source FROM dnsflow.egress_events ORDER BY ts").result_rows
    assert [r[:16] for r in rows] == [
        (ts, "acme", "shop", "web-0", "node-1", "allow", "10.1.0.5", "203.0.113.7", "tcp",
         443, "api.stripe.com", "shop/base#stripe", "enforce", 65, 4, '{"ports":["tcp/443"]}'),
        (ts + 1, "acme", "", "", "node-1", "drop", "10.1.0.5", "198.51.100.9", "tcp", 22,
         "", "", "enforce", 0, 0, ""),
    ]
    assert [r[16] for r in rows] == [0, 1] and rows[0][17].endswith("/" + topic)
    assert bus.count(bus.topics.dlq) == 2
    dlq = bus.consumer([bus.topics.dlq], None)
    await dlq.start()
    reasons = [orjson.loads(m.value) for m in await dlq.getmany(timeout_ms=100)]
    assert [(r["source_topic"], r["offset"]) for r in reasons] == [(topic, 2), (topic, 3)]
    assert "port" in reasons[0]["reason"] and "not valid JSON" in reasons[1]["reason"]


@pytest.mark.parametrize("raw, needle", [
    (None, "tombstone"),
    (b'{"v": 1, "ts": 1, "edge": "e", "kind": "allow", "client_ip": "10.0.0.1"}', "dst_ip"),
    (b'{"v": 1, "ts": 1, "edge": "e", "kind": "maybe", "client_ip": "a", "dst_ip": "b"}',
     "kind"),
    (b'{"v": 1, "ts": 1, "edge": "e", "kind": "allow", "client_ip": "a", "dst_ip": "b", '
     b'"ttl": 5000000000}', "ttl"),
])
def test_bad_egress_records_name_the_field(raw, needle) -> None:
    with pytest.raises(RecordError, match=needle):
        egress_row(raw, "egress", 0)
