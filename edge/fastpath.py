"""The memoised UDP cache hit: the path most queries take, kept as short as Python allows.

A cache hit answered by the full path is remembered under (client IP, packet bytes after the
ID). A repeat of that exact packet from that client then costs one dict lookup, a few checks,
one concatenation and one event tuple: the verdict, the identity, the patched answer tail
(client's flags and letter case, TTLs as of the current second) and a pre-encoded event are
reused. It is re-validated against the identity and policy generations on every use and
dropped at least every second (auto-deny expiry) or when the cached answer expires.
Emitting the event and counting the metrics are inlined on purpose: at tens of thousands of
queries a second, each avoided Python call is a visible share of the answer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from edge import wire
from edge.cache import Entry, patch
from edge.metrics import BOUNDS_US
from edge.policy.compat import ClientInfo, Verdict

if TYPE_CHECKING:
    from edge.resolver import Resolver

MAX_ENTRIES = 50_000
TTL = 1.0  # a memoised decision is re-checked at least this often (auto-deny expiry)

_perf = time.perf_counter
_time_ns = time.time_ns


class Memo:
    __slots__ = ("entry", "event", "expires_perf", "gen", "limit", "mkey", "q", "rate", "sec",
                 "stored_perf", "tail", "until")

    def __init__(self, entry: Entry, gen: tuple[int, int], mkey: tuple[str, str, str, str],
                 q: wire.Query, rate: tuple[float, int] | None, limit: int,
                 event: tuple[bytes, bytes] | None) -> None:
        self.entry = entry
        self.gen = gen
        self.mkey = mkey
        self.event = event
        self.q = q
        self.rate = rate
        self.limit = limit
        # expiry and TTL seconds on the perf_counter clock (cache entries use monotonic)
        now_mono, now_perf = time.monotonic(), _perf()
        self.until = now_perf + TTL
        self.stored_perf = entry.stored - now_mono + now_perf
        self.expires_perf = entry.expires - now_mono + now_perf
        self.sec = -1
        self.tail = b""


class FastPath:
    def __init__(self, resolver: Resolver) -> None:
        self.r = resolver
        self.memo: dict[tuple[str, bytes], Memo] = {}
        self.answered = 0

    def clear(self) -> None:
        self.memo.clear()

    def remember(self, data: bytes, ip: str, q: wire.Query, e: Entry, c: ClientInfo,
                 v: Verdict, qname: str, qtype: str, answers: list[str], decision: str,
                 max_size: int) -> None:
        """Called by the full path after answering ``data`` from cache entry ``e``."""
        memo = self.memo
        if len(memo) >= MAX_ENTRIES:
            memo.clear()
        r = self.r
        mkey = (c.tenant, e.rcode, decision, "hit")
        event = None
        if r.publisher is not None:
            event = r.publisher.template(
                (c.tenant, c.namespace, c.pod, c.service_account, c.ip, "udp", qname, qtype,
                 e.rcode, answers, "hit", decision, v.rule, v.policy_version, e.upstream))
        if r.metrics is not None:
            r.metrics.queries.setdefault(mkey, 0)
        memo[(ip, data[2:])] = Memo(e, (r.identity.generation, r.policy.generation), mkey, q,
                                    v.rate_limit, max_size, event)

    def answer(self, data: bytes, ip: str) -> bytes | None:
        """The answer to a remembered packet, or None: take the full path."""
        f = self.memo.get((ip, data[2:]))
        if f is None:
            return None
        r = self.r
        t0 = _perf()  # also the clock for expiry: one clock read fewer per answer
        e = f.entry
        if (t0 >= f.until or t0 >= f.expires_perf or f.gen[0] != r.identity.generation
                or f.gen[1] != r.policy.generation):
            del self.memo[(ip, data[2:])]
            return None
        if f.rate is not None and not r.ratelimit.allow(ip, *f.rate):
            return None  # the full path answers (and counts) the refusal
        sec = int(t0 - f.stored_perf)
        if sec != f.sec:
            full = patch(e.at(time.monotonic()), f.q, e.qlen)
            if len(full) > f.limit:
                return None
            f.tail = full[2:]
            f.sec = sec
        r.cache.hits += 1
        self.answered += 1
        lat = int((_perf() - t0) * 1e6)
        pub = r.publisher
        if pub is not None:
            ev = (_time_ns() // 1000, lat, f.event)
            if len(pub.queue) < pub.max_queue:
                pub.emitted += 1
                pub.queue.append(ev)
            else:
                pub.emit(ev)
        m = r.metrics
        if m is not None:
            m.queries[f.mkey] += 1
            m.lat[0 if lat < 50 else bisect_left(BOUNDS_US, lat)] += 1
            m.lat_sum_us += lat
        return data[:2] + f.tail

    def __len__(self) -> int:
        return len(self.memo)
