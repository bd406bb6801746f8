"""Policy enforcement at the edge with the real policies matcher: tenant isolation in every
form, deny modes, rewrite, redirect, rate limit, views, live updates, fail-static, DLQ."""

from __future__ import annotations

from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import orjson
import pytest
import yaml

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.identity.static import parse_static_map
from dnsflow.policies import policyset, records
from dnsflow.policies.api import PolicyStore
from harness.fake_upstream import FakeUpstream
from tests.helpers.policy_yaml import dns_policy, documents, store_from_yaml
from tests.helpers.waiting import until

TENANT_MAP = """
default: {tenant: guests, namespace: guests}
namespaces: {shop: shop, payments: payments, bank: payments}
clients:
  - {cidr: 127.0.0.1/32, tenant: shop, namespace: shop, pod: web-1}
  - {cidr: 127.0.0.2/32, tenant: payments, namespace: payments, pod: ledger-0}
  - {cidr: 10.96.2.0/24, tenant: payments, namespace: payments}
"""


def policies(corp_port: int) -> str:
    """The shop's rules and view, payments' export, the guests' view; redirects go to corp."""
    shop = dns_policy("shop-rules", "shop", "shop", f"""
  rules:
    - {{id: block-ads, match: {{suffixes: [ads.example.com]}}, action: deny}}
    - {{id: refuse-x, match: {{names: [refused.example.com]}}, action: deny, denyMode: REFUSED}}
    - {{id: nodata-x, match: {{names: [nodata.example.com]}}, action: deny, denyMode: NODATA}}
    - {{id: drop-x, match: {{names: [drop.example.com]}}, action: deny, denyMode: DROP}}
    - id: pin-api
      match: {{names: [api.example.com]}}
      action: rewrite
      rewrite: {{records: [{{type: A, value: 192.0.2.7, ttl: 30}}]}}
    - id: to-example
      match: {{names: [legacy.example.com]}}
      action: rewrite
      rewrite: {{cname: example.com}}
    - id: corp
      match: {{suffixes: [corp.internal]}}
      action: redirect
      redirect: {{upstreams: ["udp://127.0.0.1:{corp_port}"]}}
    - id: slow-down
      match: {{names: [limited.example.com]}}
      action: allow
      rateLimit: {{qps: 1, burst: 2}}
  view:
    records: [{{name: db.local.shop, type: A, value: 10.9.9.9}}]
    searchDomains: [shop.svc.cluster.local, payments.svc.cluster.local]
""")
    exports = dns_policy("payments-exports", "payments", "payments",
                         "exports: [{service: gateway, to: [shop]}]")
    guests = dns_policy("guest-view", "guests", "guests",
                        f'view: {{upstreams: ["udp://127.0.0.1:{corp_port}"]}}')
    return documents(shop, exports, guests)


ZONE = [
    "web.shop.svc.cluster.local. 300 IN A 10.96.1.10",
    "ledger.payments.svc.cluster.local. 300 IN A 10.96.2.10",
    "gateway.payments.svc.cluster.local. 300 IN A 10.96.2.11",
    "*.payments.svc.cluster.local. 300 IN A 10.96.2.99",
    "alias.shop.svc.cluster.local. 300 IN CNAME ledger.payments.svc.cluster.local.",
    "_http._tcp.ledger.payments.svc.cluster.local. 300 IN SRV 0 5 80 "
    "ledger.payments.svc.cluster.local.",
    "10.2.96.10.in-addr.arpa. 300 IN PTR ledger.payments.svc.cluster.local.",
    "10.1.96.10.in-addr.arpa. 300 IN PTR web.shop.svc.cluster.local.",
    "example.com. 120 IN A 93.184.216.34",
    "limited.example.com. 120 IN A 93.184.216.35",
]


def policy_records(text: str, version: int) -> list[tuple[bytes, bytes]]:
    return [records.encode(doc, version, 1, "test", "tester")
            for doc in policyset.from_text(text, "test.yaml").values()]


@pytest.fixture
async def zone_upstream():
    up = FakeUpstream(ZONE)
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
async def corp():
    up = FakeUpstream(["app.corp.internal. 60 IN A 172.16.0.5"], soa_zone="corp.internal")
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
def map_file(write_map) -> Path:
    """TENANT_MAP as the edge's static tenant map file."""
    return write_map(TENANT_MAP)


@pytest.fixture
async def edge(start_edge, zone_upstream, corp, map_file: Path):
    store = store_from_yaml(policies(corp.port))
    svc = await start_edge(upstreams=[zone_upstream.address], tenant_map=str(map_file),
                           policy_store=store)
    return svc


async def applied(svc, n: int) -> None:
    """Wait until the edge has applied ``n`` policy records from the bus."""
    await until(lambda: svc.status()["policy"]["applied"] >= n, timeout=2.0,
                what=f"{n} applied policy record(s)")


async def ask(svc, name: str, rtype: str = "A", source: str = "127.0.0.1",
              timeout: float = 3) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=svc.status()["udp_port"],
                                    source=source, timeout=timeout)


def same_as_missing(hidden: dns.message.Message, missing: dns.message.Message) -> None:
    assert hidden.rcode() == missing.rcode() == dns.rcode.NXDOMAIN
    assert hidden.answer == missing.answer == []
    assert hidden.authority == missing.authority
    assert hidden.authority[0].rdtype == dns.rdatatype.SOA
    assert hidden.flags == missing.flags


HIDDEN = [
    ("ledger.payments.svc.cluster.local", "A"),
    ("LeDgEr.PAYMENTS.svc.Cluster.Local.", "A"),
    ("_http._tcp.ledger.payments.svc.cluster.local", "SRV"),
    ("*.payments.svc.cluster.local", "A"),
    ("anything.payments.svc.cluster.local", "A"),      # matched by the zone's wildcard
    ("alias.shop.svc.cluster.local", "A"),             # CNAME chain into payments
    ("10.2.96.10.in-addr.arpa", "PTR"),                # PTR of a payments address
]


@pytest.mark.parametrize(("name", "rtype"), HIDDEN)
async def test_other_tenants_names_look_like_they_do_not_exist(edge, name, rtype) -> None:
    missing = await ask(edge, "nosuchname.shop.svc.cluster.local", rtype)
    hidden = await ask(edge, name, rtype)
    same_as_missing(hidden, missing)
    assert hidden.question[0].name.to_text() == (name if name.endswith(".") else name + ".")
    again = await ask(edge, name, rtype)   # cached like any negative answer
    same_as_missing(again, missing)


async def test_owner_tenant_and_exports_still_see_names(edge, zone_upstream) -> None:
    mine = await ask(edge, "ledger.payments.svc.cluster.local", source="127.0.0.2")
    assert [str(r) for r in mine.answer[0]] == ["10.96.2.10"]
    # the owner's cached answer never leaks to another tenant
    other = await ask(edge, "ledger.payments.svc.cluster.local", source="127.0.0.1")
    assert other.rcode() == dns.rcode.NXDOMAIN and not other.answer
    exported = await ask(edge, "gateway.payments.svc.cluster.local")
    assert [str(r) for r in exported.answer[0]] == ["10.96.2.11"]
    own = await ask(edge, "web.shop.svc.cluster.local")
    assert [str(r) for r in own.answer[0]] == ["10.96.1.10"]
    ptr = await ask(edge, "10.1.96.10.in-addr.arpa", "PTR")
    assert str(ptr.answer[0][0]) == "web.shop.svc.cluster.local."


async def test_deny_modes(edge) -> None:
    r = await ask(edge, "tracker.ads.example.com")
    assert r.rcode() == dns.rcode.NXDOMAIN
    r = await ask(edge, "refused.example.com")
    assert r.rcode() == dns.rcode.REFUSED
    r = await ask(edge, "nodata.example.com")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    with pytest.raises(dns.exception.Timeout):
        await ask(edge, "drop.example.com", timeout=0.5)
    # other tenants are not bound by shop's rules
    r = await ask(edge, "refused.example.com", source="127.0.0.2")
    assert r.rcode() == dns.rcode.NXDOMAIN  # not in the zone, but not REFUSED


async def test_rewrite_redirect_and_view_records(edge, corp) -> None:
    r = await ask(edge, "API.example.com")
    assert [str(x) for x in r.answer[0]] == ["192.0.2.7"]
    assert r.answer[0].name.to_text() == "API.example.com."
    r = await ask(edge, "legacy.example.com")
    assert [a.rdtype for a in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert str(r.answer[1][0]) == "93.184.216.34"
    r = await ask(edge, "app.corp.internal")
    assert [str(x) for x in r.answer[0]] == ["172.16.0.5"]
    assert corp.count("app.corp.internal") == 1
    r = await ask(edge, "app.corp.internal", source="127.0.0.2")  # not redirected
    assert r.rcode() == dns.rcode.NXDOMAIN
    r = await ask(edge, "db.local.shop")
    assert [str(x) for x in r.answer[0]] == ["10.9.9.9"]


async def test_view_upstreams_and_rewrites_stay_per_tenant(edge, corp, zone_upstream) -> None:
    r = await ask(edge, "app.corp.internal", source="127.0.0.3")   # guests: own upstream
    assert [str(x) for x in r.answer[0]] == ["172.16.0.5"]
    r = await ask(edge, "example.com", source="127.0.0.3")
    assert r.rcode() == dns.rcode.NXDOMAIN                          # not in corp's zone
    assert zone_upstream.count("example.com") == 0
    r = await ask(edge, "api.example.com")                           # shop's rewrite
    assert [str(x) for x in r.answer[0]] == ["192.0.2.7"]
    r = await ask(edge, "api.example.com", source="127.0.0.2")      # payments: no rewrite
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer


async def test_search_domains_of_the_tenant_view(edge, zone_upstream) -> None:
    r = await ask(edge, "web")
    assert [a.rdtype for a in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert str(r.answer[0][0]) == "web.shop.svc.cluster.local."
    assert str(r.answer[1][0]) == "10.96.1.10"
    again = await ask(edge, "WEB")  # cached, client's case echoed
    assert again.answer[0].name.to_text() == "WEB." and len(again.answer) == 2
    assert zone_upstream.count("web.shop.svc.cluster.local") == 1
    # payments is another tenant: its expansion is never offered
    r = await ask(edge, "ledger")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
    # the owner tenant has no search domains: a single label is just forwarded
    r = await ask(edge, "web", source="127.0.0.2")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_rate_limit_refuses_beyond_the_burst(edge) -> None:
    codes = [(await ask(edge, "limited.example.com")).rcode() for _ in range(6)]
    assert codes[:2] == [dns.rcode.NOERROR] * 2
    assert dns.rcode.REFUSED in codes[2:]
    assert edge.status()["queries"]["rate_limited"] >= 1


async def test_events_carry_decision_and_rule(edge, bus: MemoryBus) -> None:
    await ask(edge, "tracker.ads.example.com")
    await ask(edge, "ledger.payments.svc.cluster.local")
    await until(lambda: edge.publisher.published >= 2, timeout=2.0, what="2 published events")
    evs = [orjson.loads(m.value) for p in bus.topic("t.events").partitions for m in p]
    by_name = {e["qname"]: e for e in evs}
    ads = by_name["tracker.ads.example.com"]
    assert (ads["decision"], ads["rcode"]) == ("deny", "NXDOMAIN")
    assert ads["rule"] == "shop/shop-rules#block-ads"
    assert ads["policy_version"] == 1
    iso = by_name["ledger.payments.svc.cluster.local"]
    assert iso["decision"] == "deny" and iso["rule"].startswith("isolation")


async def test_live_policy_updates_snapshot_and_dlq(start_edge, zone_upstream, tmp_path,
                                                    map_file: Path, bus: MemoryBus) -> None:
    deny = dns_policy("p", "shop", "shop", "rules: [{id: no-example, match: {names: "
                      "[example.com]}, action: deny, denyMode: REFUSED}]")
    allow = deny.replace("action: deny, denyMode: REFUSED", "action: allow") + (
        "  view: {records: [{name: cache.local.shop, type: A, value: 10.7.7.7}]}\n")
    await bus.send_many(bus.topics.policies, policy_records(deny, 1))
    svc = await start_edge(upstreams=[zone_upstream.address], tenant_map=str(map_file))
    await applied(svc, 1)
    assert (await ask(svc, "example.com")).rcode() == dns.rcode.REFUSED
    assert (await ask(svc, "cache.local.shop")).rcode() == dns.rcode.NXDOMAIN
    await bus.send(bus.topics.policies, b'{"not": "a policy"}', key=b"shop")
    await bus.send_many(bus.topics.policies, policy_records(allow, 2))
    await applied(svc, 2)
    assert (await ask(svc, "example.com")).rcode() == dns.rcode.NOERROR
    r = await ask(svc, "cache.local.shop")      # the view changed live
    assert [str(x) for x in r.answer[0]] == ["10.7.7.7"]
    dlq = [orjson.loads(m.value) for p in bus.topic(bus.topics.dlq).partitions for m in p]
    assert len(dlq) == 1 and dlq[0]["reason"] and dlq[0]["source_topic"] == "t.policies"
    snap = tmp_path / "home" / "edge-policy.snapshot"
    assert snap.exists()
    await svc.stop()
    # fail-static: a new edge whose bus cannot reach Kafka enforces the snapshot (v2)
    await bus.send_many(bus.topics.policies, policy_records(deny, 3))

    class DownBus(MemoryBus):
        def consumer(self, topics, group, *, from_beginning=True):
            raise RuntimeError("kafka unreachable (test)")

    down = DownBus(bus.topics)
    from dnsflow.edge.service import build
    from dnsflow.settings import Settings

    svc2 = build(Settings(home=tmp_path / "home", topic_prefix="t."), down,
                 listen="127.0.0.1:0", upstreams=[zone_upstream.address],
                 tenant_map=str(map_file))[0]
    await svc2.start()
    try:
        assert svc2.status()["policy"]["from_snapshot"]
        assert (await ask(svc2, "example.com")).rcode() == dns.rcode.NOERROR
        assert PolicyStore.from_snapshot(snap.read_bytes()).version("shop") == 2
    finally:
        await svc2.stop()


async def test_namespace_moving_to_another_tenant_hides_cached_answers(edge) -> None:
    shared = TENANT_MAP.replace("payments: payments, bank", "payments: shop, bank")
    edge.identity.set_static(parse_static_map(yaml.safe_load(shared)))
    r = await ask(edge, "ledger.payments.svc.cluster.local")   # payments belongs to shop now
    assert [str(x) for x in r.answer[0]] == ["10.96.2.10"]
    for _ in range(2):  # cached, and memoised on the fast path
        assert (await ask(edge, "ledger.payments.svc.cluster.local")).answer
    edge.identity.set_static(parse_static_map(yaml.safe_load(TENANT_MAP)))
    r = await ask(edge, "ledger.payments.svc.cluster.local")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer


async def test_withdrawn_export_hides_names_cached_for_other_tenants(
        start_edge, zone_upstream, map_file: Path, bus: MemoryBus) -> None:
    exported = dns_policy("ex", "payments", "payments", "exports: [{service: ledger, to: [shop]}]")
    withdrawn = dns_policy("ex", "payments", "payments")
    await bus.send_many(bus.topics.policies, policy_records(exported, 1))
    svc = await start_edge(upstreams=[zone_upstream.address], tenant_map=str(map_file))
    await applied(svc, 1)
    r = await ask(svc, "alias.shop.svc.cluster.local")   # CNAME into payments' export
    assert str(r.answer[-1][0]) == "10.96.2.10"
    await bus.send_many(bus.topics.policies, policy_records(withdrawn, 2))
    await applied(svc, 2)
    r = await ask(svc, "alias.shop.svc.cluster.local")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer


RESPONSE_RULES = dns_policy("resp", "shop", "shop", """
  rules:
    - id: no-doc-net
      match: {names: [example.com], response: {answerCIDRs: [93.184.216.0/24]}}
      action: deny
      log: true
    - id: sinkhole
      match: {names: [limited.example.com], response: {answerCIDRs: [93.184.216.35/32]}}
      action: rewrite
      rewrite: {records: [{type: A, value: 0.0.0.0}]}
""")


async def test_response_rules_deny_and_rewrite(start_edge, zone_upstream, map_file: Path,
                                               caplog) -> None:
    svc = await start_edge(upstreams=[zone_upstream.address], tenant_map=str(map_file),
                           policy_store=store_from_yaml(RESPONSE_RULES))
    caplog.set_level("INFO", logger="dnsflow.edge.resolver")
    r = await ask(svc, "example.com")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
    assert any(getattr(x, "rule", "") == "shop/resp#no-doc-net" for x in caplog.records)
    r = await ask(svc, "limited.example.com")
    assert [str(x) for x in r.answer[0]] == ["0.0.0.0"]
    r = await ask(svc, "example.com", source="127.0.0.2")   # payments: no such rule
    assert [str(x) for x in r.answer[0]] == ["93.184.216.34"]
