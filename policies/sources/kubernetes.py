"""DNSPolicy / ClusterDNSPolicy custom resources and namespace tenant labels, via the
``kubernetes`` client (list, then watch; re-list after every disconnect).

Safety rules specific to Kubernetes:
- a DNSPolicy's tenant is its namespace's ``dnsflow.io/tenant`` label; a namespace without
  the label cannot carry DNSPolicies (otherwise whoever creates a namespace named like a
  tenant could write that tenant's policy), and a ``spec.tenant`` that differs is rejected;
- problems freeze only the tenant (or ``_global``) they belong to: that key keeps its last
  good version while the others keep following the cluster.

The client is synchronous, so each watch runs in a daemon thread and hands events to the
event loop; ``stop()`` closes the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dnsflow.bus import Bus
from dnsflow.kube import ListWatch, api_client
from policies import policyset
from policies.loader import Located, PolicySetError, Problem, parse_document
from policies.model import TENANT_LABEL, DNSPolicy
from policies.publisher import Publisher
from policies.records import GLOBAL

log = logging.getLogger(__name__)

GROUP, VERSION = "dnsflow.io", "v1"
PLURALS = {"DNSPolicy": "dnspolicies", "ClusterDNSPolicy": "clusterdnspolicies"}
SOURCE = "kubernetes"
make_api_client = api_client  # the name this module has exported so far


def _sanitize(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """Keep what the model knows: server-managed metadata is not policy."""
    meta = obj.get("metadata") or {}
    clean_meta = {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)}
    return {"apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": obj.get("kind") or kind, "metadata": clean_meta,
            "spec": obj.get("spec") or {}}


class KubernetesSource:
    """Publishes the cluster's policy resources on every real change (debounced)."""

    def __init__(self, bus: Bus, *, kubeconfig: str | None = None, api_client: Any = None,
                 debounce_s: float = 0.05, timeout_s: float = 30.0,
                 on_namespaces: Callable[[dict[str, str]], None] | None = None) -> None:
        self.bus = bus
        self.api = api_client if api_client is not None else make_api_client(kubeconfig)
        self.publisher = Publisher(bus, source=SOURCE, actor="kubernetes")
        self.debounce_s = debounce_s
        self.timeout_s = timeout_s
        self.on_namespaces = on_namespaces
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "DNSPolicy": {}, "ClusterDNSPolicy": {}}
        self.namespaces: dict[str, dict[str, str]] = {}  # name -> labels
        self.problems: dict[str, list[Problem]] = {}
        self.errors = 0
        self.last_error = ""
        self.syncs = 0
        self._queue: asyncio.Queue[tuple[str, str, list[dict[str, Any]]]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[ListWatch] = []
        self._task: asyncio.Task[None] | None = None
        self._synced: set[str] = set()

    # ---------------------------------------------------------------- threads -> loop
    def post(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (what, kind, objs))

    async def start(self) -> None:
        from kubernetes import client

        self._loop = asyncio.get_running_loop()
        await self.publisher.load()
        custom = client.CustomObjectsApi(self.api)
        core = client.CoreV1Api(self.api)
        t = self.timeout_s
        self._threads = [
            ListWatch(self, "namespaces", core.list_namespace, timeout=t),
            ListWatch(self, "DNSPolicy", custom.list_cluster_custom_object,
                      {"group": GROUP, "version": VERSION, "plural": PLURALS["DNSPolicy"]},
                      timeout=t),
            ListWatch(self, "ClusterDNSPolicy", custom.list_cluster_custom_object,
                      {"group": GROUP, "version": VERSION,
                       "plural": PLURALS["ClusterDNSPolicy"]}, timeout=t),
        ]
        for t in self._threads:
            t.start()
        self._task = asyncio.create_task(self._run(), name="k8s-policy-source")

    async def stop(self) -> None:
        for t in self._threads:
            t.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in self._threads:
            await asyncio.to_thread(t.join, 2.0)
        await self.publisher.close()

    def status(self) -> dict[str, Any]:
        return {"syncs": self.syncs, "errors": self.errors, "last_error": self.last_error,
                "objects": sum(len(v) for v in self.objects.values()),
                "namespaces": len(self.namespaces),
                "problems": {k: [str(p) for p in v] for k, v in self.problems.items()},
                "versions": {k: v.get("version") for k, v in self.publisher.current.items()}}

    # ---------------------------------------------------------------- state
    def _absorb(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        if what == "namespaces":
            if kind == "RESET":
                self.namespaces = {}
            for o in objs:
                meta = o.get("metadata") or {}
                if kind == "DELETED":
                    self.namespaces.pop(meta.get("name", ""), None)
                else:
                    self.namespaces[meta.get("name", "")] = dict(meta.get("labels") or {})
            if kind == "RESET":
                self._synced.add(what)
            return
        table = self.objects[what]
        if kind == "RESET":
            table.clear()
        for o in objs:
            meta = o.get("metadata") or {}
            key = (meta.get("namespace") or "", meta.get("name") or "")
            if kind == "DELETED":
                table.pop(key, None)
            elif kind in ("RESET", "ADDED", "MODIFIED"):
                table[key] = o
        if kind == "RESET":
            self._synced.add(what)

    def namespace_tenants(self) -> dict[str, str]:
        return {ns: labels[TENANT_LABEL] for ns, labels in self.namespaces.items()
                if labels.get(TENANT_LABEL)}

    def build(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[Problem]]]:
        """Documents per key from the current objects, and the problems of frozen keys."""
        tenants = self.namespace_tenants()
        per_key: dict[str, list[Located]] = {}
        problems: dict[str, list[Problem]] = {}
        for kind in ("ClusterDNSPolicy", "DNSPolicy"):
            for (ns, name), obj in sorted(self.objects[kind].items()):
                where = f"{PLURALS[kind]}/{ns + '/' if ns else ''}{name}"
                doc = _sanitize(obj, kind)
                key = GLOBAL
                if kind == "DNSPolicy":
                    tenant = tenants.get(ns)
                    if tenant is None:
                        problems.setdefault(f"namespace:{ns}", []).append(Problem(
                            where, 1, "metadata.namespace",
                            f"namespace {ns!r} has no {TENANT_LABEL} label: its DNSPolicies "
                            "are ignored"))
                        continue
                    given = doc["spec"].get("tenant")
                    if given is not None and given != tenant:
                        problems.setdefault(tenant, []).append(Problem(
                            where, 1, "spec.tenant",
                            f"{given!r} differs from namespace {ns!r}'s tenant {tenant!r}"))
                        continue
                    doc["spec"]["tenant"] = tenant
                    key = tenant
                policy, errs = parse_document(doc, where, 1)
                if errs:
                    problems.setdefault(key, []).extend(errs)
                elif policy is not None:
                    if isinstance(policy, DNSPolicy):
                        key = policy.tenant
                    per_key.setdefault(key, []).append(Located(policy, where, 1))
        docs: dict[str, dict[str, Any]] = {}
        for key in sorted(set(per_key) | set(problems)):
            if key.startswith("namespace:"):
                continue
            try:
                built = policyset.build(per_key.get(key, []), problems.get(key, []))
            except PolicySetError as exc:
                problems[key] = exc.problems
                continue
            docs.update(built)
        return docs, problems

    async def sync(self) -> None:
        docs, problems = self.build()
        self.problems = problems
        frozen = {k for k in problems if not k.startswith("namespace:")}
        for key, errs in problems.items():
            for p in errs:
                log.error("kubernetes policy rejected (%s keeps its last good version): %s",
                          key, p)
        # keys with problems keep what is published: neither changed nor pruned
        keep = {k: v for k, v in self.publisher.current.items() if k in frozen}
        targets = {**docs}
        for k, cur in keep.items():
            targets.pop(k, None)
            targets[k] = {"kind": cur["kind"], "tenant": cur["tenant"],
                          "policies": cur["policies"]}
        changes = await self.publisher.publish(targets, prune=True)
        for c in changes:
            log.info("published %s", c)
        if self.on_namespaces is not None:
            self.on_namespaces(self.namespace_tenants())
        self.syncs += 1

    async def _run(self) -> None:
        while True:
            what, kind, objs = await self._queue.get()
            self._absorb(what, kind, objs)
            # debounce: take everything that arrives in the next few ms in one go
            await asyncio.sleep(self.debounce_s)
            while not self._queue.empty():
                self._absorb(*self._queue.get_nowait())
            if len(self._synced) < 3:
                continue  # publish only once every resource has been listed
            try:
                await self.sync()
            except Exception as exc:
                self.errors += 1
                self.last_error = f"publish: {type(exc).__name__}: {exc}"
                log.exception("kubernetes policy publish")
