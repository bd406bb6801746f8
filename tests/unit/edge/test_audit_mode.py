"""Audit mode (issue #14): ``isolation: audit`` (per namespace, or cluster-wide from a
ClusterDNSPolicy) and ``audit: true`` on a deny rule answer normally and record what
enforcing would have done (decision ``would_deny``), so isolation and deny rules can be rolled
out without breaking anyone first."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.rcode
import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.policies.api import PolicyStore
from tests.helpers.policy_yaml import cluster_policy, dns_policy, documents, store_from_yaml
from tests.helpers.waiting import until

MAP = """
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.1/32, tenant: shop, namespace: shop}
"""
HIDDEN = "ledger.payments.svc.cluster.local"
WEB = "web.shop.svc.cluster.local"  # the upstream answers it (NOERROR, one A record)
ADS = dns_policy("p", "shop", "shop", f"""
rules: [{{id: no-web, match: {{names: [{WEB}]}}, action: deny, audit: true}}]
""")


async def _events(svc, bus: MemoryBus, n: int) -> list[dict]:
    await until(lambda: svc.publisher.published >= n, timeout=2.0, what=f"{n} events")
    return [orjson.loads(r.value) for p in bus.topic("t.events").partitions for r in p]


async def _ask(svc, name: str) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=svc.status()["udp_port"],
                                    source="127.0.0.1", timeout=2)


@pytest.mark.parametrize("where", ["namespace", "cluster"])
async def test_isolation_audit_answers_and_records_would_deny(start_edge, write_map,
                                                             bus: MemoryBus, where) -> None:
    audit = (dns_policy("iso", "payments", "payments", "isolation: audit")
             if where == "namespace" else cluster_policy("audit-all", "isolation: audit"))
    store = store_from_yaml(documents(ADS, audit))
    svc = await start_edge(tenant_map=str(write_map(MAP)), policy_store=store)
    for _ in range(3):  # a miss, a cache hit, a memoised fast-path hit: all answered
        r = await _ask(svc, HIDDEN)
        assert r.rcode() == dns.rcode.NOERROR and r.answer
    evs = [e for e in await _events(svc, bus, 3) if e["qname"] == HIDDEN]
    assert [(e["decision"], e["rule"], e["rcode"]) for e in evs] == [
        ("would_deny", "isolation", "NOERROR")] * 3
    assert [e["cache"] for e in evs] == ["miss", "hit", "hit"]


async def test_enforced_isolation_still_hides(start_edge, write_map, bus: MemoryBus) -> None:
    svc = await start_edge(tenant_map=str(write_map(MAP)), policy_store=store_from_yaml(ADS))
    assert (await _ask(svc, HIDDEN)).rcode() == dns.rcode.NXDOMAIN


async def test_an_audited_deny_rule_answers_and_records(start_edge, write_map,
                                                        bus: MemoryBus) -> None:
    svc = await start_edge(tenant_map=str(write_map(MAP)), policy_store=store_from_yaml(ADS))
    for _ in range(2):
        r = await _ask(svc, WEB)
        assert r.rcode() == dns.rcode.NOERROR and r.answer  # enforced, it would be NXDOMAIN
    evs = [e for e in await _events(svc, bus, 2) if e["qname"] == WEB]
    assert [(e["decision"], e["rule"], e["rcode"]) for e in evs] == [
        ("would_deny", "shop/p#no-web", "NOERROR")] * 2


def test_audit_is_only_for_deny_rules() -> None:
    from dnsflow.policies.model import DNSPolicy

    doc = {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
           "metadata": {"name": "p", "namespace": "shop"},
           "spec": {"rules": [{"match": {"names": ["x.example"]}, "action": "allow",
                               "audit": True}]}}
    with pytest.raises(ValueError, match="'audit' is only allowed with action deny"):
        DNSPolicy.model_validate(doc)


def test_explain_says_would_deny() -> None:
    from dnsflow.policies.api import ClientInfo

    store: PolicyStore = store_from_yaml(documents(ADS, cluster_policy("a", "isolation: audit")),
                                         ns_map={"shop": "shop", "payments": "payments"})
    client = ClientInfo("127.0.0.1", "shop", "shop")
    assert store.decide(client, HIDDEN, "A").action == "would_deny"
    assert store.decide(client, WEB, "A").action == "would_deny"
    assert not store.hides(client, HIDDEN)  # PTRs of audited namespaces are answered too
