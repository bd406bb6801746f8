"""``dnsflow policy egress-export`` (#17): NetworkPolicy documents with the addresses the
rule's clients were allowed over the window, CiliumNetworkPolicy with toFQDNs and the DNS
rule; the output parsed back and checked against the kubernetes client's own models."""

from __future__ import annotations

import re

import pytest
import yaml
from kubernetes.client import ApiClient

from dnsflow.cli import main
from tests.helpers.egress_seed import seeded_dir

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return seeded_dir(tmp_path_factory, "export")


def export(setup, capsys, *argv: str) -> tuple[int, list[dict], str]:
    d, dsn = setup
    rc = main(["policy", "egress-export", *argv, "--clickhouse", dsn, "--home", str(d),
               str(d / "p.yaml")])
    out = capsys.readouterr()
    return rc, [doc for doc in yaml.safe_load_all(out.out) if doc], out.err


def as_model(doc: dict, kind: str) -> object:
    """The document through the kubernetes client's typed model (required fields, types)."""
    return ApiClient()._ApiClient__deserialize(doc, kind)  # type: ignore[attr-defined]


def test_network_policy_has_the_observed_addresses(setup, capsys) -> None:
    rc, docs, err = export(setup, capsys, "--since", "1h")
    assert rc == 0, err
    assert "shop/base#watch: mode audit has no Kubernetes equivalent" in err
    [doc] = docs
    assert (doc["apiVersion"], doc["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    meta = doc["metadata"]
    assert meta["name"] == "dnsflow-egress-shop-base-stripe" and DNS1123.match(meta["name"])
    assert meta["namespace"] == "shop" and meta["annotations"]["dnsflow.io/rule"] == \
        "shop/base#stripe"
    spec = doc["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "pay"}}
    assert spec["policyTypes"] == ["Egress"]
    dns, allow = spec["egress"]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"}
    assert {p["port"] for p in dns["ports"]} == {53}
    # node allows of the rule (live and expired: both seen in the window) + answers of its
    # names (dns_events); not the answer of a name the rule does not cover
    assert [t["ipBlock"]["cidr"] for t in allow["to"]] == [
        "198.51.100.20/32", "203.0.113.7/32", "203.0.113.8/32"]
    assert allow["ports"] == [{"protocol": "TCP", "port": 443}]
    model = as_model(doc, "V1NetworkPolicy")
    assert ApiClient().sanitize_for_serialization(model) == doc


def test_cilium_policy_uses_to_fqdns_and_allows_dns(setup, capsys, tmp_path) -> None:
    out = tmp_path / "cnp.yaml"
    rc, docs, err = export(setup, capsys, "--format", "cilium", "-o", str(out))
    assert rc == 0 and docs == [], err
    [doc] = list(yaml.safe_load_all(out.read_text()))
    assert (doc["apiVersion"], doc["kind"]) == ("cilium.io/v2", "CiliumNetworkPolicy")
    spec = doc["spec"]
    assert spec["endpointSelector"] == {"matchLabels": {"app": "pay"}}
    dns, allow = spec["egress"]
    assert dns["toEndpoints"] == [{"matchLabels": {
        "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}}]
    assert dns["toPorts"] == [{"ports": [{"port": "53", "protocol": "ANY"}],
                               "rules": {"dns": [{"matchPattern": "*"}]}}]
    assert allow["toFQDNs"] == [{"matchName": "api.stripe.com"},
                                {"matchPattern": "*.s3.amazonaws.com"}]
    assert allow["toPorts"] == [{"ports": [{"port": "443", "protocol": "TCP"}]}]


def test_nothing_observed_allows_dns_only_and_says_so(setup, capsys) -> None:
    rc, docs, err = export(setup, capsys, "--since", "1s", "--dns-namespace", "dns",
                           "--dns-label", "app=coredns")
    assert rc == 0
    assert "no address observed in the window: the exported policy allows DNS only" in err
    [doc] = docs
    [dns] = doc["spec"]["egress"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"app": "coredns"}}


@pytest.mark.parametrize("argv, needle", [
    (["--since", "yesterday"], "--since 'yesterday'"),
    (["--dns-label", "nolabel"], "--dns-label 'nolabel': use KEY=VALUE"),
    (["--tenant", "nobody"], "--tenant nobody: no policy for it"),
    (["-o", "/nonexistent/dir/x.yaml"], "-o /nonexistent/dir/x.yaml"),
])
def test_bad_input_is_named(setup, capsys, argv, needle) -> None:
    rc, _, err = export(setup, capsys, *argv)
    assert rc == 2 and needle in err, err
