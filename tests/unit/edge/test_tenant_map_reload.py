"""Hot reload of the static tenant map never drops isolation (issue #11).

Editors truncate a file before writing it: an empty map used to replace the good one, so
the namespace owners vanished and one tenant resolved another's services. A non-UTF-8 edit
killed the watcher silently, so later good edits were ignored."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from dnsflow.edge.service import EdgeService
from dnsflow.policies.api import PolicyStore

MAP = """
default: {tenant: guests, namespace: guests}
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.1/32, tenant: shop, namespace: shop}
"""
OTHERS = "ledger.payments.svc.cluster.local"


async def _ask(svc: EdgeService, name: str) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=svc.status()["udp_port"],
                                    source="127.0.0.1", timeout=2)


async def _until(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        await asyncio.sleep(0.02)


def _rejected(svc: EdgeService) -> int:
    w = svc.feeds.map_watcher
    return w.rejected if w is not None else 0


@pytest.fixture
async def edge(start_edge, tmp_path: Path, monkeypatch) -> tuple[EdgeService, Path]:
    monkeypatch.setattr(EdgeService, "map_poll_s", 0.05, raising=False)
    m = tmp_path / "map.yaml"
    m.write_text(MAP)
    svc = await start_edge(tenant_map=str(m), policy_store=PolicyStore())
    hidden = await _ask(svc, OTHERS)
    assert hidden.rcode() == dns.rcode.NXDOMAIN and not hidden.answer
    return svc, m


@pytest.mark.parametrize("content", [b"", b"# half-written\n", b"clients: [\n"],
                         ids=["truncated", "comments-only", "invalid-yaml"])
async def test_bad_reload_keeps_the_last_good_map_and_isolation(edge, content, caplog) -> None:
    svc, m = edge
    caplog.set_level(logging.ERROR)
    m.write_bytes(content)
    await _until(lambda: _rejected(svc) >= 1, timeout=3.0)
    r = await _ask(svc, OTHERS)
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer, "isolation lost"
    assert _rejected(svc) == 1
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(m) in errors[0] and "keeping the last good" in errors[0]
    assert svc.status()["identity"]["tenant_map"]["last_error"]


async def test_non_utf8_edit_keeps_the_watcher_and_the_next_good_edit_applies(edge,
                                                                             caplog) -> None:
    svc, m = edge
    caplog.set_level(logging.ERROR)
    m.write_bytes(MAP.encode().replace(b"guests", b"g\xe4ste"))  # Latin-1 from an old editor
    await _until(lambda: _rejected(svc) >= 1, timeout=3.0)
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(m) in errors[0] and "not UTF-8" in errors[0]
    assert not svc.feeds.map_task.done()
    assert (await _ask(svc, OTHERS)).rcode() == dns.rcode.NXDOMAIN
    m.write_text(MAP.replace("payments: payments", "payments: shop"))  # a good edit
    await _until(lambda: svc.feeds.map_watcher.reloads >= 1, timeout=3.0)
    r = await _ask(svc, OTHERS)  # payments now belongs to shop: visible
    assert r.rcode() == dns.rcode.NOERROR and [str(x) for x in r.answer[0]] == ["10.96.2.10"]
    assert svc.status()["identity"]["tenant_map"] == {
        "path": str(m), "reloads": 1, "rejected": 1, "last_error": ""}


async def test_edge_refuses_to_start_on_an_empty_map(start_edge, tmp_path: Path) -> None:
    from dnsflow.settings import ConfigError

    m = tmp_path / "map.yaml"
    m.write_text("")
    with pytest.raises(ConfigError, match=r"map\.yaml: empty"):
        await start_edge(tenant_map=str(m), policy_store=PolicyStore())
