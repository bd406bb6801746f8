"""The edge's Kubernetes identity and the shared list+watch against a real kube-apiserver
(scripts/kube-local): namespaces with and without the tenant label, pods created through the
API (no kubelet runs: ``status.podIP`` is set through the pods/status subresource and
``spec.nodeName`` in the spec), relabelled and deleted; each edge sees only its node's pods;
a watch the server ends resumes without missing changes; an expired resourceVersion (410)
lists again."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes import client, config

from dnsflow.edge.identity.k8s import KubernetesIdentity
from dnsflow.edge.identity.table import IdentityTable
from dnsflow.kube import TENANT_LABEL, ListWatch


@pytest.fixture
def api(kube):
    return config.new_client_from_config(config_file=str(kube.kubeconfig))


def _uid() -> str:
    return uuid.uuid4().hex[:8]


async def until(pred, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


def _pod(name: str, node: str, sa: str = "default", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "registry.invalid/x"}]}}


def _run_pod(core: client.CoreV1Api, ns: str, name: str, node: str, ip: str,
             **kw: Any) -> None:
    """Create a pod bound to ``node`` and play the kubelet: Running with ``ip``."""
    core.create_namespaced_pod(ns, _pod(name, node, **kw))
    core.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})


def _namespace(core: client.CoreV1Api, name: str, tenant: str | None) -> None:
    labels = {TENANT_LABEL: tenant} if tenant else {}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    for sa in ("default", "web"):  # no controller manager runs to make them
        core.create_namespaced_service_account(name, {"metadata": {"name": sa}})


async def test_identity_follows_pods_and_namespaces_of_its_node_only(api) -> None:
    core = client.CoreV1Api(api)
    uid = _uid()
    shop, blog = f"shop-{uid}", f"blog-{uid}"
    node, other = f"node-a-{uid}", f"node-b-{uid}"
    tenant = f"acme-{uid}"
    net = f"10.{random.randint(1, 250)}.{random.randint(1, 250)}"
    ip_web, ip_cms, ip_far = f"{net}.10", f"{net}.20", f"{net}.30"

    await asyncio.to_thread(_namespace, core, shop, tenant)
    await asyncio.to_thread(_namespace, core, blog, None)
    await asyncio.to_thread(_run_pod, core, shop, "web-1", node, ip_web, sa="web", app="web")
    await asyncio.to_thread(_run_pod, core, blog, "cms-0", node, ip_cms)
    await asyncio.to_thread(_run_pod, core, shop, "far-0", other, ip_far)  # another node

    table = IdentityTable(default_tenant="unknown")
    ident = KubernetesIdentity(table, api=api, timeout=10, node_name=node)
    await ident.start()
    try:
        await asyncio.wait_for(ident.ready.wait(), 20)
        web = table.lookup(ip_web)
        assert (web.tenant, web.namespace, web.pod, web.service_account) == \
            (tenant, shop, "web-1", "web")
        assert dict(web.labels) == {"app": "web"}
        cms = table.lookup(ip_cms)
        assert (cms.tenant, cms.namespace, cms.pod) == (blog, blog, "cms-0")  # no label
        assert table.tenant_of_namespace(shop) == tenant
        # the pod on the other node never reaches this edge
        assert table.lookup(ip_far).tenant == "unknown"
        assert all(p["spec"]["nodeName"] == node for p in ident.pods.values())
        assert sorted(ident.pods) == [f"{blog}/cms-0", f"{shop}/web-1"]

        # a pod started later on this node is seen; one on the other node is not
        await asyncio.to_thread(_run_pod, core, shop, "web-2", node, f"{net}.11")
        await asyncio.to_thread(_run_pod, core, shop, "far-1", other, f"{net}.31")
        await until(lambda: table.lookup(f"{net}.11").pod == "web-2", what="web-2")
        await asyncio.sleep(0.3)
        assert table.lookup(f"{net}.31").tenant == "unknown"
        assert not any(p["spec"]["nodeName"] == other for p in ident.pods.values())

        # relabel a namespace: its pods change tenant
        await asyncio.to_thread(core.patch_namespace, blog,
                                {"metadata": {"labels": {TENANT_LABEL: tenant}}})
        await until(lambda: table.lookup(ip_cms).tenant == tenant, what="relabel")
        assert table.tenant_of_namespace(blog) == tenant

        # delete a pod (no kubelet: grace period 0 removes it at once): its address is unknown
        await asyncio.to_thread(core.delete_namespaced_pod, "web-1", shop,
                                grace_period_seconds=0)
        await until(lambda: table.lookup(ip_web).tenant == "unknown", what="delete")
        st = ident.status()
        assert st["node"] == node and st["errors"] == 0, st
        assert st["watches"]["pods"]["expired"] == 0
    finally:
        await ident.stop()
        for ns in (shop, blog):
            await asyncio.to_thread(core.delete_namespace, ns)


async def test_node_name_comes_from_the_downward_api_env(api, monkeypatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-from-env")
    assert KubernetesIdentity(IdentityTable(), api=api).node_name == "node-from-env"
    assert KubernetesIdentity(IdentityTable(), api=api, node_name="n2").node_name == "n2"
    monkeypatch.delenv("NODE_NAME")
    assert KubernetesIdentity(IdentityTable(), api=api).node_name is None


class _Owner:
    """What a ListWatch reports to, recording every post."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.errors = 0
        self.last_error = ""
        self.posts: list[tuple[str, list[dict]]] = []
        self.lock = threading.Lock()

    def post(self, what: str, kind: str, objs: list[dict]) -> None:
        with self.lock:
            self.posts.append((kind, objs))

    def names(self, kind: str) -> set[str]:
        with self.lock:
            return {o["metadata"]["name"] for k, objs in self.posts if k == kind for o in objs}


async def test_watch_resumes_after_the_server_ends_it_without_missing_changes(api) -> None:
    """The server ends each watch after timeout_seconds; a namespace created between the end
    of one watch and the start of the next arrives as an event of the next, from the last
    resourceVersion seen, without listing again."""
    core = client.CoreV1Api(api)
    uid = _uid()
    owner = _Owner(api)
    made: list[str] = []

    def list_namespaces(**kw: Any) -> Any:
        if kw.get("watch") and lw.watches >= 2 and len(made) < 2:
            # a restarted watch: change things before it reaches the server
            name = f"meanwhile-{uid}-{len(made)}"
            core.create_namespace({"metadata": {"name": name}})
            made.append(name)
        return core.list_namespace(**kw)

    lw = ListWatch(owner, "namespaces", list_namespaces, timeout=2, name="t-resume")
    lw.start()
    try:
        await until(lambda: len(made) == 2 and set(made) <= owner.names("ADDED"), 30,
                    "changes made between two watches")
        assert lw.lists == 1 and lw.watches >= 3 and owner.errors == 0, lw.status()
        assert not set(made) & owner.names("RESET")
    finally:
        lw.stop()
        await asyncio.to_thread(lw.join, 5)
        for name in made:
            await asyncio.to_thread(core.delete_namespace, name)


async def test_expired_resource_version_lists_again(api, kube) -> None:
    """A watch from a resourceVersion the API server no longer has (here: one older than its
    watch cache, as after an etcd compaction) ends with 410 Gone / Expired; the ListWatch
    lists again (RESET) and carries on watching from the new listing."""
    await asyncio.to_thread(kube.apply_crds)
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    ns = f"gone-{_uid()}"
    await asyncio.to_thread(core.create_namespace, {"metadata": {"name": ns}})
    owner = _Owner(api)
    args = {"group": "dnsflow.io", "version": "v1", "plural": "dnspolicies"}

    def list_policies(**kw: Any) -> Any:
        got = custom.list_cluster_custom_object(**kw)
        if not kw.get("watch") and lw.lists == 0:
            got["metadata"]["resourceVersion"] = "1"  # long gone
        return got

    lw = ListWatch(owner, "DNSPolicy", list_policies, args, timeout=10, name="t-gone")
    lw.start()
    try:
        await until(lambda: lw.expired >= 1 and lw.lists >= 2, 20, "relist after 410")
        body = {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
                "metadata": {"name": "after", "namespace": ns},
                "spec": {"rules": [{"action": "deny"}]}}
        await asyncio.to_thread(custom.create_namespaced_custom_object, "dnsflow.io", "v1", ns,
                                "dnspolicies", body)
        await until(lambda: "after" in owner.names("ADDED"), 20, "event after the relist")
        assert owner.errors == 0, owner.last_error
    finally:
        lw.stop()
        await asyncio.to_thread(lw.join, 5)
        await asyncio.to_thread(core.delete_namespace, ns)
