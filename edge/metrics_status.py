"""Metric families built on scrape from the edge's status (cache, upstreams, policy, identity,
events, connections, RRL, resolver counters): nothing here runs on the answer path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dnsflow.edge.upstream.pool import UPSTREAM_BOUNDS_S

_CONN_EVENTS = ("accepted", "refused", "evicted", "idle_closed", "read_timeouts",
                "handshake_timeouts", "handshake_failed", "write_paused", "write_overflow",
                "h2_rapid_reset_goaway", "h2_resets", "bad_headers", "protocol_errors")


def _counter(name: str, doc: str, edge: str, value: float) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=["edge"])
    m.add_metric([edge], value)
    return m


def _gauge(name: str, doc: str, edge: str, value: float) -> GaugeMetricFamily:
    m = GaugeMetricFamily(name, doc, labels=["edge"])
    m.add_metric([edge], value)
    return m


def status_families(edge: str, st: dict[str, Any]) -> Iterator[Metric]:
    yield from _cache(edge, st.get("cache") or {})
    yield from _upstreams(edge, st.get("upstreams") or {})
    yield from _policy(edge, st.get("policy") or {})
    ident = st.get("identity") or {}
    if ident:
        g = GaugeMetricFamily("dnsflow_edge_identity_entries", "known clients",
                              labels=["edge", "kind"])
        for kind in ("pods", "cidrs", "namespaces"):
            g.add_metric([edge, kind], ident.get(kind, 0))
        yield g
    yield from _events(edge, st.get("events") or {})
    res = st.get("resolver") or {}
    if res:
        yield _counter("dnsflow_edge_rate_limited", "queries refused by a policy rate limit",
                       edge, res.get("rate_limited", 0))
        yield _counter("dnsflow_edge_denied", "queries denied by policy", edge,
                       res.get("denied", 0))
        yield _counter("dnsflow_edge_malformed_requests", "requests dropped or answered "
                       "FORMERR as malformed", edge, res.get("formerr", 0) + res.get("dropped", 0))
    yield from _connections(edge, st.get("connections") or {})
    rrl = st.get("rrl") or {}
    if rrl.get("enabled"):
        m = CounterMetricFamily("dnsflow_edge_rrl_responses",
                                "UDP answers withheld by response rate limiting",
                                labels=["edge", "action"])
        m.add_metric([edge, "dropped"], rrl.get("dropped", 0))
        m.add_metric([edge, "slipped"], rrl.get("slipped", 0))
        yield m


def _cache(edge: str, cache: dict[str, Any]) -> Iterator[Metric]:
    if not cache:
        return
    yield _counter("dnsflow_edge_cache_hits", "answers from the cache (memoised hits "
                   "included)", edge, cache.get("hits", 0))
    yield _counter("dnsflow_edge_cache_misses", "lookups the cache could not answer", edge,
                   cache.get("misses", 0))
    yield _gauge("dnsflow_edge_cache_entries", "cached answers", edge, cache.get("entries", 0))
    yield _gauge("dnsflow_edge_cache_hit_ratio", "cache hits / lookups since start", edge,
                 cache.get("hit_ratio", 0.0))


def _upstreams(edge: str, ups: dict[str, Any]) -> Iterator[Metric]:
    if not ups:
        return
    g = GaugeMetricFamily("dnsflow_edge_upstream_up", "1 if the upstream is healthy",
                          labels=["edge", "upstream"])
    r = CounterMetricFamily("dnsflow_edge_upstream_requests", "requests forwarded",
                            labels=["edge", "upstream"])
    f = CounterMetricFamily("dnsflow_edge_upstream_failures",
                            "forwarded requests that failed (timeout, connection, bad reply)",
                            labels=["edge", "upstream"])
    h = HistogramMetricFamily("dnsflow_edge_upstream_request_duration_seconds",
                              "time for an upstream to answer", labels=["edge", "upstream"])
    for name, s in ups.items():
        g.add_metric([edge, name], 1.0 if s.get("up") else 0.0)
        r.add_metric([edge, name], s.get("queries", 0))
        f.add_metric([edge, name], s.get("errors", 0) + s.get("bad_replies", 0))
        counts = s.get("latency") or [0] * (len(UPSTREAM_BOUNDS_S) + 1)
        acc, buckets = 0, []
        for bound, n in zip(UPSTREAM_BOUNDS_S, counts, strict=False):
            acc += n
            buckets.append((str(bound), acc))
        buckets.append(("+Inf", acc + counts[-1]))
        h.add_metric([edge, name], buckets, s.get("latency_sum", 0.0))
    yield from (g, r, f, h)


def _policy(edge: str, pol: dict[str, Any]) -> Iterator[Metric]:
    if not pol:
        return
    for key in ("applied", "rejected"):
        yield _counter(f"dnsflow_edge_policy_records_{key}", f"policy records {key}", edge,
                       pol.get(key, 0))
    yield _gauge("dnsflow_edge_policy_ready", "1 once the policy is loaded", edge,
                 1.0 if pol.get("ready") else 0.0)


def _events(edge: str, ev: dict[str, Any]) -> Iterator[Metric]:
    if not ev:
        return
    for key in ("published", "spooled", "dropped"):
        yield _counter(f"dnsflow_edge_events_{key}", f"events {key}", edge, ev.get(key, 0))
    yield _gauge("dnsflow_edge_spool_pending", "events waiting in the spool", edge,
                 ev.get("spool_pending", 0))


def _connections(edge: str, conns: dict[str, Any]) -> Iterator[Metric]:
    if not conns:
        return
    yield _gauge("dnsflow_edge_connections_open",
                 "TCP+DoT+DoH connections held (the shared budget)", edge, conns.get("open", 0))
    m = CounterMetricFamily("dnsflow_edge_connections_budget",
                            "connections refused or evicted by the shared budget",
                            labels=["edge", "outcome"])
    for key in ("refused_full", "refused_client", "evicted"):
        m.add_metric([edge, key], conns.get(key, 0))
    yield m
    m = CounterMetricFamily("dnsflow_edge_connection_events",
                            "stream connection guard events per listener",
                            labels=["edge", "transport", "event"])
    for s in conns.get("listeners", []):
        for key in _CONN_EVENTS:
            if key in s:
                m.add_metric([edge, s.get("transport", ""), key], s[key])
    yield m
