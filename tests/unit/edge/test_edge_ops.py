"""/metrics, /healthz and /readyz as an operator (and Prometheus) sees them."""

from __future__ import annotations

import asyncio

import dns.asyncquery
import dns.message
import httpx
from prometheus_client.parser import text_string_to_metric_families


async def test_metrics_health_and_readiness(start_edge) -> None:
    svc = await start_edge(metrics_listen="127.0.0.1:0")
    base = f"http://127.0.0.1:{svc.status()['metrics_port']}"
    port = svc.status()["udp_port"]
    for _ in range(3):
        q = dns.message.make_query("web.shop.svc.cluster.local", "A")
        await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    for _ in range(100):
        if svc.publisher.published >= 3:
            break
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient() as http:
        assert (await http.get(base + "/healthz")).status_code == 200
        for _ in range(100):
            ready = await http.get(base + "/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert ready.status_code == 200 and ready.json()["upstream_up"] is True
        text = (await http.get(base + "/metrics")).text
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    def get(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"edge": "edge-test", **labels}.items())))]
    assert get("dnsflow_edge_responses_total", tenant="shop", rcode="NOERROR",
               decision="allow", cache="miss") == 1
    assert get("dnsflow_edge_responses_total", tenant="shop", rcode="NOERROR",
               decision="allow", cache="hit") == 2
    # CoreDNS's shape: requests by proto, family and type; durations and sizes by proto
    assert get("dnsflow_edge_requests_total", tenant="shop", proto="udp", family="1",
               type="A") == 3
    assert get("dnsflow_edge_request_duration_seconds_count", proto="udp") == 3
    assert get("dnsflow_edge_request_duration_seconds_count", proto="tcp") == 0
    assert get("dnsflow_edge_response_size_bytes_count", proto="udp") == 3
    # one A record: 49-64 bytes, counted at the top of its 16-byte slot
    assert get("dnsflow_edge_response_size_bytes_bucket", proto="udp", le="64") == 3
    assert get("dnsflow_edge_response_size_bytes_sum", proto="udp") == 3 * 64
    assert get("dnsflow_edge_cache_hit_ratio") > 0.6
    assert get("dnsflow_edge_cache_hits_total") == 2
    assert get("dnsflow_edge_cache_misses_total") == 1
    [(ups, n)] = [(dict(lab), v) for (name, lab), v in samples.items()
                  if name == "dnsflow_edge_upstream_requests_total"]
    assert n == 1
    assert get("dnsflow_edge_upstream_request_duration_seconds_count", **{
        "upstream": ups["upstream"]}) == 1
    assert get("dnsflow_edge_upstream_failures_total", upstream=ups["upstream"]) == 0
    assert get("dnsflow_edge_rate_limited_total") == 0
    assert samples[("dnsflow_build_info", tuple(sorted({
        "component": "edge", "version": _version(), "python": _python()}.items())))] == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
    assert get("dnsflow_edge_events_published_total") == 3
    assert get("dnsflow_edge_events_dropped_total") == 0
    up = [v for (n, lab), v in samples.items() if n == "dnsflow_edge_upstream_up"]
    assert up == [1.0]
    assert get("dnsflow_edge_policy_ready") == 1.0
    assert get("dnsflow_edge_identity_entries", kind="cidrs") == 1


async def test_readyz_is_503_without_a_healthy_upstream(start_edge, upstream) -> None:
    svc = await start_edge(metrics_listen="127.0.0.1:0", upstream_timeout=0.2,
                           health_interval=0.1)
    upstream.silent = True
    for _ in range(3):  # fail enough queries to mark it down
        q = dns.message.make_query(f"x{_}.example.com", "A")
        await dns.asyncquery.udp(q, "127.0.0.1", port=svc.status()["udp_port"], timeout=3)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{svc.status()['metrics_port']}/readyz")
    assert r.status_code == 503 and r.json()["upstream_up"] is False


def _version() -> str:
    from dnsflow.buildinfo import dnsflow_version

    return dnsflow_version()


def _python() -> str:
    import platform

    return platform.python_version()
