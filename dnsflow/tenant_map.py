"""The static tenant map (YAML): which tenant, namespace and identity a client address has.

One model, read by the edge's identity layer (``edge/identity/static.py``) and by
``dnsflow policy explain --client`` (``policies/tenant_map.py``). Accepted shapes (errors name
the file and the entry)::

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

A map file that is empty (nothing but comments, or no clients, default or namespaces), not
UTF-8, unreadable or invalid is an error: at start a reader refuses it; on a hot reload
(:class:`TenantMapWatcher`) the last good map stays in force. Editors truncate a file before
writing it, and an empty map would drop every namespace's owner, making other tenants'
names visible.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from dnsflow.yaml_file import parse_yaml, read_utf8

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RESERVED = ("clients", "default", "namespaces")
_NO_LABELS: Mapping[str, str] = MappingProxyType({})


class TenantMapError(ValueError):
    """A tenant map that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class MapEntry:
    """Who a client of one entry is (its address is the client's own)."""

    tenant: str
    namespace: str
    pod: str = ""
    service_account: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)


@dataclass
class TenantMap:
    entries: list[tuple[Network, MapEntry]] = field(default_factory=list)
    default: MapEntry | None = None  # unknown clients
    namespaces: dict[str, str] = field(default_factory=dict)  # namespace -> tenant

    @property
    def empty(self) -> bool:
        return not self.entries and self.default is None and not self.namespaces

    def lookup(self, ip: str) -> MapEntry:
        """The most specific entry containing ``ip``, else the default."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise TenantMapError(f"--client {ip!r} is not an IP address") from None
        best: tuple[int, MapEntry] | None = None
        for net, entry in self.entries:
            if addr.version == net.version and addr in net and (
                    best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, entry)
        if best is not None:
            return best[1]
        if self.default is not None:
            return self.default
        raise TenantMapError(f"client {ip} is in no tenant map entry and there is no default")

    def namespace_tenants(self) -> dict[str, str]:
        """Namespace -> tenant: what the entries imply, then the explicit ``namespaces``."""
        out = {e.namespace: e.tenant for _, e in self.entries}
        out.update(self.namespaces)
        return out


def _spec(where: str, spec: Any) -> MapEntry:
    if isinstance(spec, str):
        tenant, _, namespace = spec.partition("/")
        spec = {"tenant": tenant, "namespace": namespace or tenant}
    if not isinstance(spec, dict):
        raise TenantMapError(f"{where}: expected a mapping with 'tenant' and 'namespace'")
    tenant = str(spec.get("tenant") or "").strip()
    if not tenant:
        raise TenantMapError(f"{where}: expected a mapping with 'tenant' (missing)")
    labels = spec.get("labels") or {}
    if not isinstance(labels, dict):
        raise TenantMapError(f"{where}: 'labels' must be a mapping")
    return MapEntry(tenant, str(spec.get("namespace") or tenant),
                    str(spec.get("pod") or ""), str(spec.get("service_account") or ""),
                    MappingProxyType({str(k): str(v) for k, v in labels.items()}))


def _net(where: str, cidr: Any) -> Network:
    try:
        return ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        raise TenantMapError(f"{where}: {cidr!r} is not a CIDR or IP address") from None


def parse_tenant_map(data: Any, source: str = "tenant map") -> TenantMap:
    """The map of already-parsed YAML ``data`` (``None``: an empty map)."""
    if data is None:
        return TenantMap()
    if not isinstance(data, dict):
        raise TenantMapError(f"{source}: expected a mapping at the top level")
    out = TenantMap()
    if data.get("default") is not None:
        out.default = _spec(f"{source}: default", data["default"])
    namespaces = data.get("namespaces") or {}
    if not isinstance(namespaces, dict):
        raise TenantMapError(f"{source}: namespaces: expected a mapping namespace -> tenant")
    out.namespaces = {str(k): str(v) for k, v in namespaces.items()}
    if "clients" in data:
        items = data["clients"] or []
        if not isinstance(items, list):
            raise TenantMapError(f"{source}: 'clients' must be a list")
        for i, item in enumerate(items):
            where = f"{source}: clients[{i}]"
            if not isinstance(item, dict) or "cidr" not in item:
                raise TenantMapError(f"{where}: expected a mapping with 'cidr'")
            out.entries.append((_net(where, item["cidr"]), _spec(where, item)))
    for cidr, spec in data.items():
        if cidr not in RESERVED:
            where = f"{source}: {cidr}"
            out.entries.append((_net(where, cidr), _spec(where, spec)))
    return out


def load_tenant_map(path: str | Path) -> TenantMap:
    """Read and check a map file; an empty, non-UTF-8, unreadable or invalid one raises
    :class:`TenantMapError` naming the file and what is wrong."""
    src = f"tenant map {Path(path)}"
    text = read_utf8(path, src, TenantMapError)
    data = parse_yaml(text, src, TenantMapError)
    result = parse_tenant_map(data, src)
    if result.empty:
        size = len(text.encode())
        raise TenantMapError(f"{src}: empty ({size} bytes; no clients, default or namespaces)")
    return result


Stamp = tuple[int, int]
T = TypeVar("T")


def file_stamp(path: str | Path) -> Stamp | None:
    """(mtime, size) of ``path``, or None when it cannot be read."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class TenantMapWatcher(Generic[T]):
    """Poll a map file; apply each good version, keep the last good one otherwise.

    Every change of (mtime, size) is read once: a bad version (empty, not UTF-8, unreadable,
    invalid) is logged once at ERROR naming the file and the problem, counted, and left
    out; the watcher keeps going, so the next good edit is applied. ``stamp`` is the one of
    the version already in force (taken before it was loaded). ``convert`` turns the core
    model into what ``apply`` takes (a component's own view of it)."""

    def __init__(self, path: str | Path, apply: Callable[[T], None],
                 convert: Callable[[TenantMap], T], stamp: Stamp | None = None,
                 interval: float = 2.0) -> None:
        self.path = Path(path)
        self.apply = apply
        self.convert = convert
        self.interval = interval
        self.reloads = 0
        self.rejected = 0
        self.last_error = ""
        self._last = stamp if stamp is not None else file_stamp(self.path)

    @staticmethod
    def stamp(path: str | Path) -> Stamp | None:
        return file_stamp(path)

    def check(self) -> bool | None:
        """One poll: True if a new map was applied, False if a new version was refused,
        None if nothing changed."""
        now = file_stamp(self.path)
        if now == self._last:
            return None
        self._last = now
        try:
            if now is None:
                raise TenantMapError(f"tenant map {self.path}: cannot read (missing)")
            new = load_tenant_map(self.path)
            self.apply(self.convert(new))
        except Exception as exc:  # whatever it is, the watcher and the last good map stay
            self.rejected += 1
            self.last_error = str(exc)
            log.error("%s; keeping the last good tenant map", exc)
            return False
        self.reloads += 1
        self.last_error = ""
        log.info("tenant map %s reloaded (%d entries)", self.path, len(new.entries))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def status(self) -> dict[str, object]:
        return {"path": str(self.path), "reloads": self.reloads, "rejected": self.rejected,
                "last_error": self.last_error}
