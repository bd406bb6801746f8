"""The console inside ``dnsflow up`` and ``dnsflow demo``: loopback, their bus, their chDB.

It listens on 127.0.0.1:8484 (the next free port when that one is taken) without tokens —
loopback only, like the standalone console without ``--tokens`` — and writes its address to
``<home>/console.endpoint`` so ``dnsflow tail`` can follow the in-process bus through it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from dnsflow.bus import Bus
from dnsflow.console.cli import tenant_map_path
from dnsflow.console.runtime import ConsoleRuntime, open_clickhouse
from dnsflow.console.tail_cli import ENDPOINT_FILE
from dnsflow.settings import Settings

PORTS = (8484, 8485, 8486, 0)


class ConsoleService:
    name = "console"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.runtime: ConsoleRuntime | None = None
        self.file = Path(settings.home) / ENDPOINT_FILE

    async def start(self) -> None:
        from dnsflow.cli import CommandError

        factory = open_clickhouse(self.settings, shared=True)
        for port in PORTS:
            runtime = ConsoleRuntime(
                factory, bus=self.bus, tokens=None, listen=("127.0.0.1", port), policies=[],
                tenant_map=tenant_map_path(self.settings, None))
            try:
                await runtime.start()
            except CommandError:
                if port == PORTS[-1]:
                    raise
                continue
            self.runtime = runtime
            break
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"url": self.url, "pid": os.getpid()}))
        os.replace(tmp, self.file)

    @property
    def url(self) -> str:
        return self.runtime.url if self.runtime else ""

    async def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if orjson.loads(self.file.read_bytes()).get("pid") == os.getpid():
                self.file.unlink()
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None

    def status(self) -> dict[str, Any]:
        return {"listen": self.url}


def build(settings: Settings, bus: Bus, **_: Any) -> list[ConsoleService]:
    """The explain form follows the bus's policies topic: what the edges enforce."""
    return [ConsoleService(settings, bus)]
