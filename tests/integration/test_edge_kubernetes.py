"""Client identity from the Kubernetes watch, with the real `kubernetes` client against
kmock's API emulator: pods and namespaces created, relabelled and deleted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import kmock
import orjson
import pytest
from kmock._internal import parsing as _kmock_parsing
from kubernetes import client

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.service import build
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from harness.fake_upstream import FakeUpstream

_ORIGINAL_PARSE = _kmock_parsing.parse_path


def _parse_path(path: str):
    """kmock 0.8 reads ``/api/v1/namespaces[/NAME]`` as a namespace prefix without a
    resource; Namespace is itself a cluster-scoped resource."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"] and len(parts) in (3, 4) and parts[2] == "namespaces":
        return _kmock_parsing.ParsedPath("", "v1", "namespaces", None,
                                         parts[3] if len(parts) == 4 else None, None)
    return _ORIGINAL_PARSE(path)


@pytest.fixture
async def k8s(monkeypatch):
    monkeypatch.setattr(_kmock_parsing, "parse_path", _parse_path)
    async with kmock.KubernetesEmulator() as handler, kmock.Server(handler):
        handler.resources["v1/namespaces"] = {"kind": "Namespace", "namespaced": False}
        handler.resources["v1/pods"] = {"kind": "Pod", "namespaced": True}
        yield handler


async def until(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def pod(name: str, ns: str, ip: str, sa: str = "default", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


async def test_pod_and_namespace_watch_drives_identity(k8s, tmp_path: Path) -> None:
    host = str(k8s.url).rstrip("/")
    cfg = client.Configuration()
    cfg.host = host
    core = client.CoreV1Api(client.ApiClient(cfg))
    await asyncio.to_thread(core.create_namespace, {"metadata": {
        "name": "shop", "labels": {"dnsflow.io/tenant": "acme"}}})
    await asyncio.to_thread(core.create_namespace, {"metadata": {"name": "blog"}})
    await asyncio.to_thread(core.create_namespaced_pod, "shop",
                            pod("web-1", "shop", "127.0.5.10", sa="web", app="web"))
    await asyncio.to_thread(core.create_namespaced_pod, "blog",
                            pod("cms-0", "blog", "127.0.5.20"))

    up = FakeUpstream(["example.com. 60 IN A 192.0.2.1"])
    await up.start()
    bus = MemoryBus(Topics("t."))
    svc = build(Settings(home=tmp_path, topic_prefix="t."), bus, listen="127.0.0.1:0",
                upstreams=[up.address], kubernetes=True, kube_api=host,
                default_tenant="unknown", subscribe_policies=False)[0]
    await svc.start()
    port = svc.status()["udp_port"]

    async def who(source: str) -> dict:
        before = svc.publisher.published
        q = dns.message.make_query("example.com", "A")
        await dns.asyncquery.udp(q, "127.0.0.1", port=port, source=source, timeout=3)
        await until(lambda: svc.publisher.published > before)
        topic = bus.topic("t.events")
        return max((orjson.loads(m.value) for p in topic.partitions for m in p),
                   key=lambda e: e["ts"])

    try:
        ev = await who("127.0.5.10")
        assert (ev["tenant"], ev["namespace"], ev["pod"], ev["service_account"]) == \
            ("acme", "shop", "web-1", "web")
        ev = await who("127.0.5.20")
        assert (ev["tenant"], ev["namespace"], ev["pod"]) == ("blog", "blog", "cms-0")
        assert (await who("127.0.5.99"))["tenant"] == "unknown"
        assert svc.identity.tenant_of_namespace("shop") == "acme"

        # relabel a namespace: its pods change tenant
        await asyncio.to_thread(core.patch_namespace, "blog", {"metadata": {
            "labels": {"dnsflow.io/tenant": "acme"}}})
        await until(lambda: svc.identity.tenant_of_namespace("blog") == "acme")
        assert (await who("127.0.5.20"))["tenant"] == "acme"

        # a deleted pod's address is unknown again
        await asyncio.to_thread(core.delete_namespaced_pod, "web-1", "shop")
        await until(lambda: svc.identity.lookup("127.0.5.10").tenant == "unknown")
        assert (await who("127.0.5.10"))["tenant"] == "unknown"
        assert svc.status()["identity"]["kubernetes"]["errors"] == 0
    finally:
        await svc.stop()
        await up.stop()
