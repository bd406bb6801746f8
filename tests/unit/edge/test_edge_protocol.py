"""Issue #11, protocol part: the edge behaves like a trusted recursive resolver, in front of
honest, authoritative and hostile upstreams. A hostile upstream here is a small UDP server
on 127.0.0.1 whose handler returns the crafted datagrams to send for each query; every
client reply is checked with dnspython (``dns.message.from_wire``)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from dnsflow.edge import wire
from dnsflow.edge.upstream.base import parse_upstream
from dnsflow.edge.upstream.pool import UpstreamPool
from dnsflow.edge.upstream.udp import UdpUpstream
from tests.helpers.dns_client import udp_exchange

Handler = Callable[[dns.message.Message, bytes], list[bytes]]


class Hostile:
    """A UDP 'upstream' sending whatever ``handler(query, raw)`` returns, in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.asked: list[str] = []
        self._t: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def count(self, name: str) -> int:
        return self.asked.count(name.lower().rstrip("."))

    async def start(self) -> Hostile:
        owner = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                try:
                    q = dns.message.from_wire(data)
                except Exception:
                    return
                owner.asked.append(q.question[0].name.to_text().lower().rstrip("."))
                for out in owner.handler(q, data):
                    self.t.sendto(out, addr)

        self._t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Proto, local_addr=("127.0.0.1", 0))
        self.port = self._t.get_extra_info("sockname")[1]
        return self

    def stop(self) -> None:
        if self._t is not None:
            self._t.close()


def reply(q: dns.message.Message, *rrs: str, rcode: int = 0, aa: bool = False,
          ra: bool = True, ad: bool = False, soa: bool = False) -> dns.message.Message:
    r = dns.message.make_response(q)
    r.flags = dns.flags.QR | (q.flags & dns.flags.RD) | (dns.flags.AA if aa else 0) | (
        dns.flags.RA if ra else 0) | (dns.flags.AD if ad else 0)
    r.set_rcode(rcode)
    name = q.question[0].name.to_text()
    for rr in rrs:
        ttl, rtype, data = rr.split(" ", 2)
        r.answer.append(dns.rrset.from_text(name, int(ttl), "IN", rtype, data))
    if soa or (rcode == dns.rcode.NXDOMAIN):
        r.authority.append(dns.rrset.from_text("example.", 30, "IN", "SOA",
                                               "ns.example. h.example. 1 2 3 4 30"))
    return r


def normal(q: dns.message.Message, raw: bytes) -> list[bytes]:
    """Honest behaviour: `. NS` (health checks) NOERROR, names under nx. NXDOMAIN, others A."""
    name = q.question[0].name.to_text()
    if name == ".":
        return [reply(q).to_wire()]
    if "nx." in name or name.startswith("nope"):
        return [reply(q, rcode=dns.rcode.NXDOMAIN).to_wire()]
    return [reply(q, "300 A 192.0.2.1").to_wire()]


@pytest.fixture
async def hostile():
    made: list[Hostile] = []

    async def make(handler: Handler) -> Hostile:
        h = await Hostile(handler).start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


async def udp(svc, packet: bytes | dns.message.Message, timeout: float = 4.0) -> bytes:
    """Raw reply to one UDP query; it must parse with dnspython, strictly."""
    wire_q = packet.to_wire() if isinstance(packet, dns.message.Message) else packet
    out = await udp_exchange(svc.status()["udp_port"], wire_q, timeout)
    assert out is not None, f"no reply within {timeout}s"
    dns.message.from_wire(out, ignore_trailing=False)
    assert out[:2] == wire_q[:2]
    return out


async def ask(svc, name: str, rtype: str = "A", **kw: Any) -> dns.message.Message:
    flags = kw.pop("flags", 0)
    q = dns.message.make_query(name, rtype, **kw)
    q.flags |= flags
    return dns.message.from_wire(await udp(svc, q))


# -- header bits -------------------------------------------------------------------------
async def test_header_bits_are_a_recursive_resolvers(start_edge, hostile) -> None:
    """An authoritative upstream's AA=1/RA=0 never reach clients (nor from cache); CD is
    echoed; AD (set by a 'validating' upstream) only for a client that set AD or DO."""
    def auth(q: dns.message.Message, raw: bytes) -> list[bytes]:
        validated = bool(q.flags & dns.flags.AD or q.ednsflags & dns.flags.DO)
        return [reply(q, "300 A 192.0.2.1", aa=True, ra=False, ad=validated).to_wire()]

    up = await hostile(auth)
    svc = await start_edge(upstreams=[up.address])
    for _ in range(2):  # miss, then cache hit
        r = await ask(svc, "www.example")
        assert r.flags & dns.flags.RA and not r.flags & dns.flags.AA
        assert not r.flags & dns.flags.AD
        r = await ask(svc, "www.example", flags=dns.flags.AD, use_edns=0)  # AD=1, no DO
        assert r.flags & dns.flags.AD and r.flags & dns.flags.RA
        r = await ask(svc, "www.example", want_dnssec=True)
        assert r.flags & dns.flags.AD
        r = await ask(svc, "www.example", flags=dns.flags.CD, use_edns=0)
        assert r.flags & dns.flags.CD and not r.flags & dns.flags.AA
    assert up.count("www.example") == 4


# -- failover on bad replies, SERVFAIL only when all fail ----------------------------------
def refused(q: dns.message.Message, raw: bytes) -> list[bytes]:
    return [reply(q, rcode=dns.rcode.REFUSED).to_wire()] if q.question[0].name.to_text() != "." \
        else normal(q, raw)


def servfail(q: dns.message.Message, raw: bytes) -> list[bytes]:
    return [reply(q, rcode=dns.rcode.SERVFAIL).to_wire()] if q.question[0].name.to_text() != "." \
        else normal(q, raw)


def header_only(q: dns.message.Message, raw: bytes) -> list[bytes]:
    if q.question[0].name.to_text() == ".":
        return normal(q, raw)
    return [struct.pack("!HHHHHH", q.id, 0x8182, 0, 0, 0, 0)]   # SERVFAIL, no question


@pytest.mark.parametrize("first", [refused, servfail, header_only])
async def test_a_failing_upstream_hands_over_to_the_next(start_edge, hostile, first) -> None:
    bad, good = await hostile(first), await hostile(normal)
    svc = await start_edge(upstreams=[bad.address, good.address])
    r = await ask(svc, "www.example")
    assert r.rcode() == dns.rcode.NOERROR and str(r.answer[0][0]) == "192.0.2.1"
    assert bad.count("www.example") == 1 and good.count("www.example") == 1
    # the upstream answered: a name-level failure is not a health failure
    assert svc.status()["upstreams"][bad.address]["up"] is True


async def test_servfail_only_when_every_upstream_fails(start_edge, hostile) -> None:
    ups = [await hostile(h) for h in (refused, header_only, servfail)]
    svc = await start_edge(upstreams=[u.address for u in ups])
    for name in ("www.example", "www.example"):
        r = await ask(svc, name)  # well-formed, with the question (udp() parsed it)
        assert r.rcode() == dns.rcode.SERVFAIL and len(r.question) == 1
    assert all(u.count("www.example") == 2 for u in ups)  # never cached


async def test_serve_stale_when_the_upstream_answers_servfail(start_edge, hostile) -> None:
    state = {"broken": False}

    def flaky(q: dns.message.Message, raw: bytes) -> list[bytes]:
        if state["broken"] and q.question[0].name.to_text() != ".":
            return servfail(q, raw)
        return [reply(q, "1 A 192.0.2.1").to_wire()]

    up = await hostile(flaky)
    svc = await start_edge(upstreams=[up.address], serve_stale=True)
    assert str((await ask(svc, "www.example")).answer[0][0]) == "192.0.2.1"
    await asyncio.sleep(1.2)
    state["broken"] = True
    r = await ask(svc, "www.example")
    assert r.rcode() == dns.rcode.NOERROR and str(r.answer[0][0]) == "192.0.2.1"
    assert r.answer[0].ttl == 30  # RFC 8767 stale TTL
    assert up.count("www.example") == 2


# -- CHAOS -----------------------------------------------------------------------------
async def test_chaos_identity_is_answered_locally(start_edge, hostile) -> None:
    def leaky(q: dns.message.Message, raw: bytes) -> list[bytes]:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 0, "CH", "TXT",
                                            '"upstream-secret 9.9"'))
        return [r.to_wire()]

    up = await hostile(leaky)
    svc = await start_edge(upstreams=[up.address])
    for name in ("version.bind", "version.server", "id.server", "hostname.bind"):
        r = await ask(svc, name, "TXT", rdclass="CH")
        assert r.rcode() == dns.rcode.REFUSED and not r.answer, name
    assert (await ask(svc, "authors.bind", "TXT", rdclass="CH")).rcode() == dns.rcode.REFUSED
    assert up.asked == []
    shown = await start_edge(upstreams=[up.address], name="edge-shown",
                             chaos_version="dnsflow", chaos_identity="edge-7")
    r = await ask(shown, "version.bind", "TXT", rdclass="CH")
    assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].strings == (b"dnsflow",)
    assert r.answer[0].rdclass == dns.rdataclass.CH
    r = await ask(shown, "id.server", "TXT", rdclass="CH")
    assert r.answer[0][0].strings == (b"edge-7",)
    assert up.asked == []


# -- opcodes and strict query parsing ------------------------------------------------------
async def test_status_opcode_is_notimp(start_edge) -> None:
    svc = await start_edge()
    q = dns.message.make_query("www.example", "A", use_edns=0)
    q.set_opcode(dns.opcode.STATUS)
    r = dns.message.from_wire(await udp(svc, q))
    assert r.rcode() == dns.rcode.NOTIMP and r.edns == 0   # with OPT
    header_only = struct.pack("!HHHHHH", 0x1234, 2 << 11, 0, 0, 0, 0)
    r = dns.message.from_wire(await udp(svc, header_only))
    assert r.rcode() == dns.rcode.NOTIMP and r.opcode() == dns.opcode.STATUS


def _two_opts() -> bytes:
    p = bytearray(dns.message.make_query("www.example", "A", use_edns=0).to_wire())
    struct.pack_into("!H", p, 10, 2)
    return bytes(p) + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


@pytest.mark.parametrize("packet,rcode", [
    (dns.message.make_query("www.example", "A").to_wire() + b"junk", dns.rcode.FORMERR),
    (dns.message.make_query("www.example", "A", use_edns=0).to_wire() + b"\x00",
     dns.rcode.FORMERR),
    (dns.message.make_query("www.example", 0).to_wire(), dns.rcode.FORMERR),
    (dns.message.make_query("www.example", "A", rdclass=99).to_wire(), dns.rcode.REFUSED),
    (dns.message.make_query("www.example", "A", rdclass=4).to_wire(), dns.rcode.REFUSED),
    (_two_opts(), dns.rcode.FORMERR),
], ids=["trailing", "trailing-after-opt", "type0", "class99", "classHS", "two-opt"])
async def test_queries_are_parsed_strictly(start_edge, hostile, packet, rcode) -> None:
    up = await hostile(normal)
    svc = await start_edge(upstreams=[up.address])
    r = dns.message.from_wire(await udp(svc, packet))
    assert r.rcode() == rcode and not r.answer
    assert up.count("www.example") == 0   # nothing built from what did not parse


# -- TTLs ------------------------------------------------------------------------------
async def test_ttls_top_bit_is_zero_and_ttls_are_capped(start_edge, hostile) -> None:
    def ttls(q: dns.message.Message, raw: bytes) -> list[bytes]:
        name = q.question[0].name.to_text()
        ttl = {"huge.example.": 0x80000010, "long.example.": 10 * 86400}.get(name, 300)
        return [reply(q, f"{ttl} A 192.0.2.1").to_wire()]

    up = await hostile(ttls)
    svc = await start_edge(upstreams=[up.address])
    raw = await udp(svc, dns.message.make_query("huge.example", "A"))
    ttl_at = 12 + len(dns.name.from_text("huge.example").to_wire()) + 4 + 6  # c00c type class
    assert struct.unpack_from("!I", raw, ttl_at)[0] == 0   # on the wire, not 2**31 + 16
    for _ in range(2):
        r = await ask(svc, "long.example")
        assert r.answer[0].ttl in (86400, 86399)
    assert up.count("long.example") == 1
    small = await start_edge(upstreams=[up.address], name="edge-cap", max_cache_ttl=60)
    assert (await ask(small, "long.example")).answer[0].ttl == 60


# -- hostile upstream replies -------------------------------------------------------------
def _raw_answer(q: dns.message.Message, rr: bytes, *, qd: int = 1, extra: bytes = b"",
                ar: int = 0) -> bytes:
    """A reply built by hand: header, the query's question, one answer RR ``rr``."""
    question = q.to_wire()[12:]
    question = question[:len(q.question[0].name.to_wire()) + 4]
    head = struct.pack("!HHHHHH", q.id, 0x8180, qd, 1, 0, ar)
    return head + question * qd + rr + extra


def _rr(rtype: int, rdata: bytes, rdlen: int | None = None) -> bytes:
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 300,
                                     len(rdata) if rdlen is None else rdlen) + rdata


OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
BAD_REPLIES: dict[str, Callable[[dns.message.Message], bytes]] = {
    "truncated-mx-rdata": lambda q: _raw_answer(q, _rr(15, b"\x00")),
    "truncated-a-rdata": lambda q: _raw_answer(q, _rr(1, b"\xc0\x00\x02")),
    "rdlength-past-end": lambda q: _raw_answer(q, _rr(1, b"\xc0\x00\x02\x01", rdlen=40)),
    "txt-past-rdata": lambda q: _raw_answer(q, _rr(16, b"\x20abc")),
    "qdcount-2": lambda q: _raw_answer(q, _rr(1, b"\xc0\x00\x02\x01"), qd=2),
    "two-opt": lambda q: _raw_answer(q, _rr(1, b"\xc0\x00\x02\x01"), extra=OPT + OPT, ar=2),
    "trailing-junk": lambda q: _raw_answer(q, _rr(1, b"\xc0\x00\x02\x01"), extra=b"junk"),
    "opt-in-answer": lambda q: _raw_answer(q, OPT),
}


@pytest.mark.parametrize("kind", list(BAD_REPLIES))
async def test_malformed_upstream_replies_are_neither_relayed_nor_cached(
        start_edge, hostile, kind) -> None:
    def bad(q: dns.message.Message, raw: bytes) -> list[bytes]:
        if q.question[0].name.to_text() == ".":
            return normal(q, raw)
        return [BAD_REPLIES[kind](q)]

    up, good = await hostile(bad), await hostile(normal)
    only_bad = await start_edge(upstreams=[up.address], name="edge-bad", upstream_timeout=0.5)
    for _ in range(2):
        r = await ask(only_bad, "www.example")  # parsed by dnspython inside udp()
        assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
    assert up.count("www.example") == 2       # not cached
    both = await start_edge(upstreams=[up.address, good.address])
    r = await ask(both, "www.example")
    assert r.rcode() == dns.rcode.NOERROR and str(r.answer[0][0]) == "192.0.2.1"


async def test_a_forged_reply_with_the_wrong_question_does_not_fail_the_query(
        start_edge, hostile) -> None:
    def forger(q: dns.message.Message, raw: bytes) -> list[bytes]:
        if q.question[0].name.to_text() == ".":
            return normal(q, raw)
        fake = dns.message.make_query("evil.example", "A")
        fake.id = q.id
        forged = reply(fake, "300 A 203.0.113.66")
        return [forged.to_wire(), reply(q, "300 A 192.0.2.1").to_wire()]

    up = await hostile(forger)
    svc = await start_edge(upstreams=[up.address])
    r = await ask(svc, "www.example")
    assert r.rcode() == dns.rcode.NOERROR and str(r.answer[0][0]) == "192.0.2.1"
    assert svc.pool.upstreams[0].mismatched == 1


# -- health ------------------------------------------------------------------------------
async def test_one_clients_unanswerable_names_do_not_mark_the_upstream_down(
        start_edge, hostile) -> None:
    def blackhole(q: dns.message.Message, raw: bytes) -> list[bytes]:
        if "blackhole" in q.question[0].name.to_text():
            return []            # never answered: a timeout
        return normal(q, raw)

    up = await hostile(blackhole)
    svc = await start_edge(upstreams=[up.address], upstream_timeout=0.3)
    for i in range(5):
        r = await ask(svc, f"n{i}.blackhole.example")
        assert r.rcode() == dns.rcode.SERVFAIL
    await asyncio.sleep(0.3)  # the health checks the timeouts started
    st = svc.status()["upstreams"][up.address]
    assert st["up"] is True and st["errors"] == 5
    assert svc.readiness()[0] is True
    assert (await ask(svc, "www.example")).rcode() == dns.rcode.NOERROR


async def test_an_upstream_that_stops_answering_is_marked_down(start_edge, hostile) -> None:
    state = {"dead": False}

    def dies(q: dns.message.Message, raw: bytes) -> list[bytes]:
        return [] if state["dead"] else normal(q, raw)

    up, good = await hostile(dies), await hostile(normal)
    svc = await start_edge(upstreams=[up.address, good.address], upstream_timeout=0.6)
    state["dead"] = True
    assert (await ask(svc, "a.example")).rcode() == dns.rcode.NOERROR   # via the second
    for _ in range(40):
        if not svc.status()["upstreams"][up.address]["up"]:
            break
        await asyncio.sleep(0.1)
    assert svc.status()["upstreams"][up.address]["up"] is False


# -- socket pool ---------------------------------------------------------------------------
async def test_udp_socket_pool_stays_bounded_under_concurrent_misses(hostile) -> None:
    up = await hostile(normal)
    u = UdpUpstream(parse_upstream(up.address), pool=4, rotate=10)
    try:
        qs = [wire.make_query(f"n{i}.example", wire.T_A) for i in range(200)]
        replies = await asyncio.gather(*[u.query(p, 2.0) for p in qs])
        assert len(replies) == 200
        assert len(u._socks) <= 4
        open_socks = [s for s in u._socks if s.transport is not None]
        assert len(open_socks) <= 4
        # 200 queries, rotation every 10 uses per socket: about 200/10 sockets, not more
        assert u.sockets_opened <= 4 + 200 // 10
    finally:
        await u.close()


# -- isolation -----------------------------------------------------------------------------
TENANTS = """
default: {tenant: guests, namespace: guests}
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.0/8, tenant: shop, namespace: shop, pod: web-1}
"""


@pytest.mark.parametrize("probe_answer", ["refused", "servfail", "wildcard", "nxdomain"])
async def test_isolation_is_indistinguishable_from_absence(start_edge, hostile, tmp_path: Path,
                                                           probe_answer) -> None:
    """Whatever the upstream does with a missing name, a hidden one gets the same: rcode,
    sections and class, for IN and CH."""
    def zone(q: dns.message.Message, raw: bytes) -> list[bytes]:
        name = q.question[0].name.to_text()
        if name == ".":
            return normal(q, raw)
        if name == "ledger.payments.svc.cluster.local.":
            return [reply(q, "300 A 10.96.2.10").to_wire()]
        if probe_answer == "wildcard":
            return [reply(q, "300 A 10.96.9.9").to_wire()]
        rcode = {"refused": dns.rcode.REFUSED, "servfail": dns.rcode.SERVFAIL,
                 "nxdomain": dns.rcode.NXDOMAIN}[probe_answer]
        return [reply(q, rcode=rcode).to_wire()]

    up = await hostile(zone)
    m = tmp_path / "tenants.yaml"
    m.write_text(TENANTS)
    svc = await start_edge(upstreams=[up.address], tenant_map=str(m))

    def shape(r: dns.message.Message) -> tuple:
        return (r.rcode(), r.flags, [(x.rdtype, x.rdclass, [str(y) for y in x])
                                     for x in r.answer],
                [(x.rdtype, str(x.name).split(".", 1)[-1]) for x in r.authority])

    for rdclass in ("IN", "CH"):
        for _ in range(2):  # miss, then cache
            hidden = await ask(svc, "ledger.payments.svc.cluster.local", rdclass=rdclass)
            absent = await ask(svc, "ledger.nosuchns.svc.cluster.local", rdclass=rdclass)
            assert hidden.question[0].name.to_text() == "ledger.payments.svc.cluster.local."
            assert shape(hidden)[:2] == shape(absent)[:2], (rdclass, probe_answer)
            assert [a[:2] for a in shape(hidden)[2]] == [a[:2] for a in shape(absent)[2]]
            assert svc.resolver.counters["isolated"] >= 1
            for rr in hidden.answer:
                assert rr.name.to_text() == "ledger.payments.svc.cluster.local."
                assert "10.96.2.10" not in [str(x) for x in rr]


# -- credentials -------------------------------------------------------------------------
def test_doh_credentials_never_appear_in_names() -> None:
    url = "https://user:s3cret@doh.example:8443/dns-query"
    addr = parse_upstream(url)
    assert "s3cret" not in str(addr) and "user" not in str(addr)
    assert str(addr) == "https://doh.example:8443/dns-query"
    assert addr.url == url  # still used for the request itself
    pool = UpstreamPool.from_urls([url])
    assert all("s3cret" not in n for n in pool.names)
    assert all("s3cret" not in n for n in pool.status())
    with pytest.raises(ValueError) as exc:
        parse_upstream("https://user:s3cret@doh.example:99999/dns-query")
    assert "s3cret" not in str(exc.value)
