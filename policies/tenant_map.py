"""Read the edge's static tenant map (same YAML shapes) for ``dnsflow policy explain --client``.

policies/ may not import edge/, so this is a small reader of the documented format::

    clients: [{cidr: 10.1.0.0/16, tenant: acme, namespace: shop, service_account: .., labels: ..}]
    default: {tenant: unknown, namespace: unknown}
    namespaces: {shop: acme}
    10.2.0.0/16: {tenant: globex, namespace: bank}     # mapping form
    10.3.0.0/16: initech/lab                            # "tenant/namespace" shorthand
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from policies.types import ClientInfo

_RESERVED = ("clients", "default", "namespaces")


class TenantMapError(ValueError):
    pass


@dataclass
class TenantMap:
    entries: list[tuple[Any, ClientInfo]] = field(default_factory=list)
    default: ClientInfo | None = None
    namespaces: dict[str, str] = field(default_factory=dict)

    def client(self, ip: str) -> ClientInfo:
        """The most specific entry containing ``ip`` (or the default)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise TenantMapError(f"--client {ip!r} is not an IP address") from None
        best: tuple[int, ClientInfo] | None = None
        for net, info in self.entries:
            if addr.version == net.version and addr in net and (
                    best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, info)
        if best is not None:
            return ClientInfo(ip, best[1].tenant, best[1].namespace, best[1].pod,
                              best[1].service_account, best[1].labels)
        if self.default is not None:
            return ClientInfo(ip, self.default.tenant, self.default.namespace)
        raise TenantMapError(f"client {ip} is in no tenant map entry and there is no default")

    def namespace_tenants(self) -> dict[str, str]:
        out = {info.namespace: info.tenant for _, info in self.entries}
        out.update(self.namespaces)
        return out


def _info(where: str, spec: Any) -> ClientInfo:
    if isinstance(spec, str):
        tenant, _, ns = spec.partition("/")
        spec = {"tenant": tenant, "namespace": ns or tenant}
    if not isinstance(spec, dict) or not spec.get("tenant"):
        raise TenantMapError(f"{where}: expected a mapping with 'tenant' (and 'namespace')")
    labels = spec.get("labels") or {}
    if not isinstance(labels, dict):
        raise TenantMapError(f"{where}: 'labels' must be a mapping")
    tenant = str(spec["tenant"])
    return ClientInfo("", tenant, str(spec.get("namespace") or tenant), str(spec.get("pod") or ""),
                      str(spec.get("service_account") or ""),
                      MappingProxyType({str(k): str(v) for k, v in labels.items()}))


def _net(where: str, cidr: Any) -> Any:
    try:
        return ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        raise TenantMapError(f"{where}: {cidr!r} is not a CIDR or IP address") from None


def load_tenant_map(path: str | Path) -> TenantMap:
    p = Path(path)
    src = f"tenant map {p}"
    try:
        raw = p.read_bytes()
        data = yaml.safe_load(raw.decode("utf-8"))
    except OSError as exc:
        raise TenantMapError(f"{src}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise TenantMapError(f"{src}: not UTF-8 (byte {exc.start})") from None
    except yaml.YAMLError:
        raise TenantMapError(f"{src}: invalid YAML") from None
    if data is None:
        raise TenantMapError(f"{src}: empty (no clients, default or namespaces)")
    if not isinstance(data, dict):
        raise TenantMapError(f"{src}: expected a mapping at the top level")
    out = TenantMap()
    if data.get("default") is not None:
        out.default = _info(f"{src}: default", data["default"])
    ns = data.get("namespaces") or {}
    if not isinstance(ns, dict):
        raise TenantMapError(f"{src}: namespaces: expected a mapping namespace -> tenant")
    out.namespaces = {str(k): str(v) for k, v in ns.items()}
    items = data.get("clients") or []
    if not isinstance(items, list):
        raise TenantMapError(f"{src}: 'clients' must be a list")
    for i, item in enumerate(items):
        where = f"{src}: clients[{i}]"
        if not isinstance(item, dict) or "cidr" not in item:
            raise TenantMapError(f"{where}: expected a mapping with 'cidr'")
        out.entries.append((_net(where, item["cidr"]), _info(where, item)))
    for cidr, spec in data.items():
        if cidr not in _RESERVED:
            out.entries.append((_net(f"{src}: {cidr}", cidr), _info(f"{src}: {cidr}", spec)))
    if not out.entries and out.default is None and not out.namespaces:
        raise TenantMapError(f"{src}: empty (no clients, default or namespaces)")
    return out
