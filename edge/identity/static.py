"""The static tenant map (YAML) used outside Kubernetes, as the identity table takes it.

The file format, its validation and the hot-reload safety (an empty, non-UTF-8, unreadable
or invalid version never replaces the map in force) are the core's
(:mod:`dnsflow.tenant_map`); this module only turns its entries into :class:`ClientInfo`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsflow.edge.identity.table import Network
from dnsflow.policies.api import ClientInfo
from dnsflow.tenant_map import (
    RESERVED,
    Stamp,
    TenantMap,
    TenantMapError,
    TenantMapWatcher,
    load_tenant_map,
    parse_tenant_map,
)

StaticMapError = TenantMapError

__all__ = ["RESERVED", "StaticMap", "StaticMapError", "StaticMapWatcher", "load_static_map",
           "parse_static_map"]


@dataclass
class StaticMap:
    entries: list[tuple[Network, ClientInfo]] = field(default_factory=list)
    default: tuple[str, str] | None = None          # (tenant, namespace) of unknown clients
    namespaces: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.entries and self.default is None and not self.namespaces


def from_core(m: TenantMap) -> StaticMap:
    return StaticMap(
        entries=[(net, ClientInfo("", e.tenant, e.namespace, e.pod, e.service_account,
                                  e.labels)) for net, e in m.entries],
        default=(m.default.tenant, m.default.namespace) if m.default is not None else None,
        namespaces=dict(m.namespaces))


def parse_static_map(data: Any, source: str = "tenant map") -> StaticMap:
    return from_core(parse_tenant_map(data, source))


def load_static_map(path: str | Path) -> StaticMap:
    """Read and check a map file (:func:`dnsflow.tenant_map.load_tenant_map`)."""
    return from_core(load_tenant_map(path))


class StaticMapWatcher(TenantMapWatcher[StaticMap]):
    """The core's watcher applying :class:`StaticMap` versions to the identity table."""

    def __init__(self, path: str | Path, apply: Callable[[StaticMap], None],
                 stamp: Stamp | None = None, interval: float = 2.0) -> None:
        super().__init__(path, apply, from_core, stamp=stamp, interval=interval)
