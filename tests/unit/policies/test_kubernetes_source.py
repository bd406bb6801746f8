"""KubernetesSource decisions without a cluster: tenant from the namespace label, and a
tenant with a bad resource keeps its last good version while others move on."""

from __future__ import annotations

from dnsflow.bus.memory import MemoryBus
from dnsflow.policies.sources.kubernetes import KubernetesSource


def _dnspolicy(ns: str, name: str, names: list[str], **spec: object) -> dict:
    return {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
            "metadata": {"name": name, "namespace": ns, "uid": "x", "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"rules": [{"id": "r", "match": {"names": names}, "action": "deny"}], **spec}}


async def _source() -> KubernetesSource:
    src = KubernetesSource(MemoryBus(), api_client=object())
    await src.publisher.load()
    src.namespaces = {"shop": {"dnsflow.io/tenant": "acme"},
                      "bank": {"dnsflow.io/tenant": "globex"}, "loose": {}}
    return src


async def test_tenant_comes_from_namespace_label():
    src = await _source()
    src.objects["DNSPolicy"][("shop", "p")] = _dnspolicy("shop", "p", ["a.com"])
    src.objects["DNSPolicy"][("bank", "q")] = _dnspolicy("bank", "q", ["b.com"], tenant="acme")
    src.objects["DNSPolicy"][("loose", "z")] = _dnspolicy("loose", "z", ["c.com"], tenant="acme")
    src.objects["ClusterDNSPolicy"][("", "g")] = {
        "apiVersion": "dnsflow.io/v1", "kind": "ClusterDNSPolicy", "metadata": {"name": "g"},
        "spec": {"rules": [{"match": {"suffixes": ["onion"]}, "action": "deny"}]}}
    docs, problems = src.build()
    assert set(docs) == {"acme", "_global"}
    assert docs["acme"]["policies"][0]["spec"]["tenant"] == "acme"
    assert docs["acme"]["policies"][0]["metadata"] == {"name": "p", "namespace": "shop"}
    assert "differs from namespace 'bank''s tenant 'globex'" in str(problems["globex"][0])
    assert "has no dnsflow.io/tenant label" in str(problems["namespace:loose"][0])


async def test_bad_resource_freezes_only_its_tenant():
    src = await _source()
    src.objects["DNSPolicy"][("shop", "p")] = _dnspolicy("shop", "p", ["a.com"])
    src.objects["DNSPolicy"][("bank", "q")] = _dnspolicy("bank", "q", ["b.com"])
    await src.sync()
    assert src.status()["versions"] == {"acme": 1, "globex": 1}
    bad = _dnspolicy("shop", "p", ["a.com"])
    bad["spec"]["rules"][0]["action"] = "explode"
    src.objects["DNSPolicy"][("shop", "p")] = bad
    src.objects["DNSPolicy"][("bank", "q")] = _dnspolicy("bank", "q", ["b.com", "c.com"])
    await src.sync()
    assert src.status()["versions"] == {"acme": 1, "globex": 2}
    assert "spec.rules[0].action" in src.status()["problems"]["acme"][0]
    # fixing it publishes again; deleting everything empties both with a new version
    src.objects["DNSPolicy"][("shop", "p")] = _dnspolicy("shop", "p", ["z.com"])
    await src.sync()
    assert src.status()["versions"] == {"acme": 2, "globex": 2}
    src.objects["DNSPolicy"].clear()
    await src.sync()
    assert src.status()["versions"] == {"acme": 3, "globex": 3}
    assert src.publisher.current["acme"]["policies"] == []
