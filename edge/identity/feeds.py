"""What fills an :class:`IdentityTable`: the static tenant map file (re-read on change) and/or
the Kubernetes watch of pods and namespaces. The edge and ``dnsflow tap`` start, report and
stop them the same way, so a tap event names the tenant an edge event would."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dnsflow.edge.identity.static import StaticMapError, StaticMapWatcher, load_static_map
from dnsflow.edge.identity.table import IdentityTable
from dnsflow.settings import ConfigError

if TYPE_CHECKING:
    from dnsflow.edge.config import EdgeConfig

log = logging.getLogger(__name__)


class IdentityFeeds:
    def __init__(self, identity: IdentityTable, cfg: EdgeConfig) -> None:
        self.identity = identity
        self.cfg = cfg
        self.map_watcher: StaticMapWatcher | None = None
        self.map_task: asyncio.Task[None] | None = None
        self.k8s: Any = None  # edge.identity.k8s.KubernetesIdentity with cfg.kubernetes

    async def start(self, poll_s: float, task_name: str) -> None:
        """A map that does not load is a :class:`ConfigError` (no serving with wrong tenants);
        the watch gets ``kube_sync_timeout`` to sync before the caller starts serving."""
        cfg = self.cfg
        if cfg.tenant_map:
            loaded = StaticMapWatcher.stamp(cfg.tenant_map)  # before reading: no edit missed
            try:
                self.identity.set_static(load_static_map(cfg.tenant_map))
            except StaticMapError as exc:
                raise ConfigError(str(exc)) from None
            self.map_watcher = StaticMapWatcher(cfg.tenant_map, self.identity.set_static,
                                                loaded, poll_s)
            self.map_task = asyncio.get_running_loop().create_task(
                self.map_watcher.run(), name=task_name)
        if cfg.kubernetes:
            from dnsflow.edge.identity.k8s import KubernetesIdentity

            self.k8s = KubernetesIdentity(self.identity, kubeconfig=cfg.kubeconfig,
                                          host=cfg.kube_api, node_name=cfg.node_name)
            await self.k8s.start()
            try:  # serve with a synced identity map when the API answers quickly
                await asyncio.wait_for(self.k8s.ready.wait(), cfg.kube_sync_timeout)
            except TimeoutError:
                log.warning("kubernetes identity not synced after %.0fs; unknown clients get "
                            "the default tenant until it is", cfg.kube_sync_timeout)

    @property
    def synced(self) -> bool:
        """Readiness: no watch, or its first list has arrived."""
        return self.k8s is None or self.k8s.ready.is_set()

    def status(self) -> dict[str, Any]:
        return {**self.identity.size(),
                **({"tenant_map": self.map_watcher.status()} if self.map_watcher else {}),
                **({"kubernetes": self.k8s.status()} if self.k8s else {})}
