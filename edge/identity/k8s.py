"""Client identity from a Kubernetes watch of pods and namespaces (the ``kubernetes`` client).

pod IP -> (tenant, namespace, pod, service account, labels); a namespace's tenant is its
``dnsflow.io/tenant`` label, else the namespace name. The client is synchronous, so each
list+watch runs in a daemon thread and posts changes to the event loop, which rebuilds the
identity table (debounced) and swaps it in whole.

An edge serves the pods of its own node, so with a node name (``node_name``, else the
``NODE_NAME`` environment variable the DaemonSet sets from the downward API) it watches
only those pods (field selector ``spec.nodeName=<node>``): the API server sends each edge
its node's share instead of every pod of the cluster. PTR names of pods on other nodes are
then judged by the names in the upstream's answer (``hides``), not by this table.
"""

from __future__ import annotations

import asyncio
import logging
import os
from types import MappingProxyType
from typing import Any

from dnsflow.edge.identity.table import IdentityTable
from dnsflow.kube import TENANT_LABEL, ListWatch, absorb_namespaces, api_client
from dnsflow.policies.api import ClientInfo

log = logging.getLogger(__name__)

class KubernetesIdentity:
    def __init__(self, table: IdentityTable, *, kubeconfig: str | None = None,
                 host: str | None = None, api: Any = None, timeout: float = 30.0,
                 debounce: float = 0.05, node_name: str | None = None) -> None:
        self.table = table
        self.node_name = node_name if node_name is not None else (
            os.environ.get("NODE_NAME") or None)
        self.api = api if api is not None else api_client(kubeconfig, host)
        self.timeout = timeout
        self.debounce = debounce
        self.pods: dict[str, dict[str, Any]] = {}        # "ns/name" -> pod
        self.namespaces: dict[str, dict[str, str]] = {}  # name -> labels
        self.errors = 0
        self.last_error = ""
        self.synced: set[str] = set()
        self._threads: list[ListWatch] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        from kubernetes import client

        self._loop = asyncio.get_running_loop()
        core = client.CoreV1Api(self.api)
        self._threads = [
            ListWatch(self, "namespaces", core.list_namespace, timeout=self.timeout,
                      name="edge-k8s-namespaces"),
            ListWatch(self, "pods", core.list_pod_for_all_namespaces,
                      {"field_selector": f"spec.nodeName={self.node_name}"}
                      if self.node_name else None, timeout=self.timeout, name="edge-k8s-pods"),
        ]
        for t in self._threads:
            t.start()

    def post(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        """From a watch thread: apply on the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._apply, what, kind, objs)

    def _apply(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        if what == "namespaces":
            absorb_namespaces(self.namespaces, kind, objs)
        else:
            if kind == "RESET":
                self.pods = {}
            for o in objs:
                meta = o.get("metadata") or {}
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                phase = (o.get("status") or {}).get("phase")
                if kind == "DELETED" or phase in ("Succeeded", "Failed"):
                    self.pods.pop(key, None)
                else:
                    self.pods[key] = o
        if kind == "RESET":
            self.synced.add(what)
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(self.debounce, self._rebuild)

    def tenant_of(self, namespace: str) -> str:
        labels = self.namespaces.get(namespace) or {}
        return labels.get(TENANT_LABEL) or namespace

    def _rebuild(self) -> None:
        self._pending = None
        pods: dict[str, ClientInfo] = {}
        for pod in self.pods.values():
            meta = pod.get("metadata") or {}
            status = pod.get("status") or {}
            spec = pod.get("spec") or {}
            ns = meta.get("namespace") or ""
            ips = [p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")]
            if status.get("podIP") and status["podIP"] not in ips:
                ips.append(status["podIP"])
            if spec.get("hostNetwork"):
                continue  # node addresses are shared: not a pod identity
            labels = MappingProxyType({str(k): str(v)
                                       for k, v in (meta.get("labels") or {}).items()})
            for ip in ips:
                pods[ip] = ClientInfo(ip=ip, tenant=self.tenant_of(ns), namespace=ns,
                                      pod=meta.get("name") or "",
                                      service_account=spec.get("serviceAccountName") or "",
                                      labels=labels)
        ns_tenants = {ns: self.tenant_of(ns) for ns in self.namespaces}
        self.table.set_namespaces(ns_tenants)
        self.table.set_pods(pods)
        if {"namespaces", "pods"} <= self.synced:
            self.ready.set()

    async def stop(self) -> None:
        for t in self._threads:
            t.stop()
        for t in self._threads:
            await asyncio.to_thread(t.join, 2.0)
        if self._pending is not None:
            self._pending.cancel()

    def status(self) -> dict[str, Any]:
        return {"pods": len(self.pods), "namespaces": len(self.namespaces),
                "node": self.node_name or "", "synced": sorted(self.synced),
                "errors": self.errors, "last_error": self.last_error,
                "watches": {t.what: t.status() for t in self._threads}}
