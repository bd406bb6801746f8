"""The raw-bytes cache: bounded LRU, RFC 2308 negatives, TTL countdown, serve-stale, and a key
that ignores ID, letter case and EDNS cookies."""

from __future__ import annotations

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import dns.rrset

from dnsflow.edge import wire
from dnsflow.edge.cache import STALE_TTL, AnswerCache, patch


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def answer(name: str, ttl: int = 60, rcode: int = 0, soa_ttl: int | None = None) -> bytes:
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if rcode == 0 and soa_ttl is None:
        r.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "A", "192.0.2.1"))
    if soa_ttl is not None:
        r.authority.append(dns.rrset.from_text("example.com.", soa_ttl, "IN", "SOA",
                                               "ns. host. 1 2 3 4 45"))
    return r.to_wire()


def put(cache: AnswerCache, view: str, name: str, data: bytes):
    q = wire.parse_query(dns.message.make_query(name, "A").to_wire())
    resp = wire.parse_response(data)
    return cache.put(AnswerCache.key(view, q), data, resp, upstream="u",
                     policy_version=0), q


def test_lru_bound_evicts_least_recently_used() -> None:
    c = AnswerCache(max_entries=2)
    _, qa = put(c, "t", "a.example.com", answer("a.example.com"))
    put(c, "t", "b.example.com", answer("b.example.com"))
    assert c.get(AnswerCache.key("t", qa)) is not None          # a is now most recent
    _, _qc = put(c, "t", "c.example.com", answer("c.example.com"))
    assert len(c) == 2 and c.evictions == 1
    qb = wire.parse_query(dns.message.make_query("b.example.com", "A").to_wire())
    assert c.get(AnswerCache.key("t", qb)) is None
    assert c.get(AnswerCache.key("t", qa)) is not None


def test_views_are_separate() -> None:
    c = AnswerCache()
    _, q = put(c, "shop", "a.example.com", answer("a.example.com"))
    assert c.get(AnswerCache.key("payments", q)) is None
    assert c.get(AnswerCache.key("shop", q)) is not None


def test_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    clock = Clock()
    c = AnswerCache(clock=clock)
    e, _q = put(c, "t", "nx.example.com", answer("nx.example.com", rcode=3, soa_ttl=300))
    assert e is not None and e.expires - clock.t == 45           # SOA minimum 45 < ttl 300
    e2, _ = put(c, "t", "nx2.example.com", answer("nx2.example.com", rcode=3))
    assert e2 is None                                             # no SOA: not cached
    e3, _ = put(c, "t", "sf.example.com", answer("sf.example.com", rcode=2))
    assert e3 is None                                             # SERVFAIL: not cached


def test_ttl_countdown_and_serve_stale() -> None:
    clock = Clock()
    c = AnswerCache(serve_stale=True, stale_seconds=600, clock=clock)
    e, q = put(c, "t", "a.example.com", answer("a.example.com", ttl=10))
    key = AnswerCache.key("t", q)
    clock.t += 4
    msg = dns.message.from_wire(patch(c.get(key).at(clock.t), q, e.qlen))
    assert msg.answer[0].ttl == 6
    clock.t += 7
    assert c.get(key) is None                                     # expired
    stale = c.get_stale(key)
    assert stale is not None
    msg = dns.message.from_wire(patch(stale.at(clock.t, stale=True), q, stale.qlen))
    assert msg.answer[0].ttl == STALE_TTL
    clock.t += 601
    assert c.get_stale(key) is None


async def test_key_ignores_cookies_and_replies_carry_none(start_edge, upstream) -> None:
    svc = await start_edge()
    port = svc.status()["udp_port"]
    for cookie in (b"\x01" * 8, b"\x02" * 8):
        q = dns.message.make_query("example.com", "A", use_edns=0,
                                   options=[dns.edns.CookieOption(cookie, b"")])
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
        assert r.rcode() == dns.rcode.NOERROR
        assert not [o for o in r.options if o.otype == dns.edns.COOKIE]
    assert upstream.count("example.com") == 1
    # a client without EDNS gets no OPT record back
    r = await dns.asyncquery.udp(dns.message.make_query("example.com", "A"), "127.0.0.1",
                                 port=port, timeout=3)
    assert r.edns < 0


async def test_serve_stale_when_upstream_fails(start_edge, upstream) -> None:
    svc = await start_edge(serve_stale=True, upstream_timeout=0.3)
    port = svc.status()["udp_port"]
    q = dns.message.make_query("example.com", "A")
    await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    for e in svc.cache._d.values():
        e.expires = 0.0          # age the entry past its TTL
    svc.resolver.fast.clear()
    upstream.silent = True
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR and r.answer[0].ttl == STALE_TTL
    assert svc.cache.stale_hits == 1
