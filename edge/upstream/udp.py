"""UDP upstream with one socket per upstream, ID-matched replies, and TCP fallback on TC=1."""

from __future__ import annotations

import asyncio
import random

from edge.upstream.base import Upstream, UpstreamAddr, UpstreamError, check_reply
from edge.upstream.stream import StreamUpstream


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpUpstream) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 12:
            return
        fut = self.owner._pending.get(data[:2])
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        for fut in list(self.owner._pending.values()):
            if not fut.done():
                fut.set_exception(UpstreamError(f"{self.owner.name}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._transport = None


class UdpUpstream(Upstream):
    def __init__(self, addr: UpstreamAddr) -> None:
        super().__init__(addr)
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._tcp = StreamUpstream(UpstreamAddr("tcp", addr.host, addr.port))
        self.tcp_fallbacks = 0

    async def _ensure(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Proto(self), remote_addr=(self.addr.host, self.addr.port))
        return self._transport

    async def query(self, packet: bytes, timeout: float) -> bytes:
        transport = await self._ensure()
        loop = asyncio.get_running_loop()
        for _ in range(8):
            qid = random.getrandbits(16).to_bytes(2, "big")
            if qid not in self._pending:
                break
        packet = qid + packet[2:]
        fut: asyncio.Future[bytes] = loop.create_future()
        self._pending[qid] = fut
        try:
            transport.sendto(packet)
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UpstreamError(f"{self.name}: timeout after {timeout:.1f}s") from None
        finally:
            self._pending.pop(qid, None)
        check_reply(packet, reply)
        if reply[2] & 0x02:  # TC: retry over TCP (RFC 7766)
            self.tcp_fallbacks += 1
            reply = await self._tcp.query(packet, timeout)
        return reply

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await self._tcp.close()
