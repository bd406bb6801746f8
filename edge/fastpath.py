"""The memoised UDP cache hit: the path most queries take, kept as short as Python allows.

A cache hit answered by the full path is remembered under (client IP, packet bytes after the
ID). A repeat of that exact packet from that client then costs one dict lookup, a few checks,
and one append of its pre-encoded event: the verdict, the identity, the patched answer tail
(client's flags and letter case, TTLs as of the current second) and the event are reused.
It is re-validated against the identity and policy generations on every use, re-decided
by the policy store every second (auto-deny entries change without a generation bump; a
different verdict drops it) and dropped when the cached answer expires. A client an egress
rule selects is memoised with the time its allowance was programmed for (``Memo.allowed``,
from ``EgressAgent.allow_until``): past it the packet takes the full path, which asks the
agent (re-programming when due) and memoises it again; the agent empties the memo when it
revokes. Unselected clients carry ``inf`` there: their hits pay nothing more.
The clock, the event timestamp, the latency and the counters are taken once per batch of
datagrams (``begin``/``settle``), not per query: at tens of thousands of queries a second,
each avoided Python call is a visible share of the answer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dnsflow.edge import wire
from dnsflow.edge.cache import Entry, patch
from dnsflow.edge.metrics import family, qtype_label

if TYPE_CHECKING:
    from dnsflow.edge.request import Request, Shared
    from dnsflow.policies.api import ClientInfo, Verdict

MAX_ENTRIES = 50_000
TTL = 1.0  # a memoised decision is re-checked at least this often (auto-deny expiry)

_perf = time.perf_counter
_time_ns = time.time_ns


class Memo:
    __slots__ = ("allowed", "asked", "cell", "check_at", "entry", "event", "expires_perf", "gen",
                 "limit", "q", "rate", "sec", "stored_perf", "tail", "until", "verdict")

    def __init__(self, req: Request, entry: Entry, gen: tuple[int, int],
                 telemetry: tuple[tuple[bytes, bytes] | None, list[int] | None]) -> None:
        v = req.verdict
        assert v is not None
        self.entry = entry
        # what to re-decide every second, and the verdict it must still give (None: re-take
        # the full path, e.g. for PTR queries whose hiding depends on more than the verdict)
        redecide = req.q.qtype != wire.T_PTR
        self.verdict: Verdict | None = v if redecide else None
        self.asked: tuple[ClientInfo, str, str] | None = (
            (req.client, req.qname, req.qtype) if redecide else None)
        self.gen = gen
        self.event, self.cell = telemetry  # pre-encoded event; metrics counter of its labels
        self.q = req.q
        self.rate = v.rate_limit
        self.limit = req.max_size
        # expiry and TTL seconds on the perf_counter clock (cache entries use monotonic)
        now_mono, now_perf = time.monotonic(), _perf()
        self.until = now_perf + TTL
        self.stored_perf = entry.stored - now_mono + now_perf
        self.expires_perf = entry.expires - now_mono + now_perf
        self.allowed = float("inf")  # egress allowance deadline (perf clock); see allow()
        self.sec = -1
        self.tail = b""
        # the one clock comparison a hit makes: expiry, re-decision, the next TTL second or
        # the egress allowance's deadline
        self.check_at = float("-inf")

    def allow(self, until: float) -> None:
        """Released without the egress agent only until ``until`` (monotonic, from
        ``EgressAgent.allow_until``): then the full path re-checks the allowance."""
        self.allowed = until - time.monotonic() + _perf()


class FastPath:
    """Batched use (the UDP listener): ``begin()`` once per batch of datagrams, ``hit()`` per
    datagram, ``settle()`` after the batch's answers are sent. Per-query work is one dict
    lookup, one clock comparison and two appends; the clock, the event timestamp, the latency
    and the metrics are taken once per batch."""

    def __init__(self, shared: Shared) -> None:
        # what the memoised path reads, taken once: the identity and policy generations,
        # the policy store (re-decisions), rate limits, cache counters, events, metrics
        self._identity = shared.identity
        self._policy = shared.policy
        self._cache = shared.cache
        self._ratelimit = shared.ratelimit
        self._publisher = shared.publisher
        self._metrics = shared.metrics
        self.memo: dict[tuple[str, bytes], Memo] = {}
        self.answered = 0
        self._gen: tuple[int, int] = (-1, -1)
        self._events: list[tuple[bytes, bytes]] = []
        self._hits = 0

    def clear(self) -> None:
        self.memo.clear()

    def remember(self, req: Request, e: Entry, answers: list[str], decision: str) -> Memo:
        """Called by the full path after answering UDP request ``req`` (decided: its
        ``verdict`` is set) from cache entry ``e`` with these event ``answers``/``decision``.
        Returns the memo (egress: :meth:`Memo.allow` bounds it)."""
        memo = self.memo
        if len(memo) >= MAX_ENTRIES:
            memo.clear()
        c, v = req.client, req.verdict
        assert v is not None
        event = None
        if self._publisher is not None:
            event = self._publisher.template(
                (c.tenant, c.namespace, c.pod, c.service_account, c.ip, "udp", req.qname,
                 req.qtype, e.rcode, answers, "hit", decision, v.rule, v.policy_version,
                 e.upstream))
        cell = None
        if self._metrics is not None:
            cell = self._metrics.cell((c.tenant, e.rcode, decision, "hit", "udp",
                                       family(req.ip), qtype_label(req.qtype)))
        m = memo[(req.ip, req.raw[2:])] = Memo(
            req, e, (self._identity.generation, self._policy.generation), (event, cell))
        return m

    # -- batched answer path ------------------------------------------------------------
    def begin(self) -> float:
        """Start a batch; returns its clock reading (pass it to ``hit`` and ``settle``)."""
        self._gen = (self._identity.generation, self._policy.generation)
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
            if (now >= f.expires_perf or now >= f.allowed
                    or (now >= f.until and not self._redecide(f, now))):
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
            f.check_at = min(f.until, f.expires_perf, f.stored_perf + sec + 1, f.allowed)
        if f.rate is not None and not self._ratelimit.allow(ip, *f.rate):
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
            v = self._policy.store.decide(*f.asked)
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
        lat = int((_perf() - t0) * 1e6 / (packets or 1))
        self._cache.hits += n
        self.answered += n
        pub = self._publisher
        if pub is not None and self._events:
            events, self._events = self._events, []
            pub.emit_many(_time_ns() // 1000, lat, events)
        m = self._metrics
        if m is not None:
            m.observe_hits(n, lat)

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
