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

A map file that is empty (nothing but comments, or no clients, default or namespaces), not
UTF-8, unreadable or invalid is an error: at start the edge refuses it; on a hot reload
(:class:`StaticMapWatcher`) the last good map stays in force. Editors truncate a file before
writing it, and an empty map would drop every namespace's owner, making other tenants'
names visible.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from edge.identity.table import Network
from policies.api import ClientInfo

log = logging.getLogger(__name__)


class StaticMapError(ValueError):
    pass


RESERVED = ("clients", "default", "namespaces")


@dataclass
class StaticMap:
    entries: list[tuple[Network, ClientInfo]] = field(default_factory=list)
    default: tuple[str, str] | None = None          # (tenant, namespace) of unknown clients
    namespaces: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.entries and self.default is None and not self.namespaces


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
    """Read and check a map file; an empty, non-UTF-8, unreadable or invalid one raises
    :class:`StaticMapError` naming the file and what is wrong."""
    p = Path(path)
    src = f"tenant map {p}"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise StaticMapError(f"{src}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StaticMapError(f"{src}: not UTF-8 (byte {exc.start}: "
                             f"{raw[exc.start:exc.start + 1]!r})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise StaticMapError(f"{src}{line}: invalid YAML") from None
    result = parse_static_map(data, src)
    if result.empty:
        raise StaticMapError(f"{src}: empty ({len(raw)} bytes; no clients, default or "
                             "namespaces)")
    return result


Stamp = tuple[int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class StaticMapWatcher:
    """Poll a map file; apply each good version, keep the last good one otherwise.

    Every change of (mtime, size) is read once: a bad version (empty, not UTF-8, unreadable,
    invalid) is logged once at ERROR naming the file and the problem, counted, and left
    out; the watcher keeps going, so the next good edit is applied. ``stamp`` is the one of
    the version already in force (taken before it was loaded)."""

    def __init__(self, path: str | Path, apply: Callable[[StaticMap], None],
                 stamp: Stamp | None = None, interval: float = 2.0) -> None:
        self.path = Path(path)
        self.apply = apply
        self.interval = interval
        self.reloads = 0
        self.rejected = 0
        self.last_error = ""
        self._last = stamp if stamp is not None else _stamp(self.path)

    @staticmethod
    def stamp(path: str | Path) -> Stamp | None:
        return _stamp(Path(path))

    def check(self) -> bool | None:
        """One poll: True if a new map was applied, False if a new version was refused,
        None if nothing changed."""
        now = _stamp(self.path)
        if now == self._last:
            return None
        self._last = now
        try:
            if now is None:
                raise StaticMapError(f"tenant map {self.path}: cannot read (missing)")
            new = load_static_map(self.path)
            self.apply(new)
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
