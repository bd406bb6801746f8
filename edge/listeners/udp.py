"""DNS over UDP: answer from memory inline, start a task only for upstream misses.

Why a raw socket with ``add_reader`` instead of a DatagramProtocol: under load several
datagrams wait in the socket buffer; reading them in one wake-up (up to ``BATCH``) and
answering with ``socket.sendto`` directly saves the event loop's per-datagram machinery,
which is a large share of a cache hit's cost in Python.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from typing import Any

from edge.listeners.sockets import bind_socket
from edge.resolver import Resolver

log = logging.getLogger(__name__)

BATCH = 64
MAX_BACKLOG = 10_000


class UdpListener:
    def __init__(self, resolver: Resolver, host: str, port: int, reuse_port: bool = True) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.sock: socket.socket | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        self.errors = 0
        self.send_dropped = 0
        self._backlog: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False

    async def start(self) -> None:
        self.sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM, self.reuse_port)
        self.port = self.sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        answer = self.resolver.answer
        fast = self.resolver.fast.answer
        backlog = self._backlog
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfaced on the socket
                log.debug("udp recv: %s", exc)
                return
            try:
                r = fast(data, addr[0])
                if r is not None:
                    if backlog:
                        self._queue(r, addr)
                        continue
                    try:
                        sendto(r, addr)
                    except (BlockingIOError, InterruptedError):
                        self._queue(r, addr)
                    except OSError as exc:
                        log.debug("udp send to %s: %s", addr, exc)
                    continue
                r = answer(data, addr[0], "udp")
            except Exception:
                log.exception("answering a UDP packet from %s failed", addr[0])
                self.errors += 1
                continue
            if r is None:
                continue
            if type(r) is bytes:
                self._send(r, addr)
                continue
            task = asyncio.ensure_future(r)
            self.inflight.add(task)
            task.add_done_callback(lambda t, a=addr: self._done(t, a))

    def _send(self, data: bytes, addr: Any) -> None:
        if self._backlog:
            self._queue(data, addr)
            return
        try:
            self.sock.sendto(data, addr)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            self._queue(data, addr)
        except OSError as exc:
            log.debug("udp send to %s: %s", addr, exc)

    def _queue(self, data: bytes, addr: Any) -> None:
        if len(self._backlog) >= MAX_BACKLOG:
            self.send_dropped += 1
            return
        self._backlog.append((data, addr))
        if not self._writing and self._loop is not None and self.sock is not None:
            self._loop.add_writer(self.sock.fileno(), self._writable)
            self._writing = True

    def _writable(self) -> None:
        while self._backlog and self.sock is not None:
            data, addr = self._backlog[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp send to %s: %s", addr, exc)
            self._backlog.popleft()
        if self._loop is not None and self.sock is not None:
            self._loop.remove_writer(self.sock.fileno())
        self._writing = False

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
        if r is not None and self.sock is not None:
            self._send(r, addr)

    async def stop(self, grace: float = 3.0) -> None:
        if self._loop is not None and self.sock is not None:
            self._loop.remove_reader(self.sock.fileno())
        if self.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self.inflight, return_exceptions=True),
                                       grace)
        if self._backlog:
            self._writable()
        if self.sock is not None:
            if self._writing and self._loop is not None:
                self._loop.remove_writer(self.sock.fileno())
            self.sock.close()
            self.sock = None
