"""The policy service of the embedded runner: watch sources, publish on real change.

Settings section ``policies:``::

    policies:
      dir: /etc/dnsflow/policies   # default <home>/policies (created if missing)
      kubernetes: false            # also watch DNSPolicy/ClusterDNSPolicy + namespaces
      kubeconfig: null             # default: in-cluster, then ~/.kube/config
      poll_interval_s: 1.0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from dnsflow.bus import Bus
from dnsflow.bus.base import BusError
from dnsflow.policies.loader import PolicySetError
from dnsflow.policies.publisher import Publisher
from dnsflow.policies.sources.yaml_dir import YamlDirSource
from dnsflow.schema import now_us
from dnsflow.service import Service
from dnsflow.settings import Settings, section

log = logging.getLogger(__name__)


class PoliciesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: Path | None = None
    kubernetes: bool = False
    kubeconfig: str | None = None
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600)


async def send_rejection(bus: Bus, source: str, exc: PolicySetError) -> None:
    """A rejected set is not lost: its problems go to the DLQ (key = the source)."""
    value = orjson.dumps({"ts": now_us(), "component": "policies", "source": source,
                          "reason": "policy set rejected; last good version stays",
                          "problems": [str(p) for p in exc.problems]})
    try:
        await bus.send(bus.topics.dlq, value, key=b"policies")
    except BusError as err:
        log.error("could not report the rejected policy set to the DLQ: %s", err)


class PolicyService:
    """Publishes the YAML directory (and optionally Kubernetes resources)."""

    name = "policies"

    def __init__(self, bus: Bus, directory: Path, *, interval_s: float = 1.0,
                 kubernetes: bool = False, kubeconfig: str | None = None) -> None:
        self.bus = bus
        self.directory = directory
        self.source = YamlDirSource(directory, self._publish, self._rejected, interval_s)
        self.publisher = Publisher(bus, source=self.source.source)
        self.kubernetes = kubernetes
        self.kubeconfig = kubeconfig
        self._kube: Any = None
        self.last_error = ""
        self.last_changes: list[str] = []

    async def _publish(self, docs: dict[str, dict[str, Any]]) -> None:
        changes = await self.publisher.publish(docs, prune=True)
        self.last_changes = [str(c) for c in changes]
        self.last_error = ""
        for c in changes:
            log.info("published %s", c)

    async def _rejected(self, exc: PolicySetError) -> None:
        self.last_error = str(exc)
        log.error("policy set in %s rejected, last good version stays:\n%s", self.directory,
                  exc)
        await send_rejection(self.bus, self.source.source, exc)

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        await self.publisher.load()
        await self.source.start()
        if self.kubernetes:
            from dnsflow.policies.sources.kubernetes import KubernetesSource

            self._kube = KubernetesSource(self.bus, kubeconfig=self.kubeconfig)
            await self._kube.start()

    async def stop(self) -> None:
        if self._kube is not None:
            await self._kube.stop()
        await self.source.stop()
        await self.publisher.close()

    def status(self) -> dict[str, Any]:
        out = {"dir": str(self.directory), "published": self.publisher.published,
               "loads": self.source.loads, "rejections": self.source.rejections,
               "last_error": self.last_error, "last_changes": self.last_changes,
               "versions": {k: v.get("version") for k, v in self.publisher.current.items()}}
        if self._kube is not None:
            out["kubernetes"] = self._kube.status()
        return out


def build(settings: Settings, bus: Bus, **kw: Any) -> list[Service]:
    cfg = section(settings, "policies", PoliciesConfig)
    directory = cfg.dir or (settings.home / "policies")
    return [PolicyService(bus, Path(directory), interval_s=cfg.poll_interval_s,
                          kubernetes=cfg.kubernetes, kubeconfig=cfg.kubeconfig)]
