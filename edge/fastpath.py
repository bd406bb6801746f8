"""The memoised UDP cache hit: the path most queries take, kept as short as Python allows.

A cache hit answered by the full path is remembered under (client IP, packet bytes after the
ID). A repeat of that exact packet from that client then costs one dict lookup, a few checks,
and one append of its pre-encoded event: the verdict, the identity, the patched answer tail
(client's flags and letter case, TTLs as of the current second) and the event are reused.
It is re-validated against the identity and policy generations on every use, re-decided
by the policy store every second (auto-deny entries change without a generation bump; a
different verdict drops it) and dropped when the cached answer expires.
The clock, the event timestamp, the latency and the counters are taken once per batch of
datagrams (``begin``/``settle``), not per query: at tens of thousands of queries a second,
each avoided Python call is a visible share of the answer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from edge import wire
from edge.cache import Entry, patch
from edge.metrics import BOUNDS_US
from policies.api import ClientInfo, Verdict

if TYPE_CHECKING:
    from edge.resolver import Resolver

MAX_ENTRIES = 50_000
TTL = 1.0  # a memoised decision is re-checked at least this often (auto-deny expiry)

_perf = time.perf_counter
_time_ns = time.time_ns


class Memo:
    __slots__ = ("asked", "cell", "check_at", "entry", "event", "expires_perf", "gen", "limit",
                 "q", "rate", "sec", "stored_perf", "tail", "until", "verdict")

    def __init__(self, entry: Entry, gen: tuple[int, int], cell: list[int] | None,
                 q: wire.Query, rate: tuple[float, int] | None, limit: int,
                 event: tuple[bytes, bytes] | None, verdict: Verdict | None = None,
                 asked: tuple[ClientInfo, str, str] | None = None) -> None:
        self.entry = entry
        # what to re-decide every second, and the verdict it must still give (None: re-take
        # the full path, e.g. for PTR queries whose hiding depends on more than the verdict)
        self.verdict = verdict
        self.asked = asked
        self.gen = gen
        self.cell = cell  # the metrics counter of this hit's labels
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
        # the one clock comparison a hit makes: expiry, re-decision or the next TTL second
        self.check_at = float("-inf")


class FastPath:
    """Batched use (the UDP listener): ``begin()`` once per batch of datagrams, ``hit()`` per
    datagram, ``settle()`` after the batch's answers are sent. Per-query work is one dict
    lookup, one clock comparison and two appends; the clock, the event timestamp, the latency
    and the metrics are taken once per batch."""

    def __init__(self, resolver: Resolver) -> None:
        self.r = resolver
        self.memo: dict[tuple[str, bytes], Memo] = {}
        self.answered = 0
        self._gen: tuple[int, int] = (-1, -1)
        self._events: list[tuple[bytes, bytes]] = []
        self._hits = 0

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
        event = None
        if r.publisher is not None:
            event = r.publisher.template(
                (c.tenant, c.namespace, c.pod, c.service_account, c.ip, "udp", qname, qtype,
                 e.rcode, answers, "hit", decision, v.rule, v.policy_version, e.upstream))
        cell = None
        if r.metrics is not None:
            cell = r.metrics.cell((c.tenant, e.rcode, decision, "hit"))
        redecide = q.qtype != wire.T_PTR
        memo[(ip, data[2:])] = Memo(e, (r.identity.generation, r.policy.generation), cell, q,
                                    v.rate_limit, max_size, event,
                                    v if redecide else None,
                                    (c, qname, qtype) if redecide else None)

    # -- batched answer path ------------------------------------------------------------
    def begin(self) -> float:
        """Start a batch; returns its clock reading (pass it to ``hit`` and ``settle``)."""
        r = self.r
        self._gen = (r.identity.generation, r.policy.generation)
        return _perf()

    def hit(self, ip: str, qtail: bytes, now: float) -> bytes | None:
        """The answer after the 2-byte ID for a remembered packet (``qtail`` = the packet
        after its ID), or None: take the full path. Counted and evented at ``settle``."""
        f = self.memo.get((ip, qtail))
        if f is None:
            return None
        if f.gen != self._gen:
            del self.memo[(ip, qtail)]
            return None
        if now >= f.check_at:
            if now >= f.expires_perf or (now >= f.until and not self._redecide(f, now)):
                del self.memo[(ip, qtail)]
                return None
            sec = int(now - f.stored_perf)
            if sec != f.sec:
                e = f.entry
                full = patch(e.at(time.monotonic()), f.q, e.qlen)
                if len(full) > f.limit:
                    return None
                f.tail = full[2:]
                f.sec = sec
            f.check_at = min(f.until, f.expires_perf, f.stored_perf + sec + 1)
        if f.rate is not None and not self.r.ratelimit.allow(ip, *f.rate):
            return None  # the full path answers (and counts) the refusal
        self._hits += 1
        if f.event is not None:
            self._events.append(f.event)
        c = f.cell
        if c is not None:
            c[0] += 1
        return f.tail

    def _redecide(self, f: Memo, now: float) -> bool:
        """The once-a-second re-decision (auto-deny entries change without a generation
        bump): the policy store is asked again; the same verdict keeps the memo one more
        second, anything else (or an error) sends the packet down the full path."""
        if f.verdict is None or f.asked is None:
            return False
        try:
            v = self.r.policy.store.decide(*f.asked)
        except Exception:
            return False
        if v != f.verdict:
            return False
        f.until = now + TTL
        return True

    def settle(self, t0: float, packets: int) -> None:
        """Close a batch begun at ``t0`` that handled ``packets`` datagrams: one event per
        hit (sharing the batch's timestamp), cache and latency counters. A hit's latency is
        the batch's mean time per datagram (receive, answer, send)."""
        n = self._hits
        if not n:
            return
        self._hits = 0
        r = self.r
        lat = int((_perf() - t0) * 1e6 / (packets or 1))
        r.cache.hits += n
        self.answered += n
        pub = r.publisher
        if pub is not None and self._events:
            events, self._events = self._events, []
            pub.emit_many(_time_ns() // 1000, lat, events)
        m = r.metrics
        if m is not None:
            m.lat[0 if lat < 50 else bisect_left(BOUNDS_US, lat)] += n
            m.lat_sum_us += lat * n

    def answer(self, data: bytes, ip: str) -> bytes | None:
        """One datagram as a batch of one (the recvfrom fallback): the whole answer or None."""
        t0 = self.begin()
        tail = self.hit(ip, data[2:], t0)
        if tail is None:
            return None
        self.settle(t0, 1)
        return data[:2] + tail

    def __len__(self) -> int:
        return len(self.memo)
