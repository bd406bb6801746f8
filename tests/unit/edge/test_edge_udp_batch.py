"""The batched UDP path (recvmmsg/sendmmsg, memoised hits settled per batch): every datagram
of a burst gets its own answer (its ID, its letter case), and every query one valid event."""

from __future__ import annotations

import asyncio
import random
import socket
import sys

import dns.message
import dns.rcode
import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.listeners import mmsg
from dnsflow.edge.listeners.udp import UdpListener
from dnsflow.schema import parse_event

linux = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg need Linux")


def udp_listener(svc) -> UdpListener:
    return next(x for x in svc.listeners if isinstance(x, UdpListener))


def mixed_case(name: str, rnd: random.Random) -> str:
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in name)


async def burst(port: int, queries: list[dns.message.Message], host: str = "127.0.0.1",
                family: int = socket.AF_INET, clients: int = 3
                ) -> dict[int, dns.message.Message]:
    """Send all queries back to back from ``clients`` sockets in turn (so several wait in
    the edge's socket at once), then collect the replies by ID, checking each came back to
    the socket that asked."""
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(clients):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        s.connect((host, port))
        socks.append(s)
    try:
        asked: dict[int, int] = {}
        for k, q in enumerate(queries):
            asked[q.id] = k % clients
            socks[k % clients].send(q.to_wire())
        got: dict[int, dns.message.Message] = {}

        async def collect(c: int) -> None:
            want = sum(1 for v in asked.values() if v == c)
            n = 0
            while n < want:
                m = dns.message.from_wire(await loop.sock_recv(socks[c], 65535))
                assert asked[m.id] == c, "answer sent to another client"
                got[m.id] = m
                n += 1

        async with asyncio.timeout(10):
            await asyncio.gather(*(collect(c) for c in range(clients)))
        return got
    finally:
        for s in socks:
            s.close()


def make_query(name: str, qid: int) -> dns.message.Message:
    """An A query with a fixed ID: ``burst`` matches answers by ID, so IDs must differ
    (50 random ones collide about once in 50 runs)."""
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q


async def published(svc, n: int) -> None:
    for _ in range(250):
        if svc.publisher.published >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{svc.publisher.published} of {n} events published")


def all_events(bus: MemoryBus) -> list[tuple[bytes, bytes]]:
    return [(m.key, m.value) for p in bus.topic("t.events").partitions for m in p]


@linux
async def test_a_burst_of_hits_gets_each_id_and_case_and_one_valid_event_each(
        start_edge, bus: MemoryBus) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    assert udp_listener(svc).batched_io
    names = ["web.shop.svc.cluster.local", "example.com", "www.example.com"]
    warm = [dns.message.make_query(n, "A") for n in names]
    await burst(port, warm)  # misses, then remembered by the fast path on their next hit
    await burst(port, warm)
    rnd = random.Random(7)
    queries = []
    for i in range(300):
        name = names[i % 3]
        if i % 25 == 7:  # a miss (answered later by a task) between hits in the same batch
            name = f"nope{i}.example.com"
        q = dns.message.make_query(mixed_case(name, rnd) if i % 2 else name, "A")
        q.id = i + 1000
        queries.append(q)
    before = svc.resolver.fast.answered
    replies = await burst(port, queries)
    for q in queries:
        r = replies[q.id]
        if "nope" in q.question[0].name.to_text().lower():
            assert r.rcode() == dns.rcode.NXDOMAIN
            continue
        assert r.rcode() == dns.rcode.NOERROR
        assert r.question[0].name.to_text(omit_final_dot=True) == \
            q.question[0].name.to_text(omit_final_dot=True)  # 0x20 case echoed
        assert r.answer
    assert svc.resolver.fast.answered > before  # the memoised path answered some
    total = len(warm) * 2 + len(queries)
    await published(svc, total)
    evs = all_events(bus)
    assert len(evs) == total  # one event per query, none lost or doubled
    for key, value in evs:
        e = parse_event(value)  # byte-for-byte valid schema-v1 events
        assert key == b"shop" and e.tenant == "shop" and e.transport == "udp"
        assert e.qname in names or e.qname.startswith("nope")
    hits = [orjson.loads(v) for _, v in evs if orjson.loads(v)["cache"] == "hit"]
    assert len(hits) >= len(queries) - 12
    m = svc.resolver.shared.metrics
    if m is not None:  # the Prometheus counters agree with the events
        counts = m.query_counts()
        assert sum(counts.values()) == total
        assert counts[("shop", "NOERROR", "allow", "hit")] == len(hits)
        assert sum(m.lat["udp"]) == total
        assert sum(m.sizes["udp"]) == total  # every answer sized, memoised or not
    assert all(h["latency_us"] >= 0 and h["ts"] > 0 for h in hits)


@linux
async def test_oversize_datagram_is_dropped_and_the_listener_keeps_answering(
        start_edge) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    big = dns.message.make_query("example.com", "A").to_wire() + b"\0" * (mmsg.SLOT + 100)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(big, ("127.0.0.1", port))
    finally:
        s.close()
    q = dns.message.make_query("example.com", "A")
    replies = await burst(port, [q])
    assert replies[q.id].answer
    assert udp_listener(svc).oversize == 1
    assert svc.status()["udp_listeners"][0]["oversize"] == 1


@linux
async def test_ipv6_listener_batched(start_edge, bus: MemoryBus) -> None:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no ::1 on this host")
    svc = await start_edge(listen="[::1]:0")
    port = svc.status()["udp_port"]
    queries = [make_query("example.com", 2000 + k) for k in range(50)]
    replies = await burst(port, queries, host="::1", family=socket.AF_INET6)
    assert len(replies) == len(queries) and all(r.answer for r in replies.values())
    await published(svc, 50)
    assert all(parse_event(v).client_ip == "::1" for _, v in all_events(bus))


async def test_recvfrom_fallback_answers_and_events_the_same(start_edge, bus: MemoryBus,
                                                             monkeypatch) -> None:
    monkeypatch.setattr(mmsg, "available", lambda: False)
    svc = await start_edge()
    assert not udp_listener(svc).batched_io
    port = svc.status()["udp_port"]
    queries = [make_query("example.com", 3000 + k) for k in range(40)]
    for q in queries[20:]:
        q.id = queries[0].id  # repeats of one packet: the memoised path
    replies = await burst(port, queries[:20])
    for q in queries[20:]:
        r = (await burst(port, [q]))[q.id]
        assert r.answer
    assert len(replies) == 20
    assert svc.resolver.fast.answered > 0
    await published(svc, 40)
    assert len(all_events(bus)) == 40
    assert all(parse_event(v).qname == "example.com" for _, v in all_events(bus))


def test_decode_name_matches_recvfrom_addresses() -> None:
    if sys.platform != "linux":
        pytest.skip("sockaddr layout checked on Linux")
    import struct
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 5353) + \
        socket.inet_aton("127.0.0.9") + b"\0" * 8
    assert mmsg.decode_name(v4) == ("127.0.0.9", 5353)
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 53, 0) + \
        socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("=I", 0)
    assert mmsg.decode_name(v6) == ("::1", 53, 0, 0)


async def test_memoised_hit_is_redecided_every_second(start_edge, monkeypatch) -> None:
    """A verdict that changes without a policy generation bump (an auto-deny entry) takes
    effect within a second on the memoised path; an unchanged one keeps it memoised."""
    from dnsflow.policies.api import Verdict

    svc = await start_edge()
    port = svc.status()["udp_port"]
    q = dns.message.make_query("example.com", "A")
    for _ in range(3):
        assert (await burst(port, [q], clients=1))[q.id].answer
    fp = svc.resolver.fast
    store = svc.resolver.policy.store
    real = store.decide
    asked: list[str] = []

    def counting(client, qname, qtype):
        asked.append(qname)
        return real(client, qname, qtype)

    monkeypatch.setattr(store, "decide", counting)
    await asyncio.sleep(1.1)
    before = fp.answered
    assert (await burst(port, [q], clients=1))[q.id].answer
    assert fp.answered == before + 1 and asked == ["example.com"]  # re-decided, still memo

    def deny(client, qname, qtype):
        return Verdict("deny", "auto-deny:test", 0, deny_mode="REFUSED")

    monkeypatch.setattr(store, "decide", deny)
    assert (await burst(port, [q], clients=1))[q.id].answer  # within the second: memo
    await asyncio.sleep(1.1)
    r = (await burst(port, [q], clients=1))[q.id]
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
