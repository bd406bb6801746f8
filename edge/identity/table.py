"""The lookup the hot path does: exact pod IPs first, then CIDRs (longest prefix), then default.

Sources (the Kubernetes watch, the static map file) replace whole tables atomically; lookups
are memoised per source IP so a query costs one dict hit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from dnsflow.policies.api import ClientInfo

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MEMO_MAX = 65_536


class IdentityTable:
    def __init__(self, default_tenant: str = "default", default_namespace: str = "") -> None:
        self.default_tenant = default_tenant
        self.default_namespace = default_namespace or default_tenant
        self._pods: dict[str, ClientInfo] = {}
        self._cidrs: list[tuple[Network, ClientInfo]] = []
        self._ns_tenant: dict[str, str] = {}
        self._memo: dict[str, ClientInfo] = {}
        self.generation = 0
        self.listeners: list[Callable[[Mapping[str, str]], None]] = []

    def lookup(self, ip: str) -> ClientInfo:
        info = self._memo.get(ip)
        if info is not None:
            return info
        info = self._pods.get(ip)
        if info is None:
            info = self._match_cidr(ip)
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[ip] = info
        return info

    def _match_cidr(self, ip: str) -> ClientInfo:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            addr = None
        if addr is not None:
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            for net, template in self._cidrs:
                if addr.version == net.version and addr in net:
                    return _with_ip(template, ip)
        return ClientInfo(ip=ip, tenant=self.default_tenant, namespace=self.default_namespace)

    def namespace_of_ip(self, ip: str) -> str | None:
        """Namespace of a known pod or CIDR address (PTR isolation); None if unknown."""
        info = self._pods.get(ip)
        if info is not None:
            return info.namespace
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for net, template in self._cidrs:
            if addr.version == net.version and addr in net:
                return template.namespace
        return None

    def tenant_of_namespace(self, namespace: str) -> str | None:
        return self._ns_tenant.get(namespace)

    @property
    def namespace_tenants(self) -> Mapping[str, str]:
        return MappingProxyType(self._ns_tenant)

    def set_cidrs(self, entries: Iterable[tuple[Network, ClientInfo]]) -> None:
        self._cidrs = sorted(entries, key=lambda e: e[0].prefixlen, reverse=True)
        self._rebuild_ns()

    def set_static(self, static: Any) -> None:
        """Apply a :class:`~edge.identity.static.StaticMap` (entries, default, namespaces)."""
        if static.default is not None:
            self.default_tenant, self.default_namespace = static.default
        self._static_ns = dict(static.namespaces)
        self.set_cidrs(static.entries)

    def set_pods(self, pods: Mapping[str, ClientInfo]) -> None:
        self._pods = dict(pods)
        self._rebuild_ns()

    def set_namespaces(self, ns_tenant: Mapping[str, str]) -> None:
        """Namespace -> tenant from the Kubernetes watch (overrides what the maps imply)."""
        self._extra_ns = dict(ns_tenant)
        self._rebuild_ns()

    def _rebuild_ns(self) -> None:
        ns: dict[str, str] = {}
        for _, t in self._cidrs:
            ns.setdefault(t.namespace, t.tenant)
        ns.update(getattr(self, "_static_ns", {}))
        for info in self._pods.values():
            ns[info.namespace] = info.tenant
        ns.update(getattr(self, "_extra_ns", {}))
        self._ns_tenant = ns
        self._memo = {}
        self.generation += 1
        frozen = MappingProxyType(dict(ns))
        for cb in self.listeners:
            cb(frozen)

    def size(self) -> dict[str, int]:
        return {"pods": len(self._pods), "cidrs": len(self._cidrs),
                "namespaces": len(self._ns_tenant)}


def _with_ip(t: ClientInfo, ip: str) -> ClientInfo:
    return ClientInfo(ip=ip, tenant=t.tenant, namespace=t.namespace, pod=t.pod,
                      service_account=t.service_account, labels=t.labels)
