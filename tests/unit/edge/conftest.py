"""Fixtures: an in-process upstream, a tenant map, and a started edge on loopback port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.service import EdgeService, build
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from harness.fake_upstream import FakeUpstream

ZONE = [
    "web.shop.svc.cluster.local. 300 IN A 10.96.1.10",
    "ledger.payments.svc.cluster.local. 300 IN A 10.96.2.10",
    "alias.shop.svc.cluster.local. 300 IN CNAME ledger.payments.svc.cluster.local.",
    "_http._tcp.web.shop.svc.cluster.local. 300 IN SRV 0 5 80 web.shop.svc.cluster.local.",
    "example.com. 120 IN A 93.184.216.34",
    "www.example.com. 120 IN CNAME example.com.",
    "10.1.96.10.in-addr.arpa. 300 IN PTR web.shop.svc.cluster.local.",
    *[f'big.example.com. 60 IN TXT "{"x" * 200}-{i}"' for i in range(6)],
]

TENANT_MAP = """
default: {tenant: guests, namespace: guests}
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.0/8, tenant: shop, namespace: shop, pod: web-1}
"""


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = FakeUpstream(ZONE)
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
def tenant_map(tmp_path: Path) -> Path:
    p = tmp_path / "tenants.yaml"
    p.write_text(TENANT_MAP)
    return p


@pytest.fixture
def write_map(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: a static tenant map file holding a test's own map (YAML text)."""

    def _write(text: str) -> Path:
        p = tmp_path / "map.yaml"
        p.write_text(text)
        return p

    return _write


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(Topics("t."))


@pytest.fixture
async def start_edge(tmp_path: Path, upstream: FakeUpstream, tenant_map: Path,
                     bus: MemoryBus) -> AsyncIterator[Any]:
    """Factory starting an edge (port 0) on the memory bus; every edge is stopped after."""
    started: list[EdgeService] = []

    async def _start(**kw: Any) -> EdgeService:
        settings = Settings(home=tmp_path / "home", topic_prefix="t.")
        opts: dict[str, Any] = {"listen": "127.0.0.1:0", "upstreams": [upstream.address],
                                "tenant_map": str(tenant_map), "name": "edge-test",
                                "upstream_timeout": 1.0}
        opts.update(kw)
        svc = build(settings, bus, **opts)[0]
        await svc.start()
        started.append(svc)
        return svc

    yield _start
    for svc in started:
        if svc.started:
            await svc.stop()
