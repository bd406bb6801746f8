"""What a tenant sees of its own events and metrics never names another tenant's namespace
nor tells an isolated name from a missing one (issue #11: an isolated query was logged as
``rule=isolation:<their-namespace>`` and counted as its own ``decision="deny"`` series)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import orjson
from dnsflow.policies import policyset, records
from dnsflow.policies.api import PolicyStore
from prometheus_client.parser import text_string_to_metric_families

from dnsflow.bus.memory import MemoryBus

MAP = """
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.1/32, tenant: shop, namespace: shop}
"""
POLICY = """
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {name: p, namespace: shop}
spec:
  tenant: shop
  rules: [{id: no-ads, match: {names: [ads.example.com]}, action: deny}]
"""
HIDDEN = "ledger.payments.svc.cluster.local"


async def test_isolated_queries_look_like_missing_names_to_the_tenant(
        start_edge, tmp_path: Path, bus: MemoryBus) -> None:
    m = tmp_path / "map.yaml"
    m.write_text(MAP)
    store = PolicyStore()
    for doc in policyset.from_text(POLICY, "p.yaml").values():
        store.apply_record(*records.encode(doc, 1, 0, "test", "tester"))
    svc = await start_edge(tenant_map=str(m), policy_store=store)
    port = svc.status()["udp_port"]

    async def ask(name: str) -> dns.message.Message:
        q = dns.message.make_query(name, "A")
        return await dns.asyncquery.udp(q, "127.0.0.1", port=port, source="127.0.0.1",
                                        timeout=2)

    for _ in range(3):  # a miss, a cache hit, a memoised fast-path hit
        assert (await ask(HIDDEN)).rcode() == dns.rcode.NXDOMAIN
    for _ in range(3):
        assert (await ask("nosuch.shop.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask("ads.example.com")).rcode() == dns.rcode.NXDOMAIN  # a policy deny
    for _ in range(100):
        if svc.publisher.published >= 7:
            break
        await asyncio.sleep(0.02)

    evs = [orjson.loads(r.value) for p in bus.topic("t.events").partitions for r in p]
    hidden = [e for e in evs if e["qname"] == HIDDEN]
    assert len(hidden) == 3
    for e in hidden:
        assert e["tenant"] == "shop" and e["rule"] == "isolation"
        assert b"payments" not in orjson.dumps({k: v for k, v in e.items() if k != "qname"})

    series = {}
    isolated = []
    for fam in text_string_to_metric_families(svc.metrics.render().decode()):
        for s in fam.samples:
            if s.name == "dnsflow_edge_queries_total":
                lab = s.labels
                series[(lab["tenant"], lab["rcode"], lab["decision"], lab["cache"])] = s.value
            if s.name == "dnsflow_edge_isolated_queries_total":
                isolated.append((s.labels, s.value))
    # the tenant's series: the only deny is its own rule; isolation hides among the misses
    assert [k for k in series if k[2] == "deny"] == [("shop", "NXDOMAIN", "deny", "none")]
    assert series[("shop", "NXDOMAIN", "allow", "miss")] == 2   # one missing, one hidden
    assert series[("shop", "NXDOMAIN", "allow", "hit")] == 4
    # operators still count isolation, across tenants and without naming any
    assert isolated == [({"edge": "edge-test"}, 3.0)]
