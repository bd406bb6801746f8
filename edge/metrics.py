"""Prometheus metrics, counted in plain dicts on the answer path and exposed on scrape.

Why not ``Counter.labels().inc()`` per query: label lookup plus histogram observe cost a few
microseconds, a noticeable share of a cache hit; a dict increment costs ~50 ns.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

BOUNDS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000,
             500_000, 1_000_000, 2_500_000)
_CONN_EVENTS = ("accepted", "refused", "evicted", "idle_closed", "read_timeouts",
                "handshake_timeouts", "handshake_failed", "write_paused", "write_overflow",
                "h2_rapid_reset_goaway", "h2_resets", "bad_headers", "protocol_errors")


class EdgeMetrics:
    def __init__(self, edge: str) -> None:
        self.edge = edge
        self.queries: dict[tuple[str, str, str, str], int] = {}
        # per-label counters the memoised hit path bumps as ``cell[0] += 1`` (no tuple hash)
        self.cells: dict[tuple[str, str, str, str], list[int]] = {}
        self.lat = [0] * (len(BOUNDS_US) + 1)
        self.lat_sum_us = 0
        self.sources: list[Callable[[], dict[str, Any]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

    def observe(self, tenant: str, rcode: str, decision: str, cache: str, lat_us: int) -> None:
        k = (tenant, rcode, decision, cache)
        q = self.queries
        q[k] = q.get(k, 0) + 1
        self.lat[bisect.bisect_left(BOUNDS_US, lat_us)] += 1
        self.lat_sum_us += lat_us

    def cell(self, key: tuple[str, str, str, str]) -> list[int]:
        """A one-item counter for these labels, added to ``queries`` when scraped."""
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = [0]
        return c

    def raw_counts(self) -> dict[tuple[str, str, str, str], int]:
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
        """Per-tenant series as the tenant may see them: an isolated query is counted as
        what it looks like, a missing name (decision "allow"), never as its own series:
        a separate one would tell the tenant which names belong to another tenant."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for (tenant, rcode, decision, cache), n in self.raw_counts().items():
            if self._isolated(decision, cache):
                decision = "allow"
            k = (tenant, rcode, decision, cache)
            totals[k] = totals.get(k, 0) + n
        return totals

    def isolated_count(self) -> int:
        """Isolated queries of all tenants: for operators, with no tenant label."""
        return sum(n for (_, _, decision, cache), n in self.raw_counts().items()
                   if self._isolated(decision, cache))

    def add_source(self, fn: Callable[[], dict[str, Any]]) -> None:
        """A callable returning {'cache': {...}, 'upstreams': {...}, 'events': {...}}."""
        self.sources.append(fn)

    def collect(self):  # prometheus collector protocol
        c = CounterMetricFamily("dnsflow_edge_queries", "queries answered",
                                labels=["edge", "tenant", "rcode", "decision", "cache"])
        for (tenant, rcode, decision, cache), n in self.query_counts().items():
            c.add_metric([self.edge, tenant, rcode, decision, cache], n)
        yield c
        c = CounterMetricFamily("dnsflow_edge_isolated_queries",
                                "queries for another tenant's names, answered as missing names "
                                "(all tenants: operators only, no tenant label)",
                                labels=["edge"])
        c.add_metric([self.edge], self.isolated_count())
        yield c
        buckets = []
        acc = 0
        for bound, n in zip(BOUNDS_US, self.lat, strict=False):
            acc += n
            buckets.append((str(bound / 1e6), acc))
        acc += self.lat[-1]
        buckets.append(("+Inf", acc))
        h = HistogramMetricFamily("dnsflow_edge_latency_seconds", "answer latency",
                                  labels=["edge"])
        h.add_metric([self.edge], buckets, self.lat_sum_us / 1e6)
        yield h
        merged: dict[str, Any] = {}
        for fn in self.sources:
            merged.update(fn())
        cache = merged.get("cache") or {}
        if cache:
            g = GaugeMetricFamily("dnsflow_edge_cache_hit_ratio", "cache hits / lookups",
                                  labels=["edge"])
            g.add_metric([self.edge], cache.get("hit_ratio", 0.0))
            yield g
            g = GaugeMetricFamily("dnsflow_edge_cache_entries", "cached answers",
                                  labels=["edge"])
            g.add_metric([self.edge], cache.get("entries", 0))
            yield g
        ups = merged.get("upstreams") or {}
        if ups:
            g = GaugeMetricFamily("dnsflow_edge_upstream_up", "1 if the upstream is healthy",
                                  labels=["edge", "upstream"])
            e = CounterMetricFamily("dnsflow_edge_upstream_errors", "upstream failures",
                                    labels=["edge", "upstream"])
            for name, st in ups.items():
                g.add_metric([self.edge, name], 1.0 if st.get("up") else 0.0)
                e.add_metric([self.edge, name], st.get("errors", 0))
            yield g
            yield e
        pol = merged.get("policy") or {}
        if pol:
            for key in ("applied", "rejected"):
                m = CounterMetricFamily(f"dnsflow_edge_policy_records_{key}",
                                        f"policy records {key}", labels=["edge"])
                m.add_metric([self.edge], pol.get(key, 0))
                yield m
            g = GaugeMetricFamily("dnsflow_edge_policy_ready", "1 once the policy is loaded",
                                  labels=["edge"])
            g.add_metric([self.edge], 1.0 if pol.get("ready") else 0.0)
            yield g
        ident = merged.get("identity") or {}
        if ident:
            g = GaugeMetricFamily("dnsflow_edge_identity_entries", "known clients",
                                  labels=["edge", "kind"])
            for kind in ("pods", "cidrs", "namespaces"):
                g.add_metric([self.edge, kind], ident.get(kind, 0))
            yield g
        ev = merged.get("events") or {}
        if ev:
            for key in ("published", "spooled", "dropped"):
                m = CounterMetricFamily(f"dnsflow_edge_events_{key}", f"events {key}",
                                        labels=["edge"])
                m.add_metric([self.edge], ev.get(key, 0))
                yield m
            g = GaugeMetricFamily("dnsflow_edge_spool_pending", "events waiting in the spool",
                                  labels=["edge"])
            g.add_metric([self.edge], ev.get("spool_pending", 0))
            yield g

        conns = merged.get("connections") or {}
        if conns:
            g = GaugeMetricFamily("dnsflow_edge_connections_open",
                                  "TCP+DoT+DoH connections held (the shared budget)",
                                  labels=["edge"])
            g.add_metric([self.edge], conns.get("open", 0))
            yield g
            m = CounterMetricFamily("dnsflow_edge_connections_budget",
                                    "connections refused or evicted by the shared budget",
                                    labels=["edge", "outcome"])
            for key in ("refused_full", "refused_client", "evicted"):
                m.add_metric([self.edge, key], conns.get(key, 0))
            yield m
            m = CounterMetricFamily("dnsflow_edge_connection_events",
                                    "stream connection guard events per listener",
                                    labels=["edge", "transport", "event"])
            for st in conns.get("listeners", []):
                for key in _CONN_EVENTS:
                    if key in st:
                        m.add_metric([self.edge, st.get("transport", ""), key], st[key])
            yield m
        rrl = merged.get("rrl") or {}
        if rrl.get("enabled"):
            m = CounterMetricFamily("dnsflow_edge_rrl_responses",
                                    "UDP answers withheld by response rate limiting",
                                    labels=["edge", "action"])
            m.add_metric([self.edge, "dropped"], rrl.get("dropped", 0))
            m.add_metric([self.edge, "slipped"], rrl.get("slipped", 0))
            yield m

    def render(self) -> bytes:
        return generate_latest(self.registry)
