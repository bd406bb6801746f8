"""DNS over UDP: answer from memory inline, start a task only for upstream misses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from edge.listeners.sockets import bind_socket
from edge.resolver import Resolver

log = logging.getLogger(__name__)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: UdpListener) -> None:
        self.l = listener
        self.answer = listener.resolver.answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            r = self.answer(data, addr[0], "udp")
        except Exception:
            log.exception("answering a UDP packet from %s failed", addr[0])
            self.l.errors += 1
            return
        if r is None:
            return
        if type(r) is bytes:
            self.transport.sendto(r, addr)  # type: ignore[union-attr]
            return
        task = asyncio.ensure_future(r)
        self.l.inflight.add(task)
        task.add_done_callback(lambda t, a=addr: self.l._done(t, a))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class UdpListener:
    def __init__(self, resolver: Resolver, host: str, port: int, reuse_port: bool = True) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.transport: asyncio.DatagramTransport | None = None
        self.proto: _UdpProtocol | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        self.errors = 0

    async def start(self) -> None:
        sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self.transport, self.proto = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=sock)

    def _done(self, task: asyncio.Task[Any], addr: Any) -> None:
        self.inflight.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.errors += 1
            log.error("answering a UDP query from %s failed: %r", addr[0], exc)
            return
        r = task.result()
        if r is not None and self.transport is not None:
            self.transport.sendto(r, addr)

    async def stop(self, grace: float = 3.0) -> None:
        if self.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self.inflight, return_exceptions=True),
                                       grace)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
