"""One query's state, from its arrival to its event (CoreDNS's ``request.Request`` is the model).

Why one object: the answer path used to hand the same nine to thirteen values (parsed query,
client, transport, names, clocks, size limit, verdict, cache key) from function to function
as positional parameters. A :class:`Request` is built once per query on the full path
(``Resolver.answer``); what varies between outcomes (rcode, answers, cache state, upstream,
a decision override) is all :meth:`Request.emit` takes. The memoised UDP hit
(``fastpath.py``) builds no Request: it replays what the full path remembered.

:class:`Shared` is what both answer paths read (identity, policy, cache, rate limits and
where events and metrics go), so the fast path needs no reference to the resolver.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dnsflow.edge.metrics import TYPES
from dnsflow.edge.policy.ratelimit import RateLimiter
from dnsflow.schema import now_us

if TYPE_CHECKING:
    from dnsflow.edge import wire
    from dnsflow.edge.cache import AnswerCache
    from dnsflow.edge.identity.table import IdentityTable
    from dnsflow.edge.metrics import EdgeMetrics
    from dnsflow.edge.telemetry.publisher import EventPublisher
    from dnsflow.policies.api import ClientInfo, PolicyStore, Verdict

_perf = time.perf_counter
NO_ANSWERS: list[str] = []  # shared by every event without answers: never mutated


class PolicyHolder:
    """The store in force; the subscription swaps or mutates it, the answer paths read it."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        self.generation = 0

    def changed(self) -> None:
        self.generation += 1


class Shared:
    """What the full answer path (``Resolver``) and the memoised one (``FastPath``) both
    read. Each part is one long-lived object; the answer paths keep direct references."""

    __slots__ = ("cache", "identity", "metrics", "policy", "publisher", "ratelimit")

    def __init__(self, identity: IdentityTable, policy: PolicyHolder, cache: AnswerCache,
                 publisher: EventPublisher | None = None, metrics: EdgeMetrics | None = None
                 ) -> None:
        self.identity = identity
        self.policy = policy
        self.cache = cache
        self.publisher = publisher
        self.metrics = metrics
        self.ratelimit = RateLimiter()  # per-rule query rate limits (policy ``rate_limit``)


class Request:
    """One query on the full answer path.

    Set at arrival: ``raw``, ``ip`` (the source address as the listener gives it),
    ``transport``, ``max_size``, ``t0`` (perf clock, for the latency), ``ts`` (event time,
    µs), ``client`` (who ``ip`` is). Set once parsed: ``q`` (``wire.Query``),
    ``qname`` (lower case, no trailing dot), ``qtype`` (mnemonic). Set once decided:
    ``verdict`` (None before the policy store answered) and ``key`` (the cache key,
    :func:`edge.cache.cache_key`, computed once).
    """

    __slots__ = ("client", "ip", "key", "max_size", "q", "qname", "qtype", "raw", "shared",
                 "t0", "transport", "ts", "verdict")

    q: wire.Query
    client: ClientInfo
    key: tuple[Any, ...]

    def __init__(self, shared: Shared, raw: bytes, ip: str, transport: str) -> None:
        self.t0 = _perf()
        self.ts = now_us()
        self.shared = shared
        self.raw = raw
        self.ip = ip
        self.client = shared.identity.lookup(ip)
        self.transport = transport
        self.max_size = 65535  # the answer's size limit; the resolver sets it for UDP
        self.qname = ""
        self.qtype = "TYPE0"
        self.verdict: Verdict | None = None

    def emit(self, rcode: str, answers: list[str] = NO_ANSWERS, cache: str = "none",
             upstream: str = "", decision: str | None = None) -> None:
        """The query's one event and its metrics. The decision, rule and policy version
        come from ``verdict`` (allow/""/0 without one) unless ``decision`` overrides the
        decision (an isolated name is recorded as "deny")."""
        lat = int((_perf() - self.t0) * 1e6)
        v = self.verdict
        if v is None:
            rule, version = "", 0
            if decision is None:
                decision = "allow"
        else:
            rule, version = v.rule, v.policy_version
            if decision is None:
                decision = v.action
        c = self.client
        s = self.shared
        pub = s.publisher
        if pub is not None:
            pub.emit((self.ts, c.tenant, c.namespace, c.pod, c.service_account, c.ip,
                      self.transport, self.qname, self.qtype, rcode, answers, lat, cache,
                      decision, rule, version, upstream))
        m = s.metrics
        if m is not None:
            qtype = self.qtype
            m.observe((c.tenant, rcode, decision, cache, self.transport,
                       "2" if ":" in self.ip else "1", qtype if qtype in TYPES else "other"),
                      lat)
