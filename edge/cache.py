"""Raw-bytes answer cache: per view, TTL-respecting, negative caching, bounded LRU, serve-stale.

A hit never decodes the answer: the stored bytes are patched with the client's ID, RD bit and
question-name letter case, and the TTLs (whose offsets were recorded on the miss) are counted
down once per elapsed second, not once per query.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from dnsflow.edge import wire

STALE_TTL = 30          # RFC 8767: TTL of an answer served stale
MAX_TTL = 86_400
MAX_NEGATIVE_TTL = 3_600


@dataclass(slots=True)
class Entry:
    """One cached answer with what the event needs, so hits never re-parse."""

    data: bytes                     # answer as stored (question lower case)
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    stored: float
    expires: float
    stale_until: float
    rcode: str
    answers: list[str]
    upstream: str
    policy_version: int
    qlen: int
    decision: str = ""             # "deny" when stored for an isolated name
    cur: bytes = b""
    cur_sec: int = -1
    meta: dict[str, Any] = field(default_factory=dict)

    def at(self, now: float, stale: bool = False) -> bytes:
        """The stored bytes with TTLs counted down to ``now`` (memoised per whole second)."""
        sec = int(now - self.stored)
        if stale:
            sec = -2
        if sec == self.cur_sec:
            return self.cur
        buf = bytearray(self.data)
        pack = wire.U32.pack_into
        for off, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
            pack(buf, off, STALE_TTL if stale else max(0, ttl - sec))
        self.cur = bytes(buf)
        self.cur_sec = sec
        return self.cur


def cache_key(view: str, q: wire.Query, lname: bytes) -> tuple[Any, ...]:
    """The one cache key: (view, lower-case qname wire ``lname``, qtype, qclass, EDNS/DO/CD/AD
    bits). Never the ID, letter case or EDNS options (cookies)."""
    return (view, lname, q.qtype, q.qclass,
            (1 if q.edns else 0) | (2 if q.do else 0) | (q.flags & (wire.CD | wire.AD)))


def patch(entry_bytes: bytes, q: wire.Query, qlen: int) -> bytes:
    """Client's ID, RD bit and question case on a cached answer."""
    flags = (entry_bytes[2] & 0xFE) | (q.raw[2] & 0x01)
    return b"".join((q.raw[0:2], bytes((flags,)), entry_bytes[3:12], q.qwire,
                     entry_bytes[12 + qlen:]))


class AnswerCache:
    """Bounded LRU keyed by (view, lower-case qname wire, qtype, qclass, EDNS/DO/CD/AD bits).

    What is stored already carries the edge's header bits (RA, no AA, the key's CD and AD)
    and clamped TTLs (:func:`wire.fix_reply`), so a hit only patches ID, RD and letter case.
    """

    def __init__(self, max_entries: int = 100_000, serve_stale: bool = False,
                 stale_seconds: float = 86_400.0, clock: Any = time.monotonic,
                 max_ttl: int = MAX_TTL) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.serve_stale = serve_stale
        self.stale_seconds = stale_seconds
        self.clock = clock
        self._d: OrderedDict[tuple, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.stale_hits = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._d)

    @staticmethod
    def key(view: str, q: wire.Query) -> tuple[Any, ...]:
        return cache_key(view, q, q.qwire.lower())

    def get(self, key: tuple) -> Entry | None:
        e = self._d.get(key)
        if e is None:
            self.misses += 1
            return None
        now = self.clock()
        if now >= e.expires:
            if not (self.serve_stale and now < e.stale_until):
                del self._d[key]
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return e

    def get_stale(self, key: tuple) -> Entry | None:
        """An expired entry still within the serve-stale window (used when upstreams fail)."""
        if not self.serve_stale:
            return None
        e = self._d.get(key)
        if e is None or self.clock() >= e.stale_until:
            return None
        self.stale_hits += 1
        return e

    def put(self, key: tuple, data: bytes, resp: wire.Response, *, upstream: str,
            policy_version: int) -> Entry | None:
        """Store an answer to the question of ``key`` (:func:`cache_key`) if it is cacheable
        (RFC 2308 for negatives); returns the entry."""
        if resp.truncated:
            return None
        if resp.rcode == wire.NXDOMAIN or (resp.rcode == wire.NOERROR and resp.an_count == 0):
            if resp.negative_ttl is None:
                return None  # RFC 2308 5: no SOA, no negative caching
            ttl = min(resp.negative_ttl, MAX_NEGATIVE_TTL)
        elif resp.rcode == wire.NOERROR:
            ttl = min(resp.min_ttl if resp.min_ttl is not None else 0, self.max_ttl)
        else:
            return None
        if ttl <= 0:
            return None
        now = self.clock()
        ttls = tuple(wire.U32.unpack_from(data, o)[0] for o in resp.ttl_offsets)
        e = Entry(data=data, ttl_offsets=tuple(resp.ttl_offsets), ttls=ttls, stored=now,
                  expires=now + ttl, stale_until=now + ttl + self.stale_seconds,
                  rcode=wire.rcode_name(resp.rcode), answers=resp.answers, upstream=upstream,
                  policy_version=policy_version, qlen=len(key[1]))
        d = self._d
        d[key] = e
        d.move_to_end(key)
        while len(d) > self.max_entries:
            d.popitem(last=False)
            self.evictions += 1
        return e

    def drop_view(self, view: str) -> int:
        """Forget a view's entries (its policy or local records changed)."""
        keys = [k for k in self._d if k[0] == view]
        for k in keys:
            del self._d[k]
        return len(keys)

    def clear(self) -> None:
        self._d.clear()

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"entries": len(self._d), "hits": self.hits, "misses": self.misses,
                "stale_hits": self.stale_hits, "evictions": self.evictions,
                "hit_ratio": round(self.hits / total, 4) if total else 0.0}
