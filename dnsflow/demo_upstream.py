"""A synthetic authoritative upstream for the offline demo (the machine has no internet).

It plays both kube-dns (``*.svc.cluster.local`` for the demo namespaces, pod PTRs) and "the
internet" (every other name resolves to a stable address derived from its hash), except the
names the demo marks as non-existent (DGA noise) which get NXDOMAIN with an SOA, and TXT
queries which get a short TXT answer (what a tunnelling server would send back).
"""

from __future__ import annotations

import asyncio
import hashlib

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSRecord

CLUSTER_DOMAIN = "cluster.local"


def stable_ip(name: str, base: str = "198.18") -> str:
    """A deterministic address in the benchmarking range 198.18.0.0/15 for ``name``."""
    h = hashlib.blake2s(name.encode(), digest_size=2).digest()
    return f"{base}.{h[0]}.{max(h[1], 1)}"


class DemoZone:
    """Answers for the demo world; ``services`` maps namespace -> {service: cluster IP}."""

    def __init__(self, services: dict[str, dict[str, str]], nxdomain: set[str]) -> None:
        self.services = services
        self.nxdomain = nxdomain
        self.soa = SOA("ns.demo.invalid.", "hostmaster.demo.invalid.", (1, 3600, 600, 86400, 30))

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        qtype = QTYPE[q.qtype]
        if name in self.nxdomain or self._is_nx(name):
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(RR(q.qname, QTYPE.SOA, ttl=30, rdata=self.soa))
            return reply
        svc = self._service(name)
        if svc is not None:
            ip, target = svc
            if qtype == "SRV":
                reply.add_answer(RR(q.qname, QTYPE.SRV, ttl=30, rdata=SRV(0, 100, 80, target)))
            elif qtype in ("A", "ANY"):
                reply.add_answer(RR(q.qname, QTYPE.A, ttl=30, rdata=A(ip)))
            else:
                reply.add_auth(RR(CLUSTER_DOMAIN + ".", QTYPE.SOA, ttl=30, rdata=self.soa))
            return reply
        if name.endswith(".in-addr.arpa"):
            reply.add_answer(RR(q.qname, QTYPE.PTR, ttl=30, rdata=PTR(self._ptr(name))))
            return reply
        if name.endswith("." + CLUSTER_DOMAIN):
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(RR(CLUSTER_DOMAIN + ".", QTYPE.SOA, ttl=30, rdata=self.soa))
            return reply
        if qtype == "A":
            if name.startswith("www.") and name.count(".") == 2:
                canon = "edge." + name[4:]
                reply.add_answer(RR(q.qname, QTYPE.CNAME, ttl=300, rdata=CNAME(canon)))
                reply.add_answer(RR(canon, QTYPE.A, ttl=300, rdata=A(stable_ip(canon))))
            else:
                reply.add_answer(RR(q.qname, QTYPE.A, ttl=300, rdata=A(stable_ip(name))))
        elif qtype == "AAAA":
            h = hashlib.blake2s(name.encode(), digest_size=4).hexdigest()
            addr = AAAA(f"2001:db8::{h[:4]}:{h[4:]}")
            reply.add_answer(RR(q.qname, QTYPE.AAAA, ttl=300, rdata=addr))
        elif qtype == "TXT":
            reply.add_answer(RR(q.qname, QTYPE.TXT, ttl=0, rdata=TXT("ok")))
        else:
            reply.add_auth(RR(q.qname, QTYPE.SOA, ttl=30, rdata=self.soa))
        return reply

    def _is_nx(self, name: str) -> bool:
        return name.endswith(".invalid")

    def _service(self, name: str) -> tuple[str, str] | None:
        suffix = ".svc." + CLUSTER_DOMAIN
        if not name.endswith(suffix):
            return None
        labels = name[: -len(suffix)].split(".")
        labels = [lb for lb in labels if not lb.startswith("_")]
        if len(labels) != 2:
            return None
        service, namespace = labels
        ip = self.services.get(namespace, {}).get(service)
        if ip is None:
            return None
        return ip, f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}."

    def _ptr(self, name: str) -> str:
        octets = name[: -len(".in-addr.arpa")].split(".")[::-1]
        ip = ".".join(octets)
        for namespace, services in self.services.items():
            for service, addr in services.items():
                if addr == ip:
                    return f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}."
        return f"host-{'-'.join(octets)}.demo.invalid."


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, zone: DemoZone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # malformed: an authoritative server would drop it too
            return
        self.queries += 1
        assert self.transport is not None
        self.transport.sendto(self.zone.answer(request).pack(), addr)


class DemoUpstream:
    """UDP server on loopback; ``address`` is ``udp://127.0.0.1:PORT`` once started."""

    def __init__(self, zone: DemoZone, host: str = "127.0.0.1") -> None:
        self.zone = zone
        self.host = host
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.zone), local_addr=(self.host, 0)
        )
        self._transport, self._protocol = transport, protocol
        self.port = transport.get_extra_info("sockname")[1]

    @property
    def address(self) -> str:
        return f"udp://{self.host}:{self.port}"

    @property
    def queries(self) -> int:
        return self._protocol.queries if self._protocol else 0

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
