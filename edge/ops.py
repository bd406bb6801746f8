"""Operations endpoints: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (serving
with a policy and at least one healthy upstream)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from dnsflow.edge.listeners.sockets import bind_socket
from dnsflow.edge.metrics import EdgeMetrics


class OpsServer:
    def __init__(self, metrics: EdgeMetrics, host: str, port: int,
                 readiness: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.readiness = readiness
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.metrics.render_all(),
                            headers={"content-type": "text/plain; version=0.0.4"})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, detail = self.readiness()
        return web.Response(status=200 if ok else 503, body=orjson.dumps(detail),
                            content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM, reuse_port=False)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
