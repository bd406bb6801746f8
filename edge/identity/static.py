"""The static tenant map (YAML) used outside Kubernetes: CIDR -> tenant/namespace.

Accepted shapes (errors name the file and the entry)::

    clients:                          # list form
      - cidr: 10.1.0.0/16
        tenant: acme
        namespace: acme-web           # default: the tenant
        pod: web-1                    # optional, also service_account, labels
    default: {tenant: unknown, namespace: unknown}   # unknown clients (optional)
    namespaces: {acme-web: acme, acme-db: acme}      # namespace -> tenant (optional)
    # or a mapping form
    10.2.0.0/16: {tenant: globex, namespace: globex-api}
    10.3.0.0/16: initech/initech-db   # "tenant/namespace" shorthand
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from edge.identity.table import Network
from policies.api import ClientInfo


class StaticMapError(ValueError):
    pass


RESERVED = ("clients", "default", "namespaces")


@dataclass
class StaticMap:
    entries: list[tuple[Network, ClientInfo]] = field(default_factory=list)
    default: tuple[str, str] | None = None          # (tenant, namespace) of unknown clients
    namespaces: dict[str, str] = field(default_factory=dict)


def _entry(where: str, cidr: Any, spec: Any) -> tuple[Network, ClientInfo]:
    try:
        net = ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        raise StaticMapError(f"{where}: {cidr!r} is not a CIDR or IP address") from None
    if isinstance(spec, str):
        tenant, _, namespace = spec.partition("/")
        spec = {"tenant": tenant, "namespace": namespace or tenant}
    if not isinstance(spec, dict):
        raise StaticMapError(f"{where}: expected a mapping with tenant/namespace")
    tenant = str(spec.get("tenant") or "").strip()
    if not tenant:
        raise StaticMapError(f"{where}: missing 'tenant'")
    labels = spec.get("labels") or {}
    if not isinstance(labels, dict):
        raise StaticMapError(f"{where}: 'labels' must be a mapping")
    info = ClientInfo(ip="", tenant=tenant, namespace=str(spec.get("namespace") or tenant),
                      pod=str(spec.get("pod") or ""),
                      service_account=str(spec.get("service_account") or ""),
                      labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}))
    return net, info


def parse_static_map(data: Any, source: str = "tenant map") -> StaticMap:
    if data is None:
        return StaticMap()
    if not isinstance(data, dict):
        raise StaticMapError(f"{source}: expected a mapping at the top level")
    result = StaticMap()
    out = result.entries
    default = data.get("default")
    if default is not None:
        if isinstance(default, str):
            t, _, ns = default.partition("/")
            default = {"tenant": t, "namespace": ns or t}
        if not isinstance(default, dict) or not default.get("tenant"):
            raise StaticMapError(f"{source}: default: expected {{tenant: .., namespace: ..}}")
        result.default = (str(default["tenant"]),
                          str(default.get("namespace") or default["tenant"]))
    namespaces = data.get("namespaces") or {}
    if not isinstance(namespaces, dict):
        raise StaticMapError(f"{source}: namespaces: expected a mapping namespace -> tenant")
    result.namespaces = {str(k): str(v) for k, v in namespaces.items()}
    if "clients" in data:
        items = data["clients"] or []
        if not isinstance(items, list):
            raise StaticMapError(f"{source}: 'clients' must be a list")
        for i, item in enumerate(items):
            where = f"{source}: clients[{i}]"
            if not isinstance(item, dict) or "cidr" not in item:
                raise StaticMapError(f"{where}: expected a mapping with 'cidr'")
            out.append(_entry(where, item["cidr"], item))
    rest = {k: v for k, v in data.items() if k not in RESERVED}
    for cidr, spec in rest.items():
        out.append(_entry(f"{source}: {cidr}", cidr, spec))
    return result


def load_static_map(path: str | Path) -> StaticMap:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise StaticMapError(f"tenant map {p}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise StaticMapError(f"tenant map {p}{line}: invalid YAML") from None
    return parse_static_map(data, f"tenant map {p}")
