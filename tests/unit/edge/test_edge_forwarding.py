"""The edge answers over UDP and TCP, caches raw answers, and publishes one event per query."""

from __future__ import annotations

import asyncio
import socket

import dns.asyncquery
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.schema import EVENT_FIELDS, parse_event
from harness.fake_upstream import FakeUpstream


async def udp(port: int, name: str, rtype: str = "A", **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rtype, **kw)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)


async def events(bus: MemoryBus, svc, n: int) -> list[dict]:
    for _ in range(100):
        if svc.publisher.published >= n:
            break
        await asyncio.sleep(0.02)
    topic = bus.topic("t.events")
    return [orjson.loads(m.value) | {"_key": m.key} for p in topic.partitions for m in p]


async def test_udp_answer_is_forwarded_then_served_from_cache(start_edge, upstream: FakeUpstream,
                                                              bus: MemoryBus) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    r1 = await udp(port, "web.shop.svc.cluster.local")
    assert r1.rcode() == dns.rcode.NOERROR
    assert [str(rr) for rr in r1.answer[0]] == ["10.96.1.10"]
    assert upstream.count("web.shop.svc.cluster.local") == 1
    # Same question in another letter case (0x20): cache hit, case echoed, new ID echoed
    q = dns.message.make_query("WeB.ShOp.SvC.cluster.LOCAL", "A")
    r2 = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r2.id == q.id
    assert r2.question[0].name.to_text() == "WeB.ShOp.SvC.cluster.LOCAL."
    assert r2.answer[0].name.to_text() == "WeB.ShOp.SvC.cluster.LOCAL."
    assert [str(rr) for rr in r2.answer[0]] == ["10.96.1.10"]
    assert upstream.count("web.shop.svc.cluster.local") == 1
    assert svc.status()["cache"]["hits"] == 1
    evs = await events(bus, svc, 2)
    assert len(evs) == 2
    for ev in evs:
        assert set(EVENT_FIELDS) <= set(ev)
        parse_event({k: v for k, v in ev.items() if k != "_key"})
        assert ev["_key"] == b"shop"
        assert ev["tenant"] == "shop" and ev["namespace"] == "shop" and ev["pod"] == "web-1"
        assert ev["qname"] == "web.shop.svc.cluster.local"
        assert ev["transport"] == "udp" and ev["edge"] == "edge-test"
        assert ev["answers"] == ["A 10.96.1.10"]
    assert sorted(ev["cache"] for ev in evs) == ["hit", "miss"]
    assert svc.status()["events"]["published"] == 2


async def test_ttl_counts_down_in_cached_answers(start_edge, upstream: FakeUpstream) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    r1 = await udp(port, "example.com")
    assert r1.answer[0].ttl == 120
    await asyncio.sleep(1.1)
    r2 = await udp(port, "example.com")
    assert r2.answer[0].ttl in (118, 119)
    # the same packet again is served by the memoised fast path: it counts down too
    q = dns.message.make_query("example.com", "A")
    for _ in range(2):
        await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    await asyncio.sleep(1.1)
    q.id = (q.id + 1) % 65536
    r3 = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r3.id == q.id and r3.answer[0].ttl in (117, 118)
    assert svc.resolver.fast.answered >= 2
    assert upstream.count("example.com") == 1


async def test_negative_answers_are_cached_with_soa(start_edge, upstream: FakeUpstream) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    for _ in range(3):
        r = await udp(port, "nope.example.com")
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA
    assert upstream.count("nope.example.com") == 1


async def test_tcp_pipelined_queries(start_edge) -> None:
    svc = await start_edge()
    port = svc.status()["tcp_port"]
    assert port == svc.status()["udp_port"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    names = ["web.shop.svc.cluster.local", "example.com", "nope.example.com"]
    queries = [dns.message.make_query(n, "A") for n in names]
    for q in queries:  # all written before any answer is read (pipelining)
        wire = q.to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
    await writer.drain()
    got = {}
    for _ in names:
        ln = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 3), "big")
        msg = dns.message.from_wire(await reader.readexactly(ln))
        got[msg.id] = msg
    writer.close()
    assert {q.id for q in queries} == set(got)
    assert got[queries[2].id].rcode() == dns.rcode.NXDOMAIN
    assert str(got[queries[1].id].answer[0][0]) == "93.184.216.34"


async def test_truncated_over_udp_then_full_answer_over_tcp(start_edge) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    q = dns.message.make_query("big.example.com", "TXT")  # no EDNS: 512-byte limit
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.flags & dns.flags.TC
    assert not r.answer
    r2 = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    assert not r2.flags & dns.flags.TC
    assert len(r2.answer[0]) == 6
    # a large EDNS buffer does not lift the 1232-byte cap (issue #11: amplification) ...
    q3 = dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=4096)
    r3 = await dns.asyncquery.udp(q3, "127.0.0.1", port=port, timeout=3)
    assert r3.flags & dns.flags.TC and not r3.answer and len(r3.to_wire()) <= 1232
    # ... unless the operator raises it: then the same answer fits in UDP
    big = await start_edge(max_udp_size=4096, name="edge-big")
    r4 = await dns.asyncquery.udp(q3, "127.0.0.1", port=big.status()["udp_port"], timeout=3)
    assert not r4.flags & dns.flags.TC and len(r4.answer[0]) == 6


async def test_malformed_packets_get_formerr_or_are_dropped(start_edge) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            got.put_nowait(data)

    t, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    two = dns.message.make_query("example.com", "A")
    two.question.append(dns.message.make_query("example.org", "A").question[0])
    t.sendto(two.to_wire())
    r = dns.message.from_wire(await asyncio.wait_for(got.get(), 3))
    assert r.id == two.id and r.rcode() == dns.rcode.FORMERR
    t.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07exam")  # cut question
    raw = await asyncio.wait_for(got.get(), 3)
    assert raw[:2] == b"\x12\x34" and raw[3] & 0x0F == dns.rcode.FORMERR
    t.sendto(b"\x00")  # shorter than a header: dropped, the edge keeps serving
    r = await udp(port, "example.com")
    assert r.rcode() == dns.rcode.NOERROR
    t.close()
    assert svc.status()["queries"]["formerr"] == 2


async def test_upstream_timeout_answers_servfail(start_edge, upstream: FakeUpstream) -> None:
    svc = await start_edge(upstream_timeout=0.3)
    upstream.silent = True
    r = await udp(svc.status()["udp_port"], "example.com")
    assert r.rcode() == dns.rcode.SERVFAIL


async def test_unknown_clients_get_the_default_tenant(start_edge, tmp_path, bus) -> None:
    m = tmp_path / "other.yaml"
    m.write_text("default: {tenant: guests, namespace: lobby}\n"
                 "clients: [{cidr: 10.0.0.0/8, tenant: shop}]\n")
    svc = await start_edge(tenant_map=str(m))
    await udp(svc.status()["udp_port"], "example.com")
    evs = await events(bus, svc, 1)
    assert evs[0]["tenant"] == "guests" and evs[0]["namespace"] == "lobby"


async def test_tcp_idle_connections_are_closed(start_edge) -> None:
    svc = await start_edge(idle_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.status()["tcp_port"])
    assert await asyncio.wait_for(reader.read(), 3) == b""   # server closed it
    writer.close()


async def test_badvers_and_notimp(start_edge) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    q = dns.message.make_query("example.com", "A", use_edns=1)
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.BADVERS
    q = dns.message.make_query("example.com", "A")
    q.set_opcode(dns.opcode.STATUS)
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.NOTIMP


async def test_tenant_map_edits_apply_live(start_edge, tmp_path, bus) -> None:
    m = tmp_path / "live.yaml"
    m.write_text("clients: [{cidr: 127.0.0.0/8, tenant: shop, namespace: shop}]\n")
    svc = await start_edge(tenant_map=str(m))
    assert svc.identity.lookup("127.0.0.1").tenant == "shop"
    m.write_text("clients: [{cidr: 127.0.0.0/8, tenant: blue, namespace: blue-ns}]\n")
    for _ in range(60):
        if svc.identity.lookup("127.0.0.1").tenant == "blue":
            break
        await asyncio.sleep(0.1)
    assert svc.identity.lookup("127.0.0.1").tenant == "blue"
    m.write_text("clients: [{cidr: not-a-cidr, tenant: x}]\n")   # a bad edit is ignored
    await asyncio.sleep(2.5)
    assert svc.identity.lookup("127.0.0.1").tenant == "blue"


async def test_upstream_queries_use_several_rotating_source_ports(start_edge, upstream) -> None:
    svc = await start_edge(cache_size=1)
    up = svc.pool.upstreams[0]
    up.rotate = 5
    port = svc.status()["udp_port"]
    for i in range(30):
        r = await udp(port, f"n{i}.example.com")
        assert r.rcode() == dns.rcode.NXDOMAIN
    # 4 live sockets hold at most 4 uses each; every retired one took 5: >= 3 retired
    assert up.sockets_opened >= 4 + 3
    # never more than the pool size; one short when the last pick retired its socket (the
    # next pick replaces it)
    assert len(up._socks) in (3, 4)


async def test_ipv6_loopback_listener(start_edge, bus) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    svc = await start_edge(listen="[::1]:0")
    assert svc.status()["listen"].startswith("[::1]:")
    q = dns.message.make_query("example.com", "A")
    r = await dns.asyncquery.udp(q, "::1", port=svc.status()["udp_port"], timeout=3)
    assert str(r.answer[0][0]) == "93.184.216.34"
    r = await dns.asyncquery.tcp(q, "::1", port=svc.status()["tcp_port"], timeout=3)
    assert str(r.answer[0][0]) == "93.184.216.34"
    evs = await events(bus, svc, 2)
    assert {e["client_ip"] for e in evs} == {"::1"}
    assert {e["tenant"] for e in evs} == {"guests"}   # not in the IPv4 tenant map
