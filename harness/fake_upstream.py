"""An in-process authoritative DNS server (dnslib, UDP+TCP on loopback) for tests and benches.

Answers from a dict of zone lines; names it does not know get NXDOMAIN with the zone SOA, like
a real authoritative server. Counts the queries it receives so tests can see cache behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable

from dnslib import QTYPE, RCODE, RR, DNSRecord


class FakeUpstream:
    def __init__(self, zone_lines: Iterable[str], soa_zone: str = "cluster.local",
                 host: str = "127.0.0.1", udp_limit: int = 512, delay: float = 0.0) -> None:
        self.records: list[RR] = []
        for line in zone_lines:
            self.records.extend(RR.fromZone(line))
        self.soa_zone = soa_zone.rstrip(".")
        self.soa = RR.fromZone(f"{self.soa_zone}. 30 IN SOA ns.{self.soa_zone}. "
                               f"hostmaster.{self.soa_zone}. 1 7200 1800 86400 30")[0]
        self.host = host
        self.udp_limit = udp_limit
        self.delay = delay
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []   # (transport, qname, qtype)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self.silent = False

    @property
    def address(self) -> str:
        return f"udp://{self.host}:{self.port}"

    def count(self, qname: str | None = None) -> int:
        if qname is None:
            return len(self.queries)
        return sum(1 for _, n, _ in self.queries if n == qname.lower().rstrip("."))

    def answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        qname = str(req.q.qname).lower().rstrip(".")
        self.queries.append((transport, qname, QTYPE.get(req.q.qtype)))
        reply = req.reply()
        found = [r for r in self.records if str(r.rname).lower().rstrip(".") == qname]
        # follow one CNAME level inside the zone
        for r in found:
            if r.rtype == QTYPE.CNAME and req.q.qtype != QTYPE.CNAME:
                target = str(r.rdata).lower().rstrip(".")
                found = found + [x for x in self.records
                                 if str(x.rname).lower().rstrip(".") == target]
        matching = [r for r in found if r.rtype == req.q.qtype or r.rtype == QTYPE.CNAME]
        if not found:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self.soa)
        elif not matching:
            reply.add_auth(self.soa)
        for r in matching:
            reply.add_answer(r)
        out = reply.pack()
        if transport == "udp":
            limit = self.udp_limit
            edns = [r for r in req.ar if r.rtype == QTYPE.OPT]
            if edns:
                limit = max(512, edns[0].rclass)
            if len(out) > limit:
                reply = req.reply()
                reply.header.tc = 1
                out = reply.pack()
        return out

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        owner = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):  # type: ignore[no-untyped-def]
                self.t = transport

            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                if owner.silent:
                    return
                out = owner.answer(data, "udp")
                if out is None:
                    return
                if owner.delay:
                    loop.call_later(owner.delay, self.t.sendto, out, addr)
                else:
                    self.t.sendto(out, addr)


        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while True:
                    (ln,) = struct.unpack("!H", await reader.readexactly(2))
                    out = owner.answer(await reader.readexactly(ln), "tcp")
                    if out is not None and not owner.silent:
                        writer.write(struct.pack("!H", len(out)) + out)
                        await writer.drain()
            writer.close()

        for attempt in range(20):  # the same free port for UDP and TCP
            self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.host, 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(handle, self.host, self.port)
                break
            except OSError:
                self._udp.close()
                if attempt == 19:
                    raise

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
