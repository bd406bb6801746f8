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
import ctypes
import errno
import logging
import socket
import time
from typing import Any

from edge import rrl as rrl_mod
from edge.listeners import mmsg
from edge.listeners.sockets import bind_socket
from edge.resolver import Resolver

log = logging.getLogger(__name__)

BATCH = 64
ROUNDS = 4  # recvmmsg calls per wake-up at most, so other tasks still get the loop
MAX_BACKLOG = 10_000
_ADDRS_MAX = 100_000


class UdpListener:
    def __init__(self, resolver: Resolver, host: str, port: int, reuse_port: bool = True,
                 batched_io: bool | None = None,
                 rrl: rrl_mod.ResponseRateLimiter | None = None) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.sock: socket.socket | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        self.errors = 0
        self.send_dropped = 0
        self.oversize = 0  # datagrams longer than a receive slot (not DNS queries): dropped
        self.batched_io = mmsg.available() if batched_io is None else batched_io
        self._mb: mmsg.MsgBatch | None = None
        self._addrs: dict[Any, tuple[Any, ...]] = {}
        self._backlog: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self.rrl = rrl  # response rate limiting (None: off)

    async def start(self) -> None:
        self.sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM, self.reuse_port)
        self.port = self.sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        if self.batched_io:
            self._mb = mmsg.MsgBatch(BATCH, 16 if self.sock.family == socket.AF_INET else 28)
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
        # slicing the ctypes receive buffer gives bytes in one step (half a memoryview's cost)
        r32, n64, rbuf, smv = b.r32, b.n64, b.rbuf, b.smv
        s64, siov64, nbase = b.s64, b.siov64, b.nbase
        addrs = self._addrs
        v4 = b.namelen == 16
        namelen = b.namelen
        slot, out_slot, name = mmsg.SLOT, mmsg.OUT_SLOT, mmsg.NAME
        lim = self.rrl
        if lim is not None:
            rl_check, rl_key6, mask4 = lim.check, lim.key_v6, lim.mask4
        for _ in range(ROUNDS):
            n = b.recv(fd)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        log.debug("udp recvmmsg: %s", errno.errorcode.get(err, err))
                return
            t0 = fp.begin()
            if lim is not None:
                now = time.monotonic()
            j = 0
            moved = False  # an answer slot re-pointed at another datagram's sender
            dests: list[Any] = []
            lens = r32[14:16 * n:16]  # every msg_len (and IPv4 sockaddr) in one slice
            keys = n64[0:4 * n:4] if v4 else None
            for i in range(n):
                ln = lens[i]
                if ln >= slot:
                    self.oversize += 1
                    continue
                off = i * slot
                ak = keys[i] if keys is not None else bytes(b.nmv[i * name:i * name + 28])
                addr = addrs.get(ak)
                if addr is None:
                    addr = mmsg.decode_name(bytes(b.nmv[i * name:i * name + namelen]))
                    if len(addrs) >= _ADDRS_MAX:
                        addrs.clear()
                    addrs[ak] = addr
                try:
                    if lim is not None and (verdict := rl_check(
                            (ak >> 32) & mask4 if v4 else rl_key6(ak), now)):
                        if verdict == rrl_mod.DROP:
                            continue
                        r = rrl_mod.tc_reply(rbuf[off:off + ln])  # slip: TC=1, try TCP
                    else:
                        tail = hit(addr[0], rbuf[off + 2:off + ln], t0)
                        if tail is not None:
                            so = j * out_slot
                            tl = len(tail)
                            if tl + 2 <= out_slot:
                                smv[so:so + 2 + tl] = rbuf[off:off + 2] + tail
                                siov64[2 * j + 1] = tl + 2
                                if j != i:
                                    s64[8 * j] = nbase + i * name
                                    moved = True
                                dests.append(addr)
                                j += 1
                            else:
                                self._send(rbuf[off:off + 2] + tail, addr)
                            continue
                        r = answer(rbuf[off:off + ln], addr[0], "udp")
                except Exception:
                    log.exception("answering a UDP packet from %s failed", addr[0])
                    self.errors += 1
                    continue
                if r is None:
                    continue
                if type(r) is bytes:
                    rl = len(r)
                    if rl <= out_slot:
                        so = j * out_slot
                        smv[so:so + rl] = r
                        siov64[2 * j + 1] = rl
                        if j != i:
                            s64[8 * j] = nbase + i * name
                            moved = True
                        dests.append(addr)
                        j += 1
                    else:
                        self._send(r, addr)
                    continue
                task = asyncio.ensure_future(r)
                self.inflight.add(task)
                task.add_done_callback(lambda t, a=addr: self._done(t, a))
            if j:
                self._flush_slots(j, dests)
            if moved:
                b.restore_names(j)
            fp.settle(t0, n)
            if n < b.n:
                return

    def _flush_slots(self, count: int, dests: list[Any]) -> None:
        """sendmmsg the filled answer slots; what the kernel does not take joins the backlog."""
        b = self._mb
        assert b is not None and self.sock is not None
        sent = 0
        if not self._backlog:
            sent = b.send(self.sock.fileno(), count)
            if sent < 0:
                err = ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    # one bad destination fails the call: send one by one to find it
                    log.debug("udp sendmmsg: %s", errno.errorcode.get(err, err))
                    for k in range(count):
                        ln = b.siov64[2 * k + 1]
                        self._send(bytes(b.smv[k * mmsg.OUT_SLOT:k * mmsg.OUT_SLOT + ln]),
                                   dests[k])
                    return
                sent = 0
        for k in range(sent, count):
            ln = b.siov64[2 * k + 1]
            self._queue(bytes(b.smv[k * mmsg.OUT_SLOT:k * mmsg.OUT_SLOT + ln]), dests[k])

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
