"""DNS over TCP (RFC 1035/7766) and over TLS (RFC 7858): 2-byte length framing, pipelined
queries answered as soon as each is ready (possibly out of order), idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from typing import Any

from edge.listeners.sockets import bind_socket
from edge.resolver import Resolver

log = logging.getLogger(__name__)

MAX_PENDING = 128
MAX_CONNECTIONS = 2048


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, listener: StreamListener) -> None:
        self.l = listener
        self.answer = listener.resolver.answer
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.pending: set[asyncio.Task[Any]] = set()
        self.idle: asyncio.TimerHandle | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        if len(self.l.conns) >= MAX_CONNECTIONS:
            self.l.refused += 1
            transport.close()
            return
        self.l.conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(self.l.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.pending:
            self._arm()
            return
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.l.conns.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._arm()
        buf = self.buf
        while len(buf) >= 2:
            (ln,) = struct.unpack_from("!H", buf)
            if len(buf) < 2 + ln:
                break
            msg = bytes(buf[2:2 + ln])
            del buf[:2 + ln]
            if ln == 0:
                continue
            try:
                r = self.answer(msg, self.ip, self.l.transport_name)
            except Exception:
                log.exception("answering a %s query from %s failed", self.l.transport_name,
                              self.ip)
                continue
            if r is None:
                continue
            if type(r) is bytes:
                self._write(r)
                continue
            task = asyncio.ensure_future(r)
            self.pending.add(task)
            task.add_done_callback(self._done)
            if len(self.pending) >= MAX_PENDING and not self.paused and self.transport:
                self.transport.pause_reading()
                self.paused = True

    def _write(self, r: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack("!H", len(r)) + r)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if self.paused and len(self.pending) < MAX_PENDING // 2 and self.transport:
            self.transport.resume_reading()
            self.paused = False
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("answering a %s query from %s failed: %r", self.l.transport_name,
                      self.ip, exc)
            return
        r = task.result()
        if r is not None:
            self._write(r)

    def eof_received(self) -> bool:
        # half-close: finish pending answers, then close
        if not self.pending and self.transport is not None:
            self.transport.close()
        return self.l.ssl is None  # TLS transports cannot stay half-open


class StreamListener:
    def __init__(self, resolver: Resolver, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, idle_timeout: float = 10.0,
                 reuse_port: bool = True) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.idle_timeout = idle_timeout
        self.reuse_port = reuse_port
        self.transport_name = "dot" if ssl_context is not None else "tcp"
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[_StreamProtocol] = set()
        self.refused = 0

    async def start(self) -> None:
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _StreamProtocol(self), sock=sock,
                                               ssl=self.ssl)

    async def stop(self, grace: float = 3.0) -> None:
        if self.server is not None:
            self.server.close()
        pending = [t for c in self.conns for t in c.pending]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), grace)
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()
        self.server = None
