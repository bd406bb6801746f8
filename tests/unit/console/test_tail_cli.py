"""``dnsflow tail`` without Kafka follows the in-process bus of the process serving the
console on this data directory (``<home>/console.endpoint``), through its live tail."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from dnsflow.bus.memory import MemoryBus
from dnsflow.cli import CommandError
from dnsflow.console.auth import Auth
from dnsflow.console.explain import Explainer, FilePolicies
from dnsflow.console.queries import Queries
from dnsflow.console.server import Console
from dnsflow.console.tail import EventFeed, TailFilter
from dnsflow.console.tail_cli import ENDPOINT_FILE, _from_console
from tests.unit.console.conftest import event


async def test_tail_follows_the_embedded_bus_through_the_console(tmp_path: Path):
    bus = MemoryBus()
    await bus.start()
    console = Console(Queries(lambda _: None), Explainer(FilePolicies([])), Auth(None),
                      EventFeed(bus))
    runner = web.AppRunner(console.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    (tmp_path / ENDPOINT_FILE).write_bytes(orjson.dumps(
        {"url": f"http://127.0.0.1:{port}/", "pid": os.getpid()}))
    got: list[dict] = []

    async def read() -> None:
        async for ev in _from_console(tmp_path, TailFilter(tenant="acme", decision="deny")):
            got.append(ev)
            if len(got) == 2:
                return

    reader = asyncio.create_task(read())
    try:
        for i in range(100):  # until the reader has subscribed and seen two
            await bus.send_many(bus.topics.events, [
                (b"x", orjson.dumps(event(t, i, decision=d)))
                for t, d in (("acme", "allow"), ("globex", "deny"), ("acme", "deny"))])
            await asyncio.sleep(0.05)
            if reader.done():
                break
        await asyncio.wait_for(reader, 5)
    finally:
        reader.cancel()
        await runner.cleanup()
        await bus.stop()
    assert [(e["tenant"], e["decision"]) for e in got] == [("acme", "deny")] * 2


async def test_a_stale_endpoint_is_not_followed(tmp_path: Path):
    (tmp_path / ENDPOINT_FILE).write_bytes(orjson.dumps(
        {"url": "http://127.0.0.1:9/", "pid": 2 ** 22 + 12345}))  # no such process
    with pytest.raises(CommandError, match="no live event stream"):
        async for _ in _from_console(tmp_path, TailFilter()):
            pass
