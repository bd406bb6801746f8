"""Egress rules (#17): what a user writes, the errors a bad rule gets, and what the edge
asks per answer (which rule selects this client and name, which ports, which mode)."""

from __future__ import annotations

import pytest

from dnsflow.policies import policyset
from dnsflow.policies.api import ClientInfo
from dnsflow.policies.loader import PolicySetError
from tests.helpers.policy_yaml import (
    cluster_policy,
    dns_policy,
    document,
    documents,
    store_from_yaml,
)

SHOP = dns_policy("base", "shop", "acme", """
egress:
  - id: stripe
    toFQDNs: [{matchName: api.stripe.com}, {matchPattern: "*.s3.amazonaws.com"},
              {matchPattern: "api-*.example.org"}]
    ports: [{port: 443}, {port: 8443, protocol: UDP}]
  - id: web-audit
    toFQDNs: [{matchPattern: "*"}]
    clients: {labels: {app: web}}
    mode: audit
""")


def _client(ns: str = "shop", tenant: str = "acme", **kw: object) -> ClientInfo:
    return ClientInfo("10.0.0.5", tenant, ns, **kw)  # type: ignore[arg-type]


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicySetError) as exc:
        policyset.from_text(text, "p.yaml")
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(("spec", "path", "fragment"), [
    ("egress: [{toFQDNs: [{matchName: a..b}]}]", "spec.egress[0].toFQDNs[0].matchName",
     "empty label"),
    ("egress: [{toFQDNs: [{matchPattern: 'a b.com'}]}]",
     "spec.egress[0].toFQDNs[0].matchPattern", "a lone '*' matches every name"),
    ("egress: [{toFQDNs: [{matchName: a.com, matchPattern: '*'}]}]",
     "spec.egress[0].toFQDNs[0]", "exactly one of 'matchName' or 'matchPattern'"),
    ("egress: [{toFQDNs: []}]", "spec.egress[0].toFQDNs", "at least 1"),
    ("egress: [{toFQDNs: [{matchName: a.com}], ports: [{port: 0}]}]",
     "spec.egress[0].ports[0].port", "greater than or equal to 1"),
    ("egress: [{toFQDNs: [{matchName: a.com}], ports: [{port: 53, protocol: ICMP}]}]",
     "spec.egress[0].ports[0].protocol", "'TCP', 'UDP' or 'SCTP'"),
    ("egress: [{toFQDNs: [{matchName: a.com}], mode: block}]", "spec.egress[0].mode",
     "'enforce' or 'audit'"),
    ("egress: [{toFQDNs: [{matchName: a.com}], to: x}]", "spec.egress[0].to",
     "unknown field"),
    ("egress: [{id: x, toFQDNs: [{matchName: a.com}]}, {id: x, toFQDNs: [{matchName: b.com}]}]",
     "spec.egress[1].id", "duplicate rule id 'x' (also spec.egress[0])"),
])
def test_a_bad_egress_rule_names_its_path_and_reason(spec: str, path: str, fragment: str):
    problems = _problems(document(spec))
    assert any(f": {path}: " in p and fragment in p for p in problems), problems


def test_allowed_names_ports_and_mode_per_client():
    store = store_from_yaml(SHOP)
    assert store.has_egress
    plain, web = _client(), _client(labels={"app": "web"})
    g = store.egress(plain, "api.stripe.com")
    assert g is not None and g.rule == "shop/base#stripe" and g.mode == "enforce"
    assert g.ports == (("tcp", 443), ("udp", 8443))
    assert store.egress(plain, "x.s3.amazonaws.com") is not None
    assert store.egress(plain, "a.b.s3.amazonaws.com") is None  # '*' stays inside a label
    assert store.egress(plain, "s3.amazonaws.com") is None
    assert store.egress(plain, "api-v2.example.org") is not None
    assert store.egress(plain, "api.example.org") is None
    assert store.egress(plain, "other.example") is None
    # the web pod is enforced (the stripe rule selects it too): the audit rule cannot widen it
    assert store.egress_mode(web) == "enforce"
    assert store.egress(web, "other.example") is None
    assert store.egress(web, "api.stripe.com").ports == (("tcp", 443), ("udp", 8443))
    # another namespace of the tenant and another tenant: not selected
    assert store.egress_mode(_client("admin")) is None
    assert store.egress(_client("other", "globex"), "api.stripe.com") is None


def test_audit_only_client_and_cluster_rules():
    text = documents(
        dns_policy("a", "lab", "acme", """
        egress: [{id: try, toFQDNs: [{matchName: api.stripe.com}], mode: audit}]
        """),
        cluster_policy("corp", """
        egress:
          - id: ntp
            toFQDNs: [{matchName: ntp.corp.example}]
            ports: [{port: 123, protocol: UDP}]
            clients: {tenants: [globex]}
        """))
    store = store_from_yaml(text)
    lab = _client("lab")
    assert store.egress_mode(lab) == "audit"
    assert store.egress(lab, "api.stripe.com").mode == "audit"
    assert store.egress(lab, "ntp.corp.example") is None  # cluster rule is for globex
    g = store.egress(_client("web", "globex"), "ntp.corp.example")
    assert g is not None and g.rule == "cluster:corp#ntp" and g.ports == (("udp", 123),)


def test_no_egress_rules_means_no_egress_work():
    store = store_from_yaml(dns_policy("base", "shop", "acme", "rules: []"))
    assert not store.has_egress
    assert store.egress(_client(), "api.stripe.com") is None
    assert store.egress_mode(_client()) is None
