"""Tenant isolation: another tenant's namespace names are invisible unless exported."""

from __future__ import annotations

import pytest

from tests.helpers.policy_yaml import dns_policy, documents

NS_MAP = {"shop": "acme", "blog": "acme", "bank": "globex", "vault": "globex",
          "shared": "infra", "secret": "initech"}

POLICIES = documents(
    dns_policy("exports", "bank", "globex", """
  exports:
    - {service: api, to: [acme]}
    - {service: status, to: ["*"]}
"""),
    dns_policy("open", "shared", "infra", "isolation: none"),
    dns_policy("strict", "secret", "initech", """
  isolation: namespace
  exports: [{service: shared-api, to: [initech]}]
"""),
    dns_policy("sneaky", "shop", "acme", """
  # acme cannot open globex's names: exports only count for the owner's namespaces
  exports: [{service: db, to: ["*"]}]
  rules:
    - {id: allow-all-cluster, match: {suffixes: [cluster.local]}, action: allow}
"""))

HIDDEN_FROM_ACME = [
    "db.bank.svc.cluster.local",
    "DB.Bank.SVC.Cluster.Local.",
    "bank.svc.cluster.local",
    "_http._tcp.db.bank.svc.cluster.local",
    "_postgres._tcp.api2.bank.svc.cluster.local",
    "pod-0.db.bank.svc.cluster.local",
    "10-1-2-3.bank.pod.cluster.local",
    "10-1-2-3.VAULT.pod.cluster.local.",
    "*.bank.svc.cluster.local",
    "x.vault.svc.cluster.local",
    "x.secret.svc.cluster.local",
]

VISIBLE_TO_ACME = [
    "api.bank.svc.cluster.local",          # exported to acme
    "_grpc._tcp.api.bank.svc.cluster.local",
    "status.bank.svc.cluster.local",       # exported to everyone
    "db.shop.svc.cluster.local",           # own namespaces
    "db.blog.svc.cluster.local",
    "x.shared.svc.cluster.local",          # isolation: none
    "x.unknown-ns.svc.cluster.local",      # not a tenant's namespace
    "svc.cluster.local",
    "bank.svc.cluster.local.example.com",  # not the cluster zone
    "bank.example.com",
]


@pytest.fixture
def store(make_store):
    return make_store(POLICIES, NS_MAP)


@pytest.mark.parametrize("name", HIDDEN_FROM_ACME)
def test_other_tenants_names_hidden(store, mk_client, name):
    c = mk_client("acme", "shop")
    v = store.decide(c, name, "SRV" if name.startswith("_") else "A")
    assert v.action == "deny" and v.deny_mode == "NXDOMAIN" and v.isolated
    assert v.rule == "isolation"
    assert v.policy_version == 1  # the client's own tenant version
    assert store.hides(c, name)


@pytest.mark.parametrize("name", VISIBLE_TO_ACME)
def test_visible_names(store, mk_client, name):
    c = mk_client("acme", "shop")
    assert not store.decide(c, name, "A").isolated
    assert not store.hides(c, name)


def test_export_is_per_tenant(store, mk_client):
    other = mk_client("umbrella", "u1")
    assert store.hides(other, "api.bank.svc.cluster.local")
    assert not store.hides(other, "status.bank.svc.cluster.local")
    assert not store.hides(mk_client("globex", "vault"), "db.bank.svc.cluster.local")


def test_namespace_isolation_within_tenant(store, mk_client):
    same_ns = mk_client("initech", "secret")
    other_ns = mk_client("initech", "lab")
    assert not store.hides(same_ns, "db.secret.svc.cluster.local")
    assert store.hides(other_ns, "db.secret.svc.cluster.local")
    assert not store.hides(other_ns, "shared-api.secret.svc.cluster.local")
    assert store.hides(mk_client("acme", "shop"), "shared-api.secret.svc.cluster.local")


def test_rule_id_does_not_name_the_other_tenants_namespace(store, mk_client):
    # the rule lands in the asking tenant's events: "isolation:bank" told acme whose it is
    for name in ("db.bank.svc.cluster.local", "x.vault.svc.cluster.local"):
        v = store.decide(mk_client("acme", "shop"), name, "A")
        assert v.rule == "isolation" and v.isolated


def test_tenant_exports_of_foreign_namespace_ignored(store, mk_client):
    # acme's policy in namespace shop says 'db' is exported; it only opens shop's db
    assert not store.hides(mk_client("globex", "bank"), "db.shop.svc.cluster.local")
    assert store.hides(mk_client("globex", "bank"), "web.shop.svc.cluster.local")


def test_without_namespace_map_owner_comes_from_policies(make_store, mk_client):
    store = make_store(POLICIES)
    assert store.hides(mk_client("acme", "shop"), "db.bank.svc.cluster.local")
    assert not store.hides(mk_client("acme", "shop"), "x.vault.svc.cluster.local")  # unknown
    store.set_namespace_tenants({"vault": "globex"})
    assert store.hides(mk_client("acme", "shop"), "x.vault.svc.cluster.local")


def test_custom_cluster_domain(make_store, mk_client):
    from dnsflow.policies.api import PolicyStore

    store = make_store(POLICIES, NS_MAP, store=PolicyStore("corp.example."))
    c = mk_client("acme", "shop")
    assert store.hides(c, "db.bank.svc.corp.example")
    assert not store.hides(c, "db.bank.svc.cluster.local")
    assert store.view("acme").cluster_domain == "corp.example"


def test_isolation_applies_with_no_policy_at_all(mk_client):
    from dnsflow.policies.api import PolicyStore

    store = PolicyStore()
    store.set_namespace_tenants(NS_MAP)
    v = store.decide(mk_client("acme", "shop"), "db.bank.svc.cluster.local", "A")
    assert v.isolated and v.policy_version == 0


def test_answer_names_checked_with_hides(store, mk_client):
    """The edge checks every name of an upstream answer: CNAME chains, SRV targets and the
    targets of PTR answers for other tenants' addresses."""
    c = mk_client("acme", "shop")
    answer_names = {
        "10-2-96-10.bank.pod.cluster.local.": True,     # PTR target, another tenant's pod
        "db-0.db.vault.svc.cluster.local": True,        # SRV target
        "web.shop.svc.cluster.local": False,            # own tenant
        "api.bank.svc.cluster.local.": False,           # exported to acme
        "cdn.example.net": False,
    }
    assert {n: store.hides(c, n) for n in answer_names} == answer_names
