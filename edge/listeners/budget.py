"""One connection budget across TCP, DoT and DoH, with per-client fairness, and the
deadlines every stream connection lives under.

Why: a connection costs a file descriptor, buffers and timers whatever its protocol, so the
three stream listeners draw from one pool (``max_connections``). One client address may hold
at most ``max_connections_per_client`` of it; when the pool is full, a client holding fewer
connections than the heaviest one takes the heaviest client's oldest connection instead of
being refused, so a flood from one address (or a few) cannot lock others out.

A connection is charged when it is accepted, before any TLS handshake, and a handshake must
finish within ``tls_handshake_timeout``. Bytes alone do not keep a connection: the idle timer
moves only on progress (a complete message), and once the first byte of a message arrives the
whole message must follow within ``read_timeout`` (a byte dripped every few seconds no longer
re-arms anything). Answers a client does not read are bounded by the transport's write
buffer: past ``WRITE_HIGH`` the connection stops reading (``pause_writing``), past
``WRITE_HARD`` it is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from asyncio import sslproto
from typing import Any

from dnsflow.edge.listeners.sockets import Bind, bind_socket

log = logging.getLogger(__name__)

WRITE_HIGH = 64 * 1024      # pause reading from a client while this much is unsent
WRITE_HARD = 2 * 1024 * 1024  # abort a connection whose unsent answers reach this


class ConnectionBudget:
    """Admission across listeners: a total cap and a per-client-address cap."""

    def __init__(self, max_total: int = 2048, max_per_client: int = 64) -> None:
        self.max_total = max(1, max_total)
        self.max_per_client = max(1, min(max_per_client, self.max_total))
        self.clients: dict[str, dict[Any, None]] = {}
        self.total = 0
        self.refused_full = 0
        self.refused_client = 0
        self.evicted = 0

    def admit(self, conn: Any, ip: str) -> bool:
        mine = self.clients.get(ip)
        n = len(mine) if mine else 0
        if n >= self.max_per_client:
            self.refused_client += 1
            return False
        if self.total >= self.max_total:
            heavy = max(self.clients.values(), key=len)
            if len(heavy) <= n + 1:  # nobody holds more than this client would: refuse
                self.refused_full += 1
                return False
            victim = next(iter(heavy))  # the heaviest client's oldest connection
            self.evicted += 1
            self.release(victim, victim.ip)
            victim.evict()
            mine = self.clients.get(ip)
        if mine is None:
            mine = self.clients[ip] = {}
        mine[conn] = None
        self.total += 1
        return True

    def release(self, conn: Any, ip: str) -> None:
        mine = self.clients.get(ip)
        if mine is not None and conn in mine:
            del mine[conn]
            self.total -= 1
            if not mine:
                del self.clients[ip]

    def status(self) -> dict[str, int]:
        return {"open": self.total, "clients": len(self.clients), "max": self.max_total,
                "max_per_client": self.max_per_client, "refused_full": self.refused_full,
                "refused_client": self.refused_client, "evicted": self.evicted}


class Limits:
    """What a stream listener needs to guard its connections (one per listener)."""

    def __init__(self, budget: ConnectionBudget | None = None, *, idle_timeout: float = 10.0,
                 read_timeout: float = 5.0, handshake_timeout: float = 5.0) -> None:
        self.budget = budget if budget is not None else ConnectionBudget()
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.handshake_timeout = handshake_timeout
        self.counters = {"accepted": 0, "refused": 0, "evicted": 0, "idle_closed": 0,
                         "read_timeouts": 0, "handshake_timeouts": 0, "handshake_failed": 0,
                         "write_paused": 0, "write_overflow": 0}


class GuardedProtocol(asyncio.Protocol):
    """Base of the TCP/DoT and DoH connection protocols: admission, eviction, the idle
    timer (moved by ``progress()``), the whole-message read deadline and write pausing.

    Subclasses implement ``started()``, ``partial()`` (an incomplete message is buffered),
    ``busy()`` (answers are still being worked on), ``resume()`` and ``stopped()``."""

    limits: Limits

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.transport: Any = None
        self.raw: Any = None
        self.ip = ""
        self.admitted = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last = 0.0
        self.idle: asyncio.TimerHandle | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.write_paused = False
        self.reading = True  # whether we asked the transport to read

    # -- admission ------------------------------------------------------------------
    def admit(self, raw: Any) -> bool:
        peer = raw.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        self.raw = raw
        lim = self.limits
        before = lim.budget.evicted
        if not lim.budget.admit(self, self.ip):
            lim.counters["refused"] += 1
            raw.abort()
            return False
        if lim.budget.evicted != before:
            lim.counters["evicted"] += 1
        lim.counters["accepted"] += 1
        self.admitted = True
        return True

    def evict(self) -> None:
        t = self.transport or self.raw
        if t is not None:
            t.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.admitted and not self.admit(transport):
            return
        self.transport = transport
        self.raw = self.raw or transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)  # type: ignore[attr-defined]
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.idle = self.loop.call_at(self.last + self.limits.idle_timeout, self._on_idle)
        self.started()

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.budget.release(self, self.ip)
        for h in (self.idle, self.deadline):
            if h is not None:
                h.cancel()
        self.stopped()
        self.transport = None

    # -- timers -------------------------------------------------------------------
    def progress(self) -> None:
        """A complete message arrived: the idle clock restarts, the read deadline ends."""
        assert self.loop is not None
        self.last = self.loop.time()
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def arm_deadline(self) -> None:
        if self.deadline is None and self.loop is not None:
            self.deadline = self.loop.call_later(self.limits.read_timeout, self._on_deadline)

    def _on_deadline(self) -> None:
        self.deadline = None
        if self.transport is not None and self.partial():
            self.limits.counters["read_timeouts"] += 1
            self.transport.abort()

    def _on_idle(self) -> None:
        t, loop = self.transport, self.loop
        if t is None or loop is None:
            return
        now = loop.time()
        due = now + self.limits.idle_timeout if self.busy() else (
            self.last + self.limits.idle_timeout)
        if now < due:
            self.idle = loop.call_at(due, self._on_idle)
            return
        self.limits.counters["idle_closed"] += 1
        self.close()

    def close(self) -> None:
        """Close, flushing what is buffered; abort when a client is not reading it."""
        t = self.transport
        if t is None:
            return
        if t.get_write_buffer_size() > 0 and self.write_paused:
            t.abort()
        else:
            t.close()

    # -- flow control -------------------------------------------------------------
    def pause_writing(self) -> None:
        self.write_paused = True
        self.limits.counters["write_paused"] += 1
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume()
        self.update_reading()

    def blocked(self) -> bool:
        """Whether to stop taking requests (subclasses add their own reasons)."""
        return self.write_paused

    def update_reading(self) -> None:
        t = self.transport
        if t is None:
            return
        want = not self.blocked()
        if want != self.reading:
            self.reading = want
            if want:
                t.resume_reading()
            else:
                t.pause_reading()

    def overflowing(self) -> bool:
        """True (and the connection aborted) when unsent answers passed ``WRITE_HARD``."""
        t = self.transport
        if t is not None and t.get_write_buffer_size() > WRITE_HARD:
            self.limits.counters["write_overflow"] += 1
            t.abort()
            return True
        return False

    # -- for subclasses -------------------------------------------------------------
    def started(self) -> None: ...

    def stopped(self) -> None: ...

    def partial(self) -> bool:
        return False

    def busy(self) -> bool:
        return False

    def resume(self) -> None: ...


class _TlsGate(asyncio.Protocol):
    """Charges the budget for a raw connection, then runs the server-side TLS handshake
    under ``handshake_timeout``; the app protocol sees ``connection_made`` after it."""

    def __init__(self, limits: Limits, ssl_context: Any, make_app: Any,
                 handshakes: set[Any]) -> None:
        self.limits = limits
        self.ssl = ssl_context
        self.make_app = make_app
        self.handshakes = handshakes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        app: GuardedProtocol = self.make_app()
        if not app.admit(transport):
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        sp = sslproto.SSLProtocol(loop, app, self.ssl, waiter, server_side=True,
                                  ssl_handshake_timeout=self.limits.handshake_timeout)
        transport.set_protocol(sp)
        sp.connection_made(transport)
        self.handshakes.add(app)
        t0 = loop.time()

        def done(f: asyncio.Future[Any]) -> None:
            self.handshakes.discard(app)
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or exc is not None:
                if loop.time() - t0 >= self.limits.handshake_timeout * 0.9:
                    self.limits.counters["handshake_timeouts"] += 1
                else:
                    self.limits.counters["handshake_failed"] += 1
                self.limits.budget.release(app, app.ip)
                transport.abort()

        waiter.add_done_callback(done)


def protocol_factory(limits: Limits, ssl_context: Any, make_app: Any,
                     handshakes: set[Any]) -> Any:
    """What to give ``loop.create_server`` (always without ``ssl=``: TLS is ours)."""
    if ssl_context is None:
        return make_app
    return lambda: _TlsGate(limits, ssl_context, make_app, handshakes)


class GuardedListener:
    """What the TCP/DoT and DoH listeners share beside their protocol: bind, accept under the
    budget (TLS through the gate), and stop accepting with a grace period for answers."""

    def __init__(self, bind: Bind, ssl_context: Any, limits: Limits) -> None:
        self.host, self.port, self.reuse_port = bind
        self.ssl = ssl_context
        self.limits = limits
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[Any] = set()
        self.handshakes: set[Any] = set()

    def connection(self) -> GuardedProtocol:
        """The protocol of one accepted connection (the listener's own)."""
        raise NotImplementedError

    async def start(self) -> None:
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM, self.reuse_port)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            protocol_factory(self.limits, self.ssl, self.connection, self.handshakes),
            sock=sock)

    async def stop_accepting(self, pending: list[Any], grace: float) -> None:
        """Close the listening socket, then give the ``pending`` answers ``grace`` seconds."""
        if self.server is not None:
            self.server.close()
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), grace)
