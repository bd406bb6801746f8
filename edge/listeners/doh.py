"""DNS over HTTPS (RFC 8484): GET ?dns=<base64url> and POST application/dns-message."""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
import socket
import ssl

from aiohttp import web

from edge import wire
from edge.listeners.sockets import bind_socket
from edge.resolver import Resolver

log = logging.getLogger(__name__)

CT = "application/dns-message"


class DohListener:
    def __init__(self, resolver: Resolver, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None, path: str = "/dns-query",
                 reuse_port: bool = True) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.path = path
        self.reuse_port = reuse_port
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            param = request.query.get("dns")
            if not param:
                return web.Response(status=400, text="missing dns parameter")
            try:
                msg = base64.urlsafe_b64decode(param + "=" * (-len(param) % 4))
            except (binascii.Error, ValueError):
                return web.Response(status=400, text="dns parameter is not base64url")
        else:
            if request.content_type != CT:
                return web.Response(status=415, text=f"content-type must be {CT}")
            msg = await request.read()
        if not msg or len(msg) > 65535:
            return web.Response(status=400, text="empty or oversized DNS message")
        ip = request.remote or ""
        r = self.resolver.answer(msg, ip, "doh")
        if inspect.iscoroutine(r):
            r = await r
        if r is None:
            # a drop policy: answer nothing the client can use; RFC 8484 clients see an error
            return web.Response(status=400, text="query dropped")
        headers = {}
        try:
            resp = wire.parse_response(r)
            if resp.min_ttl is not None:
                headers["cache-control"] = f"max-age={resp.min_ttl}"
        except wire.WireError:
            pass
        return web.Response(body=r, content_type=CT, headers=headers)

    async def start(self) -> None:
        app = web.Application(client_max_size=65536)
        app.router.add_get(self.path, self._handle)
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=self.ssl)
        await site.start()

    async def stop(self, grace: float = 3.0) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
