"""The explain form's answer: the policies package's own ``explain``, on the same inputs.

The verdict comes from ``PolicyStore.decide`` through ``dnsflow.policies.explain`` (what
``dnsflow policy explain`` prints with ``--json``), against one of two policy sources:

* the published ``policies`` topic, followed from its start (inside ``dnsflow up``/``demo``
  on the in-process bus, or with ``--kafka``): what the edges enforce, auto-denies included;
* YAML files (``--policies PATH``, or the policies directory the embedded runner reads):
  ``dnsflow policy explain PATH...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dnsflow.bus import Bus
from dnsflow.policies.api import (
    GLOBAL,
    ClientInfo,
    PolicyRecordError,
    PolicySetError,
    PolicyStore,
    TenantMapError,
    explain,
    load_tenant_map,
    policy_records,
)

log = logging.getLogger(__name__)


class ExplainError(ValueError):
    """The question cannot be answered as asked (bad input, no tenant map, bad policy)."""


class TopicPolicies:
    """The policies topic applied to a store, like an edge's follower (read-only: a bad
    record is logged and skipped; the edges already send it to the DLQ)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.store = PolicyStore()
        self.label = "the published policies topic"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = self.bus.consumer([self.bus.topics.policies], None, from_beginning=True)
        await consumer.start()
        self._task = asyncio.create_task(self._follow(consumer), name="console-policies")

    async def _follow(self, consumer: Any) -> None:
        try:
            while True:
                for m in await consumer.getmany(timeout_ms=500, max_records=1000):
                    try:
                        self.store.apply_record(m.key, m.value)
                    except PolicyRecordError as exc:
                        log.warning("console: policy record skipped: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def current(self) -> PolicyStore:
        return self.store


class FilePolicies:
    """YAML files read at every question (they are small; edits show at once)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in paths]
        self.label = (f"files {', '.join(self.paths)}" if self.paths else
                      "no policies (start the console with --policies PATH or --kafka)")

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def current(self) -> PolicyStore:
        if not self.paths:  # never a silent "default allow" for want of a source
            raise ExplainError("nothing to explain against: no policy files here; start the "
                               "console with --policies PATH, or --kafka for the published "
                               "policies")
        try:
            recs = policy_records(self.paths, version=0)
        except PolicySetError as exc:
            lines = [str(p) for p in getattr(exc, "problems", [])] or [str(exc)]
            raise ExplainError("the policy files are invalid: " + "; ".join(lines)) from None
        store = PolicyStore()
        for key, value in sorted(recs, key=lambda kv: (kv[0] != GLOBAL.encode(), kv[0])):
            store.apply_record(key, value)
        return store


class Explainer:
    def __init__(self, policies: TopicPolicies | FilePolicies,
                 tenant_map: str | Path | None = None) -> None:
        self.policies = policies
        self.tenant_map = str(tenant_map) if tenant_map else None

    def answer(self, form: dict[str, str], tenant_scope: str | None) -> dict[str, Any]:
        """``form``: client (IP) or tenant [+ namespace], name, type. The same JSON object
        ``dnsflow policy explain --json`` prints."""
        name = form.get("name", "").strip()
        if not name:
            raise ExplainError("name: give the query name")
        qtype = (form.get("type") or "A").strip().upper()
        tmap = None
        if self.tenant_map:
            try:
                tmap = load_tenant_map(self.tenant_map)
            except TenantMapError as exc:
                raise ExplainError(str(exc)) from None
        ip = form.get("client", "").strip()
        if ip:
            if tmap is None:
                raise ExplainError("client: an address needs the edge's tenant map (start the "
                                   "console with --tenant-map FILE), or give a tenant instead")
            try:
                client = tmap.client(ip)
            except (TenantMapError, ValueError) as exc:
                raise ExplainError(f"client: {exc}") from None
        else:
            tenant = form.get("tenant", "").strip() or (tenant_scope or "")
            if not tenant:
                raise ExplainError("client: give a client address or a tenant")
            client = ClientInfo("", tenant, form.get("namespace", "").strip() or tenant, "",
                                "", MappingProxyType({}))
        if tenant_scope is not None and client.tenant != tenant_scope:
            raise PermissionError("that client is not in the tenant this token may see")
        store = self.policies.current()
        if tmap is not None:
            ns = tmap.namespace_tenants()
            if ns:
                store.set_namespace_tenants(ns)
        result = explain(store, client, name, qtype)
        return {"policy": self.policies.label, **result.as_dict()}
