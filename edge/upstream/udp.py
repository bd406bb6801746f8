"""UDP upstream: random IDs over a rotating pool of sockets, TCP fallback on TC=1.

Why a pool: with one long-lived socket the source port is fixed and a forged answer only has
to guess the 16-bit ID; spreading queries over several sockets whose ephemeral ports are
replaced every ``ROTATE`` queries adds source-port entropy (RFC 5452) at no per-query cost.
Each socket is connected, so the kernel drops datagrams from any other address.
"""

from __future__ import annotations

import asyncio
import random

from dnsflow.edge.upstream.base import (
    Upstream,
    UpstreamAddr,
    UpstreamError,
    check_reply,
    question_bytes,
    reply_matches,
)
from dnsflow.edge.upstream.stream import StreamUpstream

POOL = 4
ROTATE = 2_000

_rand = random.SystemRandom()   # IDs: unpredictable (getrandom)
_pick_rand = random.Random()     # which socket: cheap is enough


def _expire(fut: asyncio.Future[bytes], name: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(UpstreamError(f"{name}: timeout after {timeout:.1f}s"))


class _Sock(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpUpstream) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.questions: dict[bytes, bytes] = {}   # ID -> the question its reply must carry
        self.uses = 0
        self.retired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 12:
            return
        fut = self.pending.get(data[:2])
        if fut is None or fut.done():
            return
        if not reply_matches(self.questions[data[:2]], data):
            # right ID, wrong question (forged or stray): keep waiting for the genuine one
            self.owner.mismatched += 1
            return
        fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        for fut in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(UpstreamError(f"{self.owner.name}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def done_with(self, qid: bytes) -> None:
        self.pending.pop(qid, None)
        self.questions.pop(qid, None)
        if self.retired and not self.pending and self.transport is not None:
            self.transport.close()


class UdpUpstream(Upstream):
    def __init__(self, addr: UpstreamAddr, pool: int = POOL, rotate: int = ROTATE) -> None:
        super().__init__(addr)
        self.pool_size = pool
        self.rotate = rotate
        self._socks: list[_Sock] = []
        self._tcp = StreamUpstream(UpstreamAddr("tcp", addr.host, addr.port))
        self.tcp_fallbacks = 0
        self.sockets_opened = 0
        self.mismatched = 0
        self._fill = asyncio.Lock()

    async def _open(self) -> _Sock:
        loop = asyncio.get_running_loop()
        _, sock = await loop.create_datagram_endpoint(
            lambda: _Sock(self), remote_addr=(self.addr.host, self.addr.port))
        self.sockets_opened += 1
        return sock

    async def _pick(self) -> _Sock:
        """A socket of the pool. The pool never holds more than ``pool_size`` sockets:
        concurrent misses wait for one filler instead of each opening its own, and a socket
        past ``rotate`` uses leaves the pool (closing once its last answer is in) and is
        replaced by the next pick."""
        socks = self._socks
        if len(socks) < self.pool_size or any(x.transport is None for x in socks):
            async with self._fill:
                socks[:] = [x for x in socks if x.transport is not None]
                while len(socks) < self.pool_size:
                    socks.append(await self._open())
        s = socks[_pick_rand.randrange(len(socks))]
        s.uses += 1
        if s.uses >= self.rotate and not s.retired:
            s.retired = True    # carries this query, then closes (done_with)
            socks.remove(s)
        return s

    async def query(self, packet: bytes, timeout: float) -> bytes:
        s = await self._pick()
        loop = asyncio.get_running_loop()
        qid = _rand.getrandbits(16).to_bytes(2, "big")
        for _ in range(8):
            if qid not in s.pending:
                break
            qid = _rand.getrandbits(16).to_bytes(2, "big")
        packet = qid + packet[2:]
        fut: asyncio.Future[bytes] = loop.create_future()
        s.pending[qid] = fut
        s.questions[qid] = question_bytes(packet)
        # a timer on the future itself: cheaper than asyncio.wait_for on the miss path
        timer = loop.call_later(timeout, _expire, fut, self.name, timeout)
        try:
            assert s.transport is not None
            s.transport.sendto(packet)
            reply = await fut
        finally:
            timer.cancel()
            s.done_with(qid)
        check_reply(packet, reply)
        if reply[2] & 0x02:  # TC: retry over TCP (RFC 7766)
            self.tcp_fallbacks += 1
            reply = await self._tcp.query(packet, timeout)
        return reply

    async def close(self) -> None:
        for s in self._socks:
            if s.transport is not None:
                s.transport.close()
        self._socks.clear()
        await self._tcp.close()
