"""Prometheus metrics of the answer path, counted in plain dicts and lists and exposed on scrape.

Why not ``Counter.labels().inc()`` per query: label lookup plus histogram observe cost a few
microseconds, a noticeable share of a cache hit; a dict increment costs ~50 ns. Names and labels
follow CoreDNS's where the meaning is the same (``requests_total{proto,family,type}``,
``request_duration_seconds``, ``response_size_bytes``), prefixed ``dnsflow_edge_``; the
families built from the components' status (cache, upstreams, events, ...) are in
``metrics_status.py``, the sum over ``--workers`` processes in ``metrics_merge.py``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from dnsflow.buildinfo import BuildInfoCollector
from dnsflow.edge.metrics_status import status_families

BOUNDS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000,
             500_000, 1_000_000, 2_500_000)
# Response sizes are counted per 16 bytes (one list index per answer, no search) and folded
# into these bucket bounds (multiples of 16) on scrape: 512 and 1232 are the classic and the
# DNS-flag-day UDP limits.
SIZE_STEP = 4  # log2(16)
SIZE_SLOTS = (65535 >> SIZE_STEP) + 1
SIZE_BOUNDS = (64, 128, 256, 512, 1232, 2048, 4096, 8192, 16384, 65536)
PROTOS = ("udp", "tcp", "dot", "doh")
# query types counted under their own name; the rest are "other" (a hostile client must not
# create a series per type number)
TYPES = frozenset(("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "HTTPS",
                   "SVCB", "CAA", "DS", "DNSKEY", "ANY", "AXFR", "IXFR", "NAPTR", "TYPE0"))

# (tenant, rcode, decision, cache, proto, family, type): one counter per combination
Key = tuple[str, str, str, str, str, str, str]


def answer_sizes(resolver: Any, proto: str) -> list[int]:
    """The size slots a listener of ``proto`` counts its answers in (a private list when the
    resolver keeps no metrics, so the listener never tests for None)."""
    m = resolver.shared.metrics
    return m.sizes[proto] if m is not None else [0] * SIZE_SLOTS


def family(ip: str) -> str:
    """CoreDNS's ``family`` label: "1" IPv4, "2" IPv6."""
    return "2" if ":" in ip else "1"


def qtype_label(qtype: str) -> str:
    return qtype if qtype in TYPES else "other"


class EdgeMetrics:
    def __init__(self, edge: str) -> None:
        self.edge = edge
        self.queries: dict[Key, int] = {}
        # per-label counters the memoised hit path bumps as ``cell[0] += 1`` (no tuple hash)
        self.cells: dict[Key, list[int]] = {}
        self.lat: dict[str, list[int]] = {p: [0] * (len(BOUNDS_US) + 1) for p in PROTOS}
        self.lat_sum_us: dict[str, int] = dict.fromkeys(PROTOS, 0)
        self.sizes: dict[str, list[int]] = {p: [0] * SIZE_SLOTS for p in PROTOS}
        self.sources: list[Callable[[], dict[str, Any]]] = []
        # the /metrics URLs of the edge's other worker processes (worker 0 sets it)
        self.siblings: Callable[[], list[str]] = list
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)
        self.registry.register(BuildInfoCollector("edge"))  # type: ignore[arg-type]

    def observe(self, key: Key, lat_us: int) -> None:
        q = self.queries
        q[key] = q.get(key, 0) + 1
        proto = key[4]
        self.lat[proto][bisect.bisect_left(BOUNDS_US, lat_us)] += 1
        self.lat_sum_us[proto] += lat_us

    def observe_hits(self, n: int, lat_us: int) -> None:
        """``n`` memoised UDP hits, each taking ``lat_us`` (the batch's mean)."""
        self.lat["udp"][0 if lat_us < 50 else bisect.bisect_left(BOUNDS_US, lat_us)] += n
        self.lat_sum_us["udp"] += lat_us * n

    def cell(self, key: Key) -> list[int]:
        """A one-item counter for these labels, added to ``queries`` when scraped."""
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = [0]
        return c

    def raw_counts(self) -> dict[Key, int]:
        """Counts as the answer path recorded them (isolated queries still marked)."""
        totals = dict(self.queries)
        for k, c in list(self.cells.items()):
            totals[k] = totals.get(k, 0) + c[0]
        return totals

    @staticmethod
    def _isolated(decision: str, cache: str) -> bool:
        # The resolver records an isolated query (another tenant's name, answered as the
        # upstream answers a missing one) as decision "deny" with a cache state; a policy
        # deny never touches the cache (cache "none").
        return decision == "deny" and cache != "none"

    def query_counts(self) -> dict[tuple[str, str, str, str], int]:
        """Per-tenant (tenant, rcode, decision, cache) series as the tenant may see them: an
        isolated query is counted as what it looks like, a missing name (decision "allow"),
        never as its own series: a separate one would tell the tenant which names belong to
        another tenant."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for (tenant, rcode, decision, cache, *_), n in self.raw_counts().items():
            if self._isolated(decision, cache):
                decision = "allow"
            k = (tenant, rcode, decision, cache)
            totals[k] = totals.get(k, 0) + n
        return totals

    def request_counts(self) -> dict[tuple[str, str, str, str], int]:
        """(tenant, proto, family, type) -> requests."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for (tenant, _, _, _, proto, fam, qtype), n in self.raw_counts().items():
            k = (tenant, proto, fam, qtype)
            totals[k] = totals.get(k, 0) + n
        return totals

    def isolated_count(self) -> int:
        """Isolated queries of all tenants: for operators, with no tenant label."""
        return sum(n for (_, _, decision, cache, *_), n in self.raw_counts().items()
                   if self._isolated(decision, cache))

    def add_source(self, fn: Callable[[], dict[str, Any]]) -> None:
        """A callable returning parts of the edge's status (``metrics_status.py`` reads
        'cache', 'upstreams', 'events', 'policy', 'identity', 'connections', 'rrl',
        'resolver')."""
        self.sources.append(fn)

    def collect(self) -> Iterator[Metric]:  # prometheus collector protocol
        e = self.edge
        c = CounterMetricFamily("dnsflow_edge_requests", "DNS requests received",
                                labels=["edge", "tenant", "proto", "family", "type"])
        for (tenant, proto, fam, qtype), n in self.request_counts().items():
            c.add_metric([e, tenant, proto, fam, qtype], n)
        yield c
        c = CounterMetricFamily("dnsflow_edge_responses", "DNS responses and events, by rcode, "
                                "decision and cache state",
                                labels=["edge", "tenant", "rcode", "decision", "cache"])
        for (tenant, rcode, decision, cache), n in self.query_counts().items():
            c.add_metric([e, tenant, rcode, decision, cache], n)
        yield c
        c = CounterMetricFamily("dnsflow_edge_isolated_queries",
                                "queries for another tenant's names, answered as missing names "
                                "(all tenants: operators only, no tenant label)",
                                labels=["edge"])
        c.add_metric([e], self.isolated_count())
        yield c
        h = HistogramMetricFamily("dnsflow_edge_request_duration_seconds",
                                  "time from a request's arrival to its answer",
                                  labels=["edge", "proto"])
        for proto in PROTOS:
            counts = self.lat[proto]
            bounds = [str(b / 1e6) for b in BOUNDS_US]
            h.add_metric([e, proto], _buckets(bounds, counts), self.lat_sum_us[proto] / 1e6)
        yield h
        h = HistogramMetricFamily("dnsflow_edge_response_size_bytes", "size of the answers sent",
                                  labels=["edge", "proto"])
        for proto in PROTOS:
            counts, total = _fold_sizes(self.sizes[proto])
            h.add_metric([e, proto], _buckets([str(b) for b in SIZE_BOUNDS], counts), total)
        yield h
        merged: dict[str, Any] = {}
        for fn in self.sources:
            merged.update(fn())
        yield from status_families(e, merged)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_all(self) -> bytes:
        """This process's scrape plus those of the edge's other workers (``siblings``: their
        /metrics URLs), added up (``metrics_merge``); a worker that does not answer within a
        second is left out of this scrape (``dnsflow_edge_workers_alive`` tells)."""
        urls = self.siblings()
        if not urls:
            return self.render()
        import asyncio

        import aiohttp

        from dnsflow.edge.metrics_merge import merge

        async def one(session: aiohttp.ClientSession, url: str) -> str:
            try:
                async with session.get(url) as r:
                    return await r.text() if r.status == 200 else ""
            except (aiohttp.ClientError, TimeoutError):
                return ""

        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            texts = await asyncio.gather(*(one(session, u) for u in urls))
        return merge([self.render().decode(), *(t for t in texts if t)])


def _buckets(bounds: list[str], counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from per-bucket counts (the last one is +Inf)."""
    out, acc = [], 0
    for bound, n in zip(bounds, counts, strict=False):
        acc += n
        out.append((bound, acc))
    out.append(("+Inf", acc + sum(counts[len(bounds):])))
    return out


def _fold_sizes(slots: list[int]) -> tuple[list[int], float]:
    """Per-16-byte counts -> counts per :data:`SIZE_BOUNDS` bucket (+Inf last) and the sum
    (each answer counted at its slot's upper end: at most 15 bytes over)."""
    counts = [0] * (len(SIZE_BOUNDS) + 1)
    total = 0.0
    for slot, n in enumerate(slots):
        if n:
            size = (slot + 1) << SIZE_STEP
            counts[bisect.bisect_left(SIZE_BOUNDS, size)] += n
            total += n * size
    return counts, total
