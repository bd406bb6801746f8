"""A chDB with demo-like rows for two tenants, and a console app over it.

``acme`` and ``globex`` each have events (allowed and denied names that carry the tenant's
own name, so a leak shows up as a plain substring), an anomaly, an alert and a policy_log
history of two versions; tokens: one per tenant and one for every tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from dnsflow.bus.memory import MemoryBus
from dnsflow.console.auth import Auth
from dnsflow.console.explain import Explainer, FilePolicies
from dnsflow.console.queries import Queries
from dnsflow.console.server import Console
from dnsflow.console.tail import EventFeed
from dnsflow.schema import now_us
from dnsflow.sinks.dsn import connect, parse
from dnsflow.sinks.migrate import migrate

TOKENS = {"acme-token-1": "acme", "globex-token-1": "globex", "admin-token-1": "*"}
TENANTS = ("acme", "globex")


def _policy(tenant: str, rule: dict[str, Any]) -> dict[str, Any]:
    """The tenant's DNSPolicy ``base`` with one rule (both tenants' look alike)."""
    return {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
            "metadata": {"name": "base", "namespace": tenant},
            "spec": {"tenant": tenant, "rules": [rule]}}


POLICIES = yaml.safe_dump_all([
    _policy("acme", {"id": "no-ads", "match": {"suffixes": ["ads.example"]}, "action": "deny"}),
    _policy("globex", {"id": "no-paste", "match": {"suffixes": ["paste.example"]},
                       "action": "deny", "denyMode": "REFUSED"}),
], sort_keys=False)

TENANT_MAP = """\
clients:
  - {cidr: 10.1.0.0/16, tenant: acme, namespace: acme, pod: web-1}
  - {cidr: 10.2.0.0/16, tenant: globex, namespace: globex, pod: api-1}
"""


def event(tenant: str, i: int, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "v": 1, "ts": now_us() - 60_000_000 + i * 100_000, "edge": "node-1", "tenant": tenant,
        "namespace": tenant, "pod": f"{tenant}-web-{i % 2}", "client_ip": "10.1.0.5"
        if tenant == "acme" else "10.2.0.5", "transport": "udp",
        "qname": f"www{i % 4}.{tenant}-site.example", "qtype": "A", "rcode": "NOERROR",
        "answers": ["A 192.0.2.1"], "latency_us": 300 + 10 * i, "cache": "miss",
        "decision": "allow", "rule": "", "policy_version": 1, "upstream": "udp://127.0.0.1:53",
    }
    e.update(over)
    return e


def _insert_events(client: Any, events: list[dict[str, Any]]) -> None:
    cols = ["ts", "tenant", "namespace", "pod", "edge", "client_ip", "transport", "qname",
            "qtype", "rcode", "answers", "latency_us", "cache", "decision", "rule",
            "policy_version", "upstream", "v", "kafka_partition", "kafka_offset",
            "kafka_source"]
    from datetime import UTC, datetime

    rows = [[datetime.fromtimestamp(e["ts"] / 1e6, UTC), e["tenant"], e["namespace"], e["pod"],
             e["edge"], e["client_ip"], e["transport"], e["qname"], e["qtype"], e["rcode"],
             e["answers"], e["latency_us"], e["cache"], e["decision"], e["rule"],
             e["policy_version"], e["upstream"], 1, 0, i, "test"]
            for i, e in enumerate(events)]
    client.insert("dnsflow.dns_events", rows, column_names=cols)


def _fill(client: Any) -> None:
    events = []
    for t in TENANTS:
        events += [event(t, i) for i in range(40)]
        events += [event(t, 100 + i, qname=f"tracker{i}.{t}-ads.example", decision="deny",
                         rcode="NXDOMAIN", rule=f"{t}/base#no-ads") for i in range(6)]
    _insert_events(client, events)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for n, t in enumerate(TENANTS):
        evidence = {"incident": f"dga:{t}:1", "domains": [f"qxz{t}.example"], "window_s": 60}
        client.insert("dnsflow.anomalies",
                      [[now, t, "dga", "10.1.0.5", f"qxz{t}.example", "high", 0.9,
                        orjson.dumps(evidence).decode(), 0, n, "test"]],
                      column_names=["ts", "tenant", "kind", "client_ip", "domain", "severity",
                                    "score", "evidence", "kafka_partition", "kafka_offset",
                                    "kafka_source"])
        data = {"summary": f"1 x dga (tenant={t})", "count": 1, "incidents": [f"dga:{t}:1"]}
        client.insert("dnsflow.alerts",
                      [[now, "high-severity", t, "high", orjson.dumps(data).decode(), 0, n,
                        "test"]],
                      column_names=["ts", "rule", "tenant", "severity", "data",
                                    "kafka_partition", "kafka_offset", "kafka_source"])
        for v in (1, 2):
            doc = {"kind": "TenantPolicy", "tenant": t, "policies": [
                {"metadata": {"name": "base", "namespace": t},
                 "spec": {"rules": [{"id": f"rule-v{v}", "action": "deny",
                                     "match": {"suffixes": [f"v{v}.{t}-blocked.example"]}}]}}]}
            client.insert("dnsflow.policy_log",
                          [[now, t, v, f"sha256:{t}{v}", f"sha256:{t}{v - 1}" if v > 1 else "",
                            "cli", "ops@host", f"changed {t}/base", orjson.dumps(doc).decode(),
                            0, n * 10 + v, "test"]],
                          column_names=["ts", "tenant", "version", "hash", "previous_hash",
                                        "source", "actor", "change", "document",
                                        "kafka_partition", "kafka_offset", "kafka_source"])


@pytest.fixture
def chdb_filled(chdb_dsn: str) -> Any:
    dsn = parse(chdb_dsn)
    client = connect(dsn)
    migrate(client)
    _fill(client)
    client.close()
    return dsn


@pytest.fixture
def policy_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "base.yaml").write_text(POLICIES)
    (tmp_path / "tenants.yaml").write_text(TENANT_MAP)
    return {"policies": tmp_path / "policies", "tenant_map": tmp_path / "tenants.yaml"}


class App:
    def __init__(self, client: TestClient, bus: MemoryBus, feed: EventFeed) -> None:
        self.client = client
        self.bus = bus
        self.feed = feed

    async def get(self, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.get(path, headers=headers, allow_redirects=False, **kw)


@pytest.fixture
async def app(chdb_filled: Any, policy_files: dict[str, Path]) -> AsyncIterator[App]:
    bus = MemoryBus()
    await bus.start()
    feed = EventFeed(bus)
    queries = Queries(lambda _: connect(chdb_filled, readonly=2))
    explainer = Explainer(FilePolicies([policy_files["policies"]]), policy_files["tenant_map"])
    console = Console(queries, explainer, Auth(dict(TOKENS)), feed)
    client = TestClient(TestServer(console.app()))
    await client.start_server()
    try:
        yield App(client, bus, feed)
    finally:
        await client.close()
        queries.close()
        await bus.stop()
