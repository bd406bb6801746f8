"""The Kubernetes source with the real `kubernetes` client against kmock's API emulator:
create / modify / delete DNSPolicy resources and watch the published version follow."""

from __future__ import annotations

import asyncio
import time

import kmock
import pytest
from kubernetes import client

from dnsflow.bus.memory import MemoryBus
from dnsflow.policies.api import ClientInfo, PolicyFollower, PolicyStore
from dnsflow.policies.sources.kubernetes import KubernetesSource, make_api_client

ACME = ClientInfo("10.0.0.5", "acme", "shop")


def _policy(names: list[str], tenant: str | None = None, name: str = "base") -> dict:
    spec: dict = {"rules": [{"id": "ads", "match": {"names": names}, "action": "deny"}]}
    if tenant:
        spec["tenant"] = tenant
    return {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec}


async def _until(pred, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def _parse_path_with_namespaces(path: str):
    """kmock 0.8 reads `/api/v1/namespaces[/NAME]` as a namespace prefix with no resource and
    fails (500); Namespace is itself a cluster-scoped resource. Fix just that case."""
    from kmock._internal import parsing

    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"] and len(parts) in (3, 4) and parts[2] == "namespaces":
        return parsing.ParsedPath("", "v1", "namespaces", None,
                                  parts[3] if len(parts) == 4 else None, None)
    return _ORIGINAL_PARSE(path)


from kmock._internal import parsing as _kmock_parsing  # noqa: E402

_ORIGINAL_PARSE = _kmock_parsing.parse_path


@pytest.fixture
async def k8s(monkeypatch):
    monkeypatch.setattr(_kmock_parsing, "parse_path", _parse_path_with_namespaces)
    async with kmock.KubernetesEmulator() as handler, kmock.Server(handler):
        handler.resources["dnsflow.io/v1/dnspolicies"] = {"kind": "DNSPolicy",
                                                          "namespaced": True}
        handler.resources["dnsflow.io/v1/clusterdnspolicies"] = {"kind": "ClusterDNSPolicy",
                                                                 "namespaced": False}
        handler.resources["v1/namespaces"] = {"kind": "Namespace", "namespaced": False}
        yield handler


async def test_dnspolicy_lifecycle_is_published(k8s):
    api = make_api_client(host=str(k8s.url).rstrip("/"))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    group = {"group": "dnsflow.io", "version": "v1"}

    def create_ns(name: str, tenant: str | None) -> None:
        labels = {"dnsflow.io/tenant": tenant} if tenant else {}
        core.create_namespace({"metadata": {"name": name, "labels": labels}})

    await asyncio.to_thread(create_ns, "shop", "acme")
    await asyncio.to_thread(create_ns, "rogue", None)

    bus = MemoryBus()
    store = PolicyStore()
    follower = PolicyFollower(bus, store, poll_ms=20)
    seen_ns: list[dict] = []
    source = KubernetesSource(bus, api_client=api, timeout_s=5,
                              on_namespaces=seen_ns.append)
    await follower.start()
    await source.start()
    try:
        # create
        await asyncio.to_thread(custom.create_namespaced_custom_object, **group,
                                namespace="shop", plural="dnspolicies",
                                body=_policy(["ads.example.com"]))
        await _until(lambda: store.version("acme") == 1)
        assert store.decide(ACME, "ads.example.com", "A").rule == "shop/base#ads"
        assert seen_ns[-1] == {"shop": "acme"}
        log = store.record("acme")
        assert log is not None and log["source"] == "kubernetes"

        # modify
        await asyncio.to_thread(custom.patch_namespaced_custom_object, **group,
                                namespace="shop", plural="dnspolicies", name="base",
                                body={"spec": {"rules": [{"id": "ads", "action": "deny",
                                                          "match": {"names": ["t.example.com"]}}]}})
        await _until(lambda: store.version("acme") == 2)
        assert store.decide(ACME, "t.example.com", "A").action == "deny"
        assert store.decide(ACME, "ads.example.com", "A").action == "allow"

        # an invalid edit freezes acme at v2 (last good stays) and is reported
        await asyncio.to_thread(custom.patch_namespaced_custom_object, **group,
                                namespace="shop", plural="dnspolicies", name="base",
                                body={"spec": {"rules": [{"id": "ads", "action": "explode"}]}})
        await _until(lambda: "acme" in source.status()["problems"])
        assert "spec.rules[0].action" in source.status()["problems"]["acme"][0]
        assert store.version("acme") == 2

        # a namespace without the tenant label cannot carry policy
        await asyncio.to_thread(custom.create_namespaced_custom_object, **group,
                                namespace="rogue", plural="dnspolicies",
                                body={**_policy(["x.com"], tenant="acme", name="evil"),
                                      "metadata": {"name": "evil", "namespace": "rogue"}})
        await _until(lambda: "namespace:rogue" in source.status()["problems"])
        assert "has no dnsflow.io/tenant label" in \
            source.status()["problems"]["namespace:rogue"][0]

        # delete: the tenant's policy is emptied with the next version
        await asyncio.to_thread(custom.delete_namespaced_custom_object, **group,
                                namespace="shop", plural="dnspolicies", name="base")
        await _until(lambda: store.version("acme") == 3)
        assert store.record("acme")["policies"] == []
        assert store.decide(ACME, "t.example.com", "A").action == "allow"
        assert source.status()["versions"] == {"acme": 3}
    finally:
        await source.stop()
        await follower.stop()


def _kubeconfig(k8s, tmp_path):
    f = tmp_path / "kubeconfig"
    f.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: kmock, cluster: {{server: "{str(k8s.url).rstrip('/')}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: kmock, user: u}}}}]
current-context: c
""")
    return f


@pytest.mark.kafka
async def test_cli_apply_kubernetes_once(k8s, tmp_path, kafka_bootstrap, topic_prefix,
                                         capsys):
    """`dnsflow policy apply --kubernetes` publishes the cluster's policies once and exits."""
    from dnsflow.bus.kafka import KafkaBus
    from dnsflow.cli import main
    from dnsflow.policies.topic import read_compacted
    from dnsflow.topics import Topics

    api = make_api_client(host=str(k8s.url).rstrip("/"))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    await asyncio.to_thread(core.create_namespace,
                            {"metadata": {"name": "shop", "labels": {"dnsflow.io/tenant": "acme"}}})
    await asyncio.to_thread(custom.create_namespaced_custom_object, "dnsflow.io", "v1", "shop",
                            "dnspolicies", _policy(["ads.example.com"]))
    argv = ["policy", "apply", "--kubernetes", "--kubeconfig", str(_kubeconfig(k8s, tmp_path)),
            "--kafka", kafka_bootstrap, "--topic-prefix", topic_prefix]
    rc = await asyncio.to_thread(main, argv)  # its own event loop; kmock serves from ours
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "kubernetes: versions {'acme': 1}" in out
    got = await read_compacted(KafkaBus(kafka_bootstrap, Topics(topic_prefix)),
                               topic_prefix + "policies")
    store = PolicyStore()
    assert store.apply_record(b"acme", got["acme"])
    assert store.decide(ACME, "ads.example.com", "A").rule == "shop/base#ads"


async def test_service_with_kubernetes_enabled_uses_kubeconfig(k8s, tmp_path):
    """`policies: {kubernetes: true, kubeconfig: FILE}` in the runner's settings."""
    from dnsflow.policies.service import build
    from dnsflow.settings import Settings

    url = str(k8s.url).rstrip("/")
    kubeconfig = _kubeconfig(k8s, tmp_path)
    api = make_api_client(host=url)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    await asyncio.to_thread(core.create_namespace,
                            {"metadata": {"name": "shop", "labels": {"dnsflow.io/tenant": "acme"}}})
    bus = MemoryBus()
    settings = Settings(home=tmp_path, policies={"kubernetes": True,
                                                 "kubeconfig": str(kubeconfig)})
    (service,) = build(settings, bus)
    store = PolicyStore()
    follower = PolicyFollower(bus, store, poll_ms=20)
    await follower.start()
    await service.start()
    try:
        await asyncio.to_thread(
            custom.create_cluster_custom_object, "dnsflow.io", "v1", "clusterdnspolicies",
            {"apiVersion": "dnsflow.io/v1", "kind": "ClusterDNSPolicy",
             "metadata": {"name": "guard"},
             "spec": {"rules": [{"id": "tor", "match": {"suffixes": ["onion"]},
                                 "action": "deny"}]}})
        await _until(lambda: store.record("_global") is not None)
        v = store.decide(ACME, "abc.onion", "A")
        assert (v.rule, v.policy_version) == ("cluster:guard#tor", 1)
        await asyncio.to_thread(custom.create_namespaced_custom_object, "dnsflow.io", "v1",
                                "shop", "dnspolicies", _policy(["ads.example.com"]))
        await _until(lambda: store.version("acme") == 1)
        assert service.status()["kubernetes"]["versions"] == {"_global": 1, "acme": 1}
    finally:
        await service.stop()
        await follower.stop()
