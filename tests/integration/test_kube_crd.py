"""The generated CRDs against a real kube-apiserver (scripts/kube-local): what the model
refuses, `kubectl apply` refuses too, with the CEL or schema message naming the field; what
the model accepts applies."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from dnsflow.policies.model import DNSPolicy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crds(kube):
    """The committed CRDs, applied and Established."""
    kube.apply_crds()
    return kube


@pytest.fixture
def ns(crds):
    name = f"crd-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false")


def _doc(ns: str, spec: dict, name: str = "p") -> dict:
    return {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _deny(**match) -> dict:
    return {"rules": [{"id": "r", "action": "deny", "match": match}]}


BAD = {
    "ftp-upstream": ({"view": {"upstreams": ["ftp://10.0.0.53"]}},
                     "spec.view.upstreams[0]", "upstream must start with udp://"),
    "ftp-redirect": ({"rules": [{"action": "redirect",
                                 "redirect": {"upstreams": ["ftp://10.0.0.53"]}}]},
                     "spec.rules[0].redirect.upstreams[0]", "upstream must start with udp://"),
    "path-on-udp": ({"view": {"upstreams": ["udp://10.0.0.53/dns-query"]}},
                    "spec.view.upstreams[0]", "should match"),
    "empty-label": (_deny(names=["a..b"]), "spec.rules[0].match.names[0]", "should match"),
    "empty-label-suffix": (_deny(suffixes=[".example.com"]), "spec.rules[0].match.suffixes[0]",
                           "should match"),
    "wildcard-inside": (_deny(names=["a.*.b"]), "spec.rules[0].match.names[0]", "should match"),
    "bad-action": ({"rules": [{"action": "explode"}]}, "spec.rules[0].action",
                   'Unsupported value: "explode"'),
    "bad-rtype": (_deny(types=["A", "BOGUS"]), "spec.rules[0].match.types[1]",
                  "unknown DNS record type"),
    "bad-record-type": ({"view": {"records": [{"name": "db.x", "type": "QQ", "value": "1"}]}},
                        "spec.view.records[0].type", "unknown DNS record type"),
    "negative-rate": ({"rules": [{"action": "allow", "rateLimit": {"qps": -5}}]},
                      "spec.rules[0].rateLimit.qps", "should be greater than 0"),
    "negative-burst": ({"rules": [{"action": "allow", "rateLimit": {"qps": 5, "burst": -1}}]},
                       "spec.rules[0].rateLimit.burst", "greater than or equal to 0"),
    "rate-on-deny": ({"rules": [{"action": "deny", "rateLimit": {"qps": 5}}]},
                     "spec.rules[0]", "'rateLimit' makes no sense with action deny"),
    "rewrite-missing": ({"rules": [{"action": "rewrite"}]}, "spec.rules[0]",
                        "'rewrite' is required with action rewrite"),
    "rewrite-both": ({"rules": [{"action": "rewrite", "rewrite": {
        "cname": "x.example", "records": [{"type": "A", "value": "10.0.0.1"}]}}]},
        "spec.rules[0].rewrite", "exactly one of 'records' or 'cname'"),
    "denymode-on-allow": ({"rules": [{"action": "allow", "denyMode": "REFUSED"}]},
                          "spec.rules[0]", "'denyMode' is only allowed with action deny"),
    "cidr-host-bits": (_deny(response={"answerCIDRs": ["10.0.0.1/8"]}),
                       "spec.rules[0].match.response.answerCIDRs[0]", "bad CIDR"),
    "empty-response": (_deny(response={}), "spec.rules[0].match.response",
                       "response match needs answerCIDRs or rcodes"),
    "bad-rule-id": ({"rules": [{"id": "no spaces", "action": "deny"}]}, "spec.rules[0].id",
                    "should match"),
    "bad-priority": ({"priority": 5000}, "spec.priority", "less than or equal to 1000"),
    "bad-isolation": ({"isolation": "cluster"}, "spec.isolation", "Unsupported value"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_policy_is_refused_at_apply(crds, ns, case) -> None:
    spec, field, message = BAD[case]
    doc = _doc(ns, spec)
    with pytest.raises(ValueError):  # the model refuses it too: the CRD mirrors it
        DNSPolicy.model_validate(doc)
    out = crds.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert out.returncode != 0, f"{case}: accepted by the API server"
    assert field in out.stderr and message in out.stderr, out.stderr
    assert crds.kubectl("get", "dnsp", "p", "-n", ns, check=False).returncode != 0


GOOD = {
    "upstreams": {"view": {"upstreams": [
        "tls://10.0.0.53:853@dns.acme.internal", "https://dns.example/dns-query",
        "udp://10.0.0.53:53", "tcp://10.0.0.53", "dot://1.1.1.1@one.one.one.one",
        "doh://dns.example", "udp://[fd00::53]:53", "udp://10.0.0.53/"]}},
    "names": _deny(names=["ads.example.com", "*.Tracker.NET.", "bücher.example",
                          "_dmarc.example.com"], suffixes=["onion", "corp.internal."],
                   regex=["[a-z0-9]{25,}\\.biz"], types=["a", "AAAA", "TYPE65280", "https"]),
    "response": _deny(suffixes=["example.com"], response={
        "answerCIDRs": ["10.0.0.0/8", "192.0.2.7", "fd00::/8"], "rcodes": ["NOERROR"]}),
    "actions": {"rules": [
        {"id": "pin", "action": "rewrite", "match": {"names": ["api.example.com"]},
         "rewrite": {"records": [{"type": "A", "value": "10.9.9.9", "ttl": 30}]}},
        {"id": "alias", "action": "rewrite", "match": {"names": ["old.example.com"]},
         "rewrite": {"cname": "new.example.com"}},
        {"id": "corp", "action": "redirect", "match": {"suffixes": ["corp.internal"]},
         "redirect": {"upstreams": ["tls://10.1.1.1:853@dns.corp.internal"]},
         "rateLimit": {"qps": 0.5, "burst": 20}},
        {"id": "quiet", "action": "deny", "denyMode": "DROP", "log": True}]},
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_good_policy_applies(crds, ns, case) -> None:
    doc = _doc(ns, GOOD[case])
    DNSPolicy.model_validate(doc)
    crds.kubectl("apply", "-f", "-", input=json.dumps(doc))
    got = json.loads(crds.kubectl("get", "dnsp", "p", "-n", ns, "-o", "json").stdout)
    assert got["spec"] == GOOD[case]


def test_shipped_examples_apply_and_a_bad_cluster_policy_is_refused(crds, ns) -> None:
    docs = [d for d in yaml.safe_load_all(
        (ROOT / "deploy" / "examples" / "policies" / "example.yaml").read_text()) if d]
    for d in docs:
        if d["kind"] == "DNSPolicy":
            d["metadata"]["namespace"] = ns
        else:
            d["metadata"]["name"] = f"{ns}-{d['metadata']['name']}"
    try:
        out = crds.kubectl("apply", "--dry-run=server", "-f", "-",
                           input="\n---\n".join(json.dumps(d) for d in docs))
        assert out.stdout.count("(server dry run)") == len(docs)
        bad = {"apiVersion": "dnsflow.io/v1", "kind": "ClusterDNSPolicy",
               "metadata": {"name": f"{ns}-bad"},
               "spec": {"tier": "guardrail", "rules": [{"action": "redirect", "redirect": {
                   "upstreams": ["ftp://10.0.0.1"]}}]}}
        out = crds.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert out.returncode != 0
        assert "spec.rules[0].redirect.upstreams[0]" in out.stderr
        assert "upstream must start with udp://" in out.stderr
    finally:
        crds.kubectl("delete", "cdnsp", f"{ns}-bad", "--ignore-not-found")


def test_helm_chart_crds_are_the_generated_ones() -> None:
    for name in ("dnspolicies.yaml", "clusterdnspolicies.yaml"):
        assert (ROOT / "deploy" / "helm" / "dnsflow" / "crds" / name).read_text() == \
            (ROOT / "deploy" / "crds" / name).read_text(), \
            "regenerate: python -m dnsflow.policies.crd"
