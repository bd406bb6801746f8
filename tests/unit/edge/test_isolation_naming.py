"""What a tenant sees of its own events and metrics never names another tenant's namespace
nor tells an isolated name from a missing one (issue #11: an isolated query was logged as
``rule=isolation:<their-namespace>`` and counted as its own ``decision="deny"`` series)."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.rcode
import orjson
from prometheus_client.parser import text_string_to_metric_families

from dnsflow.bus.memory import MemoryBus
from tests.helpers.policy_yaml import dns_policy, store_from_yaml
from tests.helpers.waiting import until

MAP = """
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.1/32, tenant: shop, namespace: shop}
"""
POLICY = dns_policy("p", "shop", "shop",
                    "rules: [{id: no-ads, match: {names: [ads.example.com]}, action: deny}]")
HIDDEN = "ledger.payments.svc.cluster.local"


async def test_isolated_queries_look_like_missing_names_to_the_tenant(
        start_edge, write_map, bus: MemoryBus) -> None:
    svc = await start_edge(tenant_map=str(write_map(MAP)), policy_store=store_from_yaml(POLICY))
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
    await until(lambda: svc.publisher.published >= 7, timeout=2.0, what="7 published events")

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
            if s.name == "dnsflow_edge_responses_total":
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
    # nor does the request count tell: 6 requests of the tenant, hidden ones among them
    requests = [(s.labels, s.value) for fam in text_string_to_metric_families(
        svc.metrics.render().decode()) for s in fam.samples
        if s.name == "dnsflow_edge_requests_total"]
    assert {lab["tenant"] for lab, _ in requests} == {"shop"}
