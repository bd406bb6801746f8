"""Matching and precedence: which rule decides, in which order, with which verdict."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from dnsflow.policies.api import LocalRecord
from tests.helpers.policy_yaml import cluster_policy, dns_policy, documents

BASE = dns_policy("base", "shop", "acme", """
  rules:
    - id: block-ads
      match: {names: [ads.example.com, "*.tracker.net"]}
      action: deny
    - id: corp
      match: {suffixes: [corp.internal]}
      action: redirect
      redirect: {upstreams: ["tls://10.1.1.1:853@dns.corp.internal"]}
    - id: pin
      match: {names: [api.example.com], types: [A]}
      action: rewrite
      rewrite: {records: [{type: A, value: 10.9.9.9, ttl: 30}]}
    - id: alias
      match: {names: [old.example.com]}
      action: rewrite
      rewrite: {cname: new.example.com}
    - id: dga
      match: {regex: ['[a-z0-9]{25,}\\.(biz|xyz)']}
      action: deny
      denyMode: REFUSED
      log: true
    - id: limit-example
      match: {suffixes: [example.com]}
      action: allow
      rateLimit: {qps: 5, burst: 10}
""")


def test_exact_name_denied_any_case_and_trailing_dot(make_store, mk_client):
    store = make_store(BASE)
    for q in ("ads.example.com", "ADS.Example.COM.", "ads.example.com."):
        v = store.decide(mk_client(), q, "A")
        assert (v.action, v.rule, v.deny_mode, v.policy_version) == \
            ("deny", "shop/base#block-ads", "NXDOMAIN", 1)


def test_wildcard_matches_below_but_not_apex(make_store, mk_client):
    store = make_store(BASE)
    assert store.decide(mk_client(), "x.y.tracker.net", "A").rule == "shop/base#block-ads"
    assert store.decide(mk_client(), "tracker.net", "A").action == "allow"
    assert store.decide(mk_client(), "nottracker.net", "A").action == "allow"


def test_suffix_matches_apex_and_below(make_store, mk_client):
    store = make_store(BASE)
    for q in ("corp.internal", "git.eu.corp.internal"):
        v = store.decide(mk_client(), q, "AAAA")
        assert v.action == "redirect"
        assert v.upstreams == ("tls://10.1.1.1:853@dns.corp.internal",)
    assert store.decide(mk_client(), "xcorp.internal", "A").action == "allow"


def test_query_type_condition(make_store, mk_client):
    store = make_store(BASE)
    v = store.decide(mk_client(), "API.example.com", "A")
    assert v.action == "rewrite"
    assert v.records == (LocalRecord("api.example.com", "A", 30, "10.9.9.9"),)
    # AAAA for the same name falls through to the later suffix rule
    v = store.decide(mk_client(), "api.example.com", "AAAA")
    assert (v.action, v.rule, v.rate_limit) == ("allow", "shop/base#limit-example", (5.0, 10))


def test_cname_rewrite(make_store, mk_client):
    v = make_store(BASE).decide(mk_client(), "old.example.com", "AAAA")
    assert v.action == "rewrite"
    assert v.records == (LocalRecord("old.example.com", "CNAME", 60, "new.example.com."),)


def test_regex_tier(make_store, mk_client):
    store = make_store(BASE)
    v = store.decide(mk_client(), "a" * 30 + ".biz", "A")
    assert (v.action, v.deny_mode, v.log, v.rule) == ("deny", "REFUSED", True, "shop/base#dga")
    assert store.decide(mk_client(), "a" * 10 + ".biz", "A").action == "allow"


def test_default_allow_carries_version(make_store, mk_client):
    v = make_store(BASE, version=7).decide(mk_client(), "python.org", "A")
    assert (v.action, v.rule, v.policy_version) == ("allow", "", 7)


def rules_deciding(store, queries: list[tuple[str, str]], client) -> list[str]:
    """The rule that decides each (name, type), in order: one comparison shows them all."""
    return [store.decide(client, name, qtype).rule for name, qtype in queries]


def test_first_matching_rule_wins_over_more_specific_later_rule(make_store, mk_client):
    store = make_store(dns_policy("p", "shop", "acme", """
  rules:
    - {id: wide, match: {suffixes: [example.com], types: [TXT]}, action: deny}
    - {id: narrow, match: {names: [www.example.com]}, action: allow, log: true}
    - {id: regex-first, match: {regex: ['.*\\.org']}, action: deny}
    - {id: plain-later, match: {names: [x.org, x.com]}, action: allow, rateLimit: {qps: 1}}
"""))
    queries = [("www.example.com", "TXT"), ("www.example.com", "A"), ("x.org", "A"),
               ("x.com", "A")]
    assert rules_deciding(store, queries, mk_client()) == [
        "shop/p#wide", "shop/p#narrow", "shop/p#regex-first", "shop/p#plain-later"]


POLICIES_TWO = documents(
    dns_policy("zz-late", "shop", "acme", """
  priority: 10
  rules: [{id: r, match: {names: [a.example.com]}, action: deny}]
"""),
    dns_policy("aa-early-name", "shop", "acme", """
  rules: [{id: r, match: {names: [a.example.com, c.example.com]}, action: allow, log: true}]
"""),
    dns_policy("b", "shop", "acme", """
  rules: [{id: r, match: {names: [b.example.com]}, action: deny, denyMode: NODATA}]
"""),
    dns_policy("a", "shop", "acme", """
  rules: [{id: r, match: {names: [b.example.com], types: [A]}, action: allow}]
"""))


def test_priority_then_name_orders_policies(make_store, mk_client):
    store = make_store(POLICIES_TWO)
    queries = [("a.example.com", "A"), ("c.example.com", "A"), ("b.example.com", "A"),
               ("b.example.com", "MX")]
    assert rules_deciding(store, queries, mk_client()) == [
        "shop/zz-late#r",        # priority 10 beats the default 100 whatever the names
        "shop/aa-early-name#r",
        "shop/a#r",              # equal priority: namespace then name ("a" before "b")
        "shop/b#r",
    ]


SELECTORS = documents(
    dns_policy("own-ns", "shop", "acme", """
  rules: [{id: r, match: {names: [own.example.com]}, action: deny}]
"""),
    dns_policy("all-ns", "shop", "acme", """
  clients: {namespaces: ["*"], labels: {app: web}, serviceAccounts: [web-sa]}
  rules: [{id: r, match: {names: [web.example.com]}, action: deny}]
"""))


def test_client_selectors(make_store, mk_client):
    store = make_store(SELECTORS)
    assert store.decide(mk_client(namespace="shop"), "own.example.com", "A").action == "deny"
    assert store.decide(mk_client(namespace="blog"), "own.example.com", "A").action == "allow"
    web = mk_client(namespace="blog", service_account="web-sa",
                    labels=MappingProxyType({"app": "web", "tier": "fe"}))
    assert store.decide(web, "web.example.com", "A").action == "deny"
    other_sa = mk_client(namespace="blog", service_account="x",
                         labels=MappingProxyType({"app": "web"}))
    assert store.decide(other_sa, "web.example.com", "A").action == "allow"
    no_label = mk_client(namespace="blog", service_account="web-sa")
    assert store.decide(no_label, "web.example.com", "A").action == "allow"


def test_tenant_policy_never_applies_to_other_tenant(make_store, mk_client):
    store = make_store(BASE)
    v = store.decide(mk_client(tenant="globex", namespace="shop"), "ads.example.com", "A")
    assert (v.action, v.rule, v.policy_version) == ("allow", "", 0)


CLUSTER = documents(
    cluster_policy("guard", """
  rules:
    - {id: malware, match: {suffixes: [evil.test]}, action: deny, log: true}
"""),
    cluster_policy("base", """
  tier: baseline
  rules:
    - {id: no-onion, match: {suffixes: [onion, allowed.test]}, action: deny, denyMode: REFUSED}
"""),
    cluster_policy("only-globex", """
  clients: {tenants: [globex]}
  rules:
    - {id: r, match: {names: [g.test]}, action: deny}
"""),
    dns_policy("p", "shop", "acme", """
  rules:
    - {id: try-allow-evil, match: {suffixes: [evil.test]}, action: allow}
    - {id: allow-onion, match: {suffixes: [allowed.test]}, action: allow}
"""))


def test_cluster_tiers_precedence(make_store, mk_client):
    store = make_store(CLUSTER, version=3)
    # guardrail beats the tenant's allow
    v = store.decide(mk_client(), "x.evil.test", "A")
    assert (v.action, v.rule) == ("deny", "cluster:guard#malware")
    # tenant's allow beats the baseline
    assert store.decide(mk_client(), "allowed.test", "A").rule == "shop/p#allow-onion"
    # baseline applies when the tenant says nothing, to every tenant
    for c in (mk_client(), mk_client(tenant="globex", namespace="g")):
        v = store.decide(c, "abc.onion", "A")
        assert (v.action, v.deny_mode, v.rule) == ("deny", "REFUSED", "cluster:base#no-onion")
    # a cluster policy can target tenants
    assert store.decide(mk_client(), "g.test", "A").action == "allow"
    assert store.decide(mk_client(tenant="globex", namespace="g"), "g.test", "A").action == "deny"


def test_auto_deny_between_guardrail_and_tenant(make_store, mk_client):
    import time

    from dnsflow.policies.api import AutoDeny, auto_deny_record

    store = make_store(CLUSTER)
    future = time.time_ns() // 1000 + 60_000_000
    past = time.time_ns() // 1000 - 1
    k, v = auto_deny_record("acme", [
        AutoDeny("acme", "allowed.test", future, "anomaly dga", "dga"),
        AutoDeny("acme", "evil.test", future, "x", "dga"),
        AutoDeny("acme", "old.test", past, "expired", "tunneling"),
    ], 1)
    assert k == b"auto:acme"
    assert store.apply_record(k, v)
    got = store.decide(mk_client(), "WWW.allowed.test.", "A")
    assert (got.action, got.deny_mode, got.rule) == ("deny", "NXDOMAIN", "auto:dga:allowed.test")
    assert store.decide(mk_client(), "evil.test", "A").rule == "cluster:guard#malware"
    assert store.decide(mk_client(), "old.test", "A").action == "allow"
    # not another tenant: globex falls through to the baseline
    assert store.decide(mk_client(tenant="globex"), "allowed.test", "A").rule == \
        "cluster:base#no-onion"
    # an empty set lifts them; an older version is ignored
    assert not store.apply_record(*auto_deny_record("acme", [], 1))
    assert store.apply_record(*auto_deny_record("acme", [], 2))
    assert store.decide(mk_client(), "allowed.test", "A").rule == "shop/p#allow-onion"


def test_response_rules(make_store, mk_client):
    store = make_store(dns_policy("p", "shop", "acme", """
  rules:
    - id: rebinding
      match: {suffixes: [example.com], response: {answerCIDRs: [10.0.0.0/8, "fd00::/8"]}}
      action: deny
    - id: nx
      match: {response: {rcodes: [NXDOMAIN]}}
      action: allow
      log: true
"""))
    c = mk_client()
    assert store.decide(c, "a.example.com", "A").action == "allow"
    v = store.check_response(c, "a.example.com", "A", "NOERROR", ["1.2.3.4", "10.2.3.4"])
    assert v is not None and v.rule == "shop/p#rebinding"
    assert store.check_response(c, "a.example.com", "AAAA", "NOERROR", ["fd00::1"]).action \
        == "deny"
    assert store.check_response(c, "a.example.com", "A", "NOERROR", ["1.2.3.4"]) is None
    v = store.check_response(c, "zzz.org", "A", "NXDOMAIN", [])
    assert v is not None and v.rule == "shop/p#nx" and v.log
    assert store.check_response(mk_client(tenant="other"), "a.example.com", "A", "NOERROR",
                                ["10.0.0.1"]) is None


def test_view_merged_per_tenant(make_store):
    store = make_store(documents(
        dns_policy("v1", "shop", "acme", """
  view:
    records: [{name: db.acme.internal, type: A, value: 10.0.0.7, ttl: 20}]
    searchDomains: [acme.internal]
    upstreams: ["https://dns.example.net/dns-query", "udp://127.0.0.1:5353"]
"""),
        dns_policy("v2", "blog", "acme", """
  view:
    records: [{name: "Cache.Acme.Internal.", type: CNAME, value: db.acme.internal.}]
    searchDomains: [acme.internal, blog.acme.internal]
""")))
    view = store.view("acme")
    assert view.tenant == "acme"
    assert set(view.records) == {
        LocalRecord("db.acme.internal", "A", 20, "10.0.0.7"),
        LocalRecord("cache.acme.internal", "CNAME", 60, "db.acme.internal."),
    }
    assert view.search_domains == ("acme.internal", "blog.acme.internal")
    assert view.upstreams == ("https://dns.example.net/dns-query", "udp://127.0.0.1:5353")
    assert store.view("globex").records == ()


@pytest.mark.parametrize("q", ["a.example.com", "A.EXAMPLE.COM."])
def test_lower_versions_ignored_and_tombstone(make_store, mk_client, q):
    from dnsflow.policies import policyset, records

    store = make_store(BASE, version=5)
    docs = policyset.from_text(BASE.replace("ads.example.com", "a.example.com"))
    k, v = records.encode(docs["acme"], 4, 1, "test", "t")
    assert not store.apply_record(k, v)
    assert store.decide(mk_client(), q, "A").rule == "shop/base#limit-example"
    k, v = records.encode(docs["acme"], 6, 1, "test", "t")
    assert store.apply_record(k, v)
    assert store.decide(mk_client(), q, "A").rule == "shop/base#block-ads"
    assert store.version("acme") == 6
    assert store.apply_record(b"acme", None)
    assert store.decide(mk_client(), q, "A").action == "allow"
    assert store.version("acme") == 0
    assert not store.apply_record(b"acme", None)
