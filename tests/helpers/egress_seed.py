"""A chDB store holding egress allows, drops and DNS answers, stored by the real sink, for
the ``explain --connect`` / ``egress-export`` tests (unit and against a kube-apiserver)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from dnsflow.bus.memory import MemoryBus
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.dsn import parse
from dnsflow.sinks.migrate import migrate
from dnsflow.sinks.sink import Sink
from dnsflow.sinks.store import Store

POLICY = """apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {{name: base, namespace: {ns}}}
spec:
  tenant: acme
  egress:
    - id: stripe
      toFQDNs: [{{matchName: api.stripe.com}}, {{matchPattern: "*.s3.amazonaws.com"}}]
      ports: [{{port: 443}}]
      clients: {{labels: {{app: pay}}}}
    - id: watch
      toFQDNs: [{{matchName: metrics.example.com}}]
      mode: audit
      clients: {{labels: {{app: batch}}}}
"""
MAP = """clients:
  - {{cidr: 10.1.0.0/24, tenant: acme, namespace: {ns}, pod: pay-0, labels: {{app: pay}}}}
  - {{cidr: 10.1.1.0/24, tenant: acme, namespace: {ns}}}
  - {{cidr: 10.1.2.0/24, tenant: acme, namespace: {ns}, labels: {{app: batch}}}}
"""


def _egress(ts: int, ns: str, kind: str, client: str, dst: str, **kw: Any) -> bytes:
    return orjson.dumps({"v": 1, "ts": ts, "edge": "node-1", "kind": kind, "tenant": "acme",
                         "namespace": ns, "pod": "pay-0", "client_ip": client, "dst_ip": dst,
                         "protocol": "tcp", "port": 443, **kw})


def _answer(ts: int, ns: str, client: str, qname: str, answer: str) -> bytes:
    return orjson.dumps({
        "v": 1, "ts": ts, "edge": "node-1", "tenant": "acme", "namespace": ns,
        "client_ip": client, "transport": "udp", "qname": qname, "qtype": "A",
        "rcode": "NOERROR", "answers": [answer], "latency_us": 300, "cache": "miss",
        "decision": "allow", "rule": "", "policy_version": 1, "upstream": ""})


async def _store(dsn: str, ns: str) -> None:
    now = int(time.time() * 1e6)
    bus = MemoryBus()
    allow = {"qname": "api.stripe.com", "rule": f"{ns}/base#stripe", "mode": "enforce"}
    await bus.send_many(bus.topics.name("egress"), [
        (b"acme", _egress(now - 60_000_000, ns, "allow", "10.1.0.5", "203.0.113.7",
                          ttl=3600, **allow)),
        (b"acme", _egress(now - 60_000_000, ns, "allow", "10.1.0.5", "203.0.113.8",
                          ttl=5, **allow)),
        (b"acme", _egress(now - 30_000_000, ns, "drop", "10.1.0.5", "192.0.2.99")),
    ])
    await bus.send_many(bus.topics.events, [
        (b"acme", _answer(now - 20_000_000, ns, "10.1.0.6", "bucket.s3.amazonaws.com",
                          "A 198.51.100.20")),
        (b"acme", _answer(now - 20_000_000, ns, "10.1.0.6", "other.example.org",
                          "A 198.51.100.21")),
    ])
    store = Store(parse(dsn))
    try:
        migrate(store.client)
        sink = Sink(bus, store, SinkConfig(batch_ms=20, topics=["events", "egress"]))
        await sink.start()
        while await sink.step(final=True):
            pass
        await sink.close()
    finally:
        store.close()


def seed(dsn: str, ns: str = "shop") -> None:
    """Store the egress allows (one live, one expired), a drop and two DNS answers."""
    asyncio.run(_store(dsn, ns))


def seeded_dir(tmp_path_factory: Any, name: str) -> tuple[Any, str]:
    """A directory with the policy (``p.yaml``) and tenant map (``map.yaml``) of namespace
    ``shop``, and a chDB store seeded by :func:`seed`: (directory, its DSN)."""
    d = tmp_path_factory.mktemp(name)
    (d / "p.yaml").write_text(POLICY.format(ns="shop"))
    (d / "map.yaml").write_text(MAP.format(ns="shop"))
    dsn = f"chdb://{d / 'chdb'}"
    seed(dsn)
    return d, dsn
