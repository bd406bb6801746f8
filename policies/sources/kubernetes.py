"""DNSPolicy / ClusterDNSPolicy custom resources and namespace tenant labels, via the
``kubernetes`` client (list, then watch; re-list after every disconnect).

Safety rules specific to Kubernetes:
- a DNSPolicy's tenant is its namespace's ``dnsflow.io/tenant`` label; a namespace without
  the label cannot carry DNSPolicies (otherwise whoever creates a namespace named like a
  tenant could write that tenant's policy), and a ``spec.tenant`` that differs is rejected;
- problems freeze only the tenant (or ``_global``) they belong to: that key keeps its last
  good version while the others keep following the cluster.

After each sync every resource gets its verdict in its ``status`` subresource (what CEL in
the CRD cannot judge -- RE2 regexes, record data, conflicts across resources, tenancy):
condition ``Accepted`` True (reason ``Published``) or False (``Invalid``: its own problem;
``Conflict``: it clashes with another resource; ``Blocked``: another resource of the same
tenant is invalid, so the tenant keeps its last good version; ``NoTenant``: its namespace
has no tenant label), the message being the line ``dnsflow policy validate`` prints;
``observedGeneration``, and the ``publishedVersion`` / ``contentHash`` of the tenant's
policy in force. A status is written only when it differs from what the resource carries
(the write itself comes back as a watch event), so the source never loops on its own writes.

The client is synchronous, so each watch runs in a daemon thread and hands events to the
event loop; ``stop()`` closes the streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dnsflow.bus import Bus
from dnsflow.kube import ListWatch, absorb_namespaces, api_client
from dnsflow.policies import policyset
from dnsflow.policies.loader import Located, PolicySetError, Problem, parse_document
from dnsflow.policies.model import TENANT_LABEL, DNSPolicy
from dnsflow.policies.publisher import Publisher
from dnsflow.policies.records import GLOBAL
from dnsflow.tasks import cancel_and_wait

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
        self._custom: Any = None  # CustomObjectsApi once started: status writes
        self._parse_problems: set[Problem] = set()
        self.statuses: dict[tuple[str, str, str], dict[str, Any]] = {}  # what we last wrote
        self.status_writes = 0
        self.status_errors = 0
        self._warned: set[tuple[str, str, str]] = set()

    # ---------------------------------------------------------------- threads -> loop
    def post(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (what, kind, objs))

    async def start(self) -> None:
        from kubernetes import client

        self._loop = asyncio.get_running_loop()
        await self.publisher.load()
        custom = client.CustomObjectsApi(self.api)
        self._custom = custom
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
        await cancel_and_wait(self._task)
        for t in self._threads:
            await asyncio.to_thread(t.join, 2.0)
        await self.publisher.close()

    def status(self) -> dict[str, Any]:
        return {"syncs": self.syncs, "errors": self.errors, "last_error": self.last_error,
                "objects": sum(len(v) for v in self.objects.values()),
                "namespaces": len(self.namespaces),
                "status_writes": self.status_writes, "status_errors": self.status_errors,
                "watches": {t.what: t.status() for t in self._threads},
                "problems": {k: [str(p) for p in v] for k, v in self.problems.items()},
                "versions": {k: v.get("version") for k, v in self.publisher.current.items()}}

    # ---------------------------------------------------------------- state
    def _absorb(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        if what == "namespaces":
            absorb_namespaces(self.namespaces, kind, objs)
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
        self._parse_problems = set()
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
                        wrong = Problem(where, 1, "spec.tenant", f"{given!r} differs from "
                                        f"namespace {ns!r}'s tenant {tenant!r}")
                        problems.setdefault(tenant, []).append(wrong)
                        self._parse_problems.add(wrong)
                        continue
                    doc["spec"]["tenant"] = tenant
                    key = tenant
                policy, errs = parse_document(doc, where, 1)
                if errs:
                    problems.setdefault(key, []).extend(errs)
                    self._parse_problems.update(errs)
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
        before = {(k, p) for k, errs in self.problems.items() for p in errs}
        self.problems = problems
        frozen = {k for k in problems if not k.startswith("namespace:")}
        for key, errs in problems.items():
            for p in errs:  # each once, not again on every later event
                if (key, p) not in before:
                    log.error("kubernetes policy rejected (%s keeps its last good version): "
                              "%s", key, p)
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
        await self.write_statuses()

    # ---------------------------------------------------------------- status subresource
    def verdict(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        """The ``status`` this resource should carry after the last :meth:`sync` (without
        ``lastTransitionTime``)."""
        obj = self.objects[kind][(ns, name)]
        where = f"{PLURALS[kind]}/{ns + '/' if ns else ''}{name}"
        key = GLOBAL if kind == "ClusterDNSPolicy" else self.namespace_tenants().get(ns)
        gen = (obj.get("metadata") or {}).get("generation")
        if key is None:
            state, reason = "False", "NoTenant"
            message = next((str(p) for p in self.problems.get(f"namespace:{ns}", [])
                            if p.file == where), f"namespace {ns!r} has no tenant label")
        else:
            mine = [p for p in self.problems.get(key, []) if p.file == where]
            others = [p for p in self.problems.get(key, []) if p.file != where]
            current = self.publisher.current.get(key)
            if mine:
                state = "False"
                reason = "Invalid" if any(p in self._parse_problems for p in mine) \
                    else "Conflict"
                message = str(mine[0]) + (f" (and {len(mine) - 1} more)" if len(mine) > 1
                                          else "")
            elif others:
                state, reason = "False", "Blocked"
                kept = f"version {current['version']}" if current else "nothing"
                message = (f"not in force: {key} keeps {kept} while another resource is "
                           f"rejected: {others[0]}")
            else:
                state, reason = "True", "Published"
                message = (f"in force: {key} version {current['version']}" if current
                           else f"in force: {key}")
        current = self.publisher.current.get(key) if key is not None else None
        cond = {"type": "Accepted", "status": state, "reason": reason, "message": message}
        if gen is not None:
            cond["observedGeneration"] = gen
        status: dict[str, Any] = {"conditions": [cond], "observedGeneration": gen,
                                  "tenant": key,
                                  "publishedVersion": current.get("version") if current else None,
                                  "contentHash": current.get("hash") if current else None}
        return status

    @staticmethod
    def _comparable(status: dict[str, Any] | None) -> dict[str, Any]:
        status = dict(status or {})
        status["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                for c in status.get("conditions") or []]
        return {k: v for k, v in status.items() if v is not None}

    async def write_statuses(self) -> None:
        """Patch the status of every resource whose verdict changed (after a sync)."""
        if self._custom is None:
            return
        for kind in ("ClusterDNSPolicy", "DNSPolicy"):
            for (ns, name), obj in list(self.objects[kind].items()):
                ref = (kind, ns, name)
                want = self.verdict(kind, ns, name)
                have = obj.get("status")
                if self._comparable(want) in (self._comparable(have),
                                              self._comparable(self.statuses.get(ref))):
                    continue
                old = {c.get("type"): c for c in (have or {}).get("conditions") or []}
                for cond in want["conditions"]:
                    prev = old.get(cond["type"])
                    cond["lastTransitionTime"] = (
                        prev["lastTransitionTime"] if prev and prev.get("status") ==
                        cond["status"] and prev.get("lastTransitionTime") else
                        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                try:
                    await asyncio.to_thread(self._patch_status, kind, ns, name, want)
                except Exception as exc:
                    if getattr(exc, "status", None) == 404:
                        continue  # deleted meanwhile: its DELETED event is on its way
                    self.status_errors += 1
                    self.last_error = f"status {ref}: {type(exc).__name__}: {exc}"
                    (log.debug if ref in self._warned else log.warning)(
                        "cannot write the status of %s %s/%s: %s", kind, ns, name,
                        getattr(exc, "reason", None) or exc)
                    self._warned.add(ref)
                    continue
                self.statuses[ref] = want
                self.status_writes += 1
        live = {(k, ns, n) for k, table in self.objects.items() for (ns, n) in table}
        for ref in set(self.statuses) - live:
            del self.statuses[ref]

    def _patch_status(self, kind: str, ns: str, name: str, status: dict[str, Any]) -> None:
        body = {"status": status}
        kw = {"_content_type": "application/merge-patch+json",
              "_request_timeout": self.timeout_s}
        if kind == "DNSPolicy":
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURALS[kind], name, body, **kw)
        else:
            self._custom.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURALS[kind], name, body, **kw)

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
