"""The edge's static tenant map as ``dnsflow policy explain --client`` reads it.

The format and its validation are the core's (:mod:`dnsflow.tenant_map`); this module turns
the entry a client falls in into :class:`ClientInfo` (with the client's own address).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnsflow.policies.types import ClientInfo
from dnsflow.tenant_map import TenantMap as CoreTenantMap
from dnsflow.tenant_map import TenantMapError
from dnsflow.tenant_map import load_tenant_map as load_core

__all__ = ["TenantMap", "TenantMapError", "load_tenant_map"]


@dataclass
class TenantMap:
    core: CoreTenantMap

    def client(self, ip: str) -> ClientInfo:
        """The most specific entry containing ``ip`` (or the default)."""
        e = self.core.lookup(ip)
        return ClientInfo(ip, e.tenant, e.namespace, e.pod, e.service_account, e.labels)

    def namespace_tenants(self) -> dict[str, str]:
        return self.core.namespace_tenants()


def load_tenant_map(path: str | Path) -> TenantMap:
    return TenantMap(load_core(path))
