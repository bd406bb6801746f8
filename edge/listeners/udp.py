"""DNS over UDP: answer from memory inline, start a task only for upstream misses.

Why a raw socket with ``add_reader`` instead of a DatagramProtocol: under load several
datagrams wait in the socket buffer; reading them in one wake-up and answering directly
saves the event loop's per-datagram machinery, which is a large share of a cache hit's cost
in Python. On Linux one ``recvmmsg`` reads up to ``BATCH`` datagrams into preallocated slots
and one ``sendmmsg`` sends the batch's answers (``mmsg.py``); elsewhere recvfrom/sendto.
Memoised hits (``fastpath.py``) are batched too: one clock read, one event-queue item and
one latency observation per batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from typing import Any

from dnsflow.edge import rrl as rrl_mod
from dnsflow.edge.listeners import mmsg
from dnsflow.edge.listeners.sockets import Bind, bind_socket
from dnsflow.edge.metrics import answer_sizes
from dnsflow.edge.resolver import Resolver

log = logging.getLogger(__name__)

BATCH = 64
ROUNDS = 4  # recvmmsg calls per wake-up at most, so other tasks still get the loop
MAX_BACKLOG = 10_000


class UdpListener:
    def __init__(self, resolver: Resolver, bind: Bind, *, batched_io: bool | None = None,
                 rrl: rrl_mod.ResponseRateLimiter | None = None) -> None:
        self.resolver = resolver
        self.host, self.port, self.reuse_port = bind
        self.sock: socket.socket | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        self.errors = 0
        self.send_dropped = 0
        self.oversize = 0  # datagrams longer than a receive slot (not DNS queries): dropped
        self.batched_io = mmsg.available() if batched_io is None else batched_io
        self._mb: mmsg.MsgBatch | None = None
        self._backlog: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self.rrl = rrl  # response rate limiting (None: off)
        # answer sizes per 16 bytes, index (size - 1) >> 4 (edge.metrics folds them)
        self.sizes = answer_sizes(resolver, "udp")

    async def start(self) -> None:
        self.sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM, self.reuse_port)
        self.port = self.sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        if self.batched_io:
            self._mb = mmsg.MsgBatch(BATCH, self.sock.family)
            self._loop.add_reader(self.sock.fileno(), self._readable_batched)
        else:
            self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable_batched(self) -> None:
        """Up to ROUNDS x BATCH datagrams: recvmmsg, answer, sendmmsg, settle the hits."""
        sock, b = self.sock, self._mb
        if sock is None or b is None:
            return
        fd = sock.fileno()
        fp = self.resolver.fast
        hit, answer = fp.hit, self.resolver.answer
        lim = self.rrl
        sizes = self.sizes
        if lim is not None:
            rl_check, rl_key = lim.check, (lim.key_v4 if b.ipv4 else lim.key_v6)
        for _ in range(ROUNDS):
            try:
                n = b.recv(fd)
            except OSError as exc:
                log.debug("udp recvmmsg: %s", exc)
                return
            if not n:
                return
            t0 = fp.begin()
            rest, senders = b.received(n)
            if lim is not None:
                now = time.monotonic()
                keys = b.sender_keys(n)
            # answers: the datagram each answers (~i: a memoised hit, the bytes after the
            # ID; the datagram's own ID goes first) and the bytes
            to: list[int] = []
            replies: list[bytes] = []
            to_add, reply_add = to.append, replies.append
            for i in range(n):
                tail = rest[i]
                if tail is None:
                    self.oversize += 1
                    continue
                addr = senders[i]
                try:
                    if lim is not None and (verdict := rl_check(rl_key(keys[i]), now)):
                        if verdict == rrl_mod.DROP:
                            continue
                        r = rrl_mod.tc_reply(b.datagram(i))  # slip: TC=1, try TCP
                    else:
                        r = hit(addr[0], tail, t0)
                        if r is not None:  # memoised: the answer after the ID
                            to_add(~i)
                            reply_add(r)
                            sizes[(len(r) + 1) >> 4] += 1  # + the 2-byte ID, - 1
                            continue
                        r = answer(b.datagram(i), addr[0], "udp")
                except Exception:
                    log.exception("answering a UDP packet from %s failed", addr[0])
                    self.errors += 1
                    continue
                if r is None:
                    continue
                if type(r) is bytes:
                    to_add(i)
                    reply_add(r)
                    sizes[(len(r) - 1) >> 4] += 1
                    continue
                task = asyncio.ensure_future(r)
                self.inflight.add(task)
                task.add_done_callback(lambda t, a=addr: self._done(t, a))
            if to:
                self._flush(to, replies, senders)
            fp.settle(t0, n)
            if n < b.n:
                return

    def _flush(self, to: list[int], replies: list[bytes], senders: list[Any]) -> None:
        """sendmmsg the batch's answers; what the kernel does not take joins the backlog."""
        b = self._mb
        assert b is not None and self.sock is not None
        sent = 0
        if not self._backlog:
            try:
                sent = b.send(self.sock.fileno(), to, replies)
            except OSError as exc:
                # one bad destination fails the call: send one by one to find it
                log.debug("udp sendmmsg: %s", exc)
                for i, r in zip(to, replies, strict=True):
                    self._send(b.reply(i, r), senders[i if i >= 0 else ~i])
                return
        for k in range(sent, len(to)):
            i = to[k]
            self._queue(b.reply(i, replies[k]), senders[i if i >= 0 else ~i])

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        answer = self.resolver.answer
        fast = self.resolver.fast.answer
        backlog = self._backlog
        lim = self.rrl
        now = time.monotonic() if lim is not None else 0.0
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfaced on the socket
                log.debug("udp recv: %s", exc)
                return
            if lim is not None and (verdict := lim.check(lim.key_ip(addr[0]), now)):
                if verdict == rrl_mod.SLIP:
                    r = rrl_mod.tc_reply(data)
                    if r is not None:
                        self._send(r, addr)
                continue
            try:
                r = fast(data, addr[0])
                if r is not None:
                    self.sizes[(len(r) - 1) >> 4] += 1
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
                self.sizes[(len(r) - 1) >> 4] += 1
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
            self.sizes[(len(r) - 1) >> 4] += 1
            self._send(r, addr)

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "batched_io": self.batched_io, "errors": self.errors,
                "send_dropped": self.send_dropped, "oversize": self.oversize,
                "backlog": len(self._backlog),
                "rrl": self.rrl.status() if self.rrl is not None else {"enabled": False}}

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
