"""DNS over TCP (RFC 1035/7766) and over TLS (RFC 7858): 2-byte length framing, pipelined
queries answered as soon as each is ready (possibly out of order).

Hostile clients (``budget.py``): connections are charged to one budget shared with DoH, TLS
handshakes have a deadline, a started message must be complete within ``read_timeout``,
the idle timer moves only when a whole query arrives, and a client that pipelines without
reading its answers is paused (then aborted) instead of growing our buffers."""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from typing import Any

from dnsflow.edge.listeners.budget import (
    ConnectionBudget,
    GuardedListener,
    GuardedProtocol,
    Limits,
)
from dnsflow.edge.listeners.sockets import Bind
from dnsflow.edge.metrics import answer_sizes
from dnsflow.edge.resolver import Resolver

log = logging.getLogger(__name__)

MAX_PENDING = 128
MAX_CONNECTIONS = 2048  # the default budget when none is shared


class _StreamProtocol(GuardedProtocol):
    def __init__(self, listener: StreamListener) -> None:
        super().__init__(listener.limits)
        self.l = listener
        self.answer = listener.resolver.answer
        self.buf = bytearray()
        self.pending: set[asyncio.Task[Any]] = set()
        self.full = False     # MAX_PENDING answers in flight: stop taking queries
        self.eof = False

    def started(self) -> None:
        self.l.conns.add(self)

    def stopped(self) -> None:
        self.l.conns.discard(self)

    def partial(self) -> bool:
        return bool(self.buf) and not self.blocked()

    def busy(self) -> bool:
        return bool(self.pending)

    def blocked(self) -> bool:
        return self.full or self.write_paused

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def _process(self) -> None:
        buf = self.buf
        got = False
        while len(buf) >= 2 and not self.blocked() and self.transport is not None:
            (ln,) = struct.unpack_from("!H", buf)
            if len(buf) < 2 + ln:
                break
            msg = bytes(buf[2:2 + ln])
            del buf[:2 + ln]
            got = True
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
            if len(self.pending) >= MAX_PENDING:
                self.full = True
        if got:
            self.progress()
        self.update_reading()
        if buf and not self.blocked():
            self.arm_deadline()  # the rest of this message must come within read_timeout
        elif self.eof:
            self._finish()

    def _write(self, r: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            self.l.sizes[(len(r) - 1) >> 4] += 1
            t.write(struct.pack("!H", len(r)) + r)
            self.overflowing()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("answering a %s query from %s failed: %r", self.l.transport_name,
                          self.ip, exc)
            else:
                r = task.result()
                if r is not None:
                    self._write(r)
        if self.full and len(self.pending) < MAX_PENDING // 2:
            self.full = False
            self.resume()
        elif self.eof:
            self._finish()

    def resume(self) -> None:
        if not self.blocked():
            self._process()

    def eof_received(self) -> bool:
        # half-close: finish pending answers (and complete queries already read), then close
        self.eof = True
        self._finish()
        return self.l.ssl is None  # TLS transports cannot stay half-open

    def _finish(self) -> None:
        if self.pending or self.transport is None:
            return
        if len(self.buf) >= 2 and len(self.buf) >= 2 + struct.unpack_from("!H", self.buf)[0]:
            return  # complete queries still to answer (we are blocked on writing)
        self.transport.close()


class StreamListener(GuardedListener):
    def __init__(self, resolver: Resolver, bind: Bind, *,
                 ssl_context: ssl.SSLContext | None = None, limits: Limits | None = None
                 ) -> None:
        """TCP, or DoT with ``ssl_context``; ``limits`` (budget and timeouts, counters: one
        per listener) default to a budget of MAX_CONNECTIONS and a 10 s idle timeout."""
        super().__init__(bind, ssl_context, limits or Limits(ConnectionBudget(MAX_CONNECTIONS)))
        self.resolver = resolver
        self.transport_name = "dot" if ssl_context is not None else "tcp"
        self.sizes = answer_sizes(resolver, self.transport_name)

    @property
    def refused(self) -> int:
        return self.limits.counters["refused"]

    def connection(self) -> _StreamProtocol:
        return _StreamProtocol(self)

    def status(self) -> dict[str, Any]:
        return {"transport": self.transport_name, "port": self.port, "open": len(self.conns),
                "handshaking": len(self.handshakes), **self.limits.counters}

    async def stop(self, grace: float = 3.0) -> None:
        await self.stop_accepting([t for c in self.conns for t in c.pending], grace)
        for c in list(self.conns) + list(self.handshakes):
            if c.transport is not None:
                c.transport.close()
            else:
                c.evict()
        self.server = None
