"""With ``--workers N`` the kernel spreads queries over N processes; one scrape of worker 0's
/metrics counts them all (issue #13: "aggregated across edge workers")."""

from __future__ import annotations

import asyncio

import dns.message
import dns.query
import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.peers import free_port
from tests.helpers.waiting import until


def _total(text: str, sample: str, **labels: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def _ask(port: int, n: int) -> int:
    """``n`` queries, each from a new socket (a new source port: the kernel's SO_REUSEPORT
    hash sends them to different workers)."""
    answered = 0
    for i in range(n):
        q = dns.message.make_query(f"q{i}.example.com", "A")
        try:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
            answered += 1
        except dns.exception.Timeout:
            pass
    return answered


async def test_one_scrape_counts_every_workers_queries(start_edge, tmp_path) -> None:
    port = free_port()
    svc = await start_edge(listen=f"127.0.0.1:{port}", workers=2,
                           spool_dir=str(tmp_path / "spool"), metrics_listen="127.0.0.1:0")
    url = f"http://127.0.0.1:{svc.status()['metrics_port']}/metrics"
    async with httpx.AsyncClient(trust_env=False) as http:
        await until(lambda: svc.status()["workers_alive"] == 1, timeout=20, interval=0.05)
        # the worker serves its metrics once it is up: wait until the scrape includes it
        for _ in range(200):
            if 'component="edge"' in (text := (await http.get(url)).text) and _total(
                    text, "dnsflow_build_info") >= 1 and svc.metrics.siblings():
                break
            await asyncio.sleep(0.05)
        answered = await asyncio.to_thread(_ask, port, 80)
        assert answered == 80
        text = (await http.get(url)).text
    own = _total(svc.metrics.render().decode(), "dnsflow_edge_requests_total")
    merged = _total(text, "dnsflow_edge_requests_total")
    assert merged == 80, text
    assert 0 < own < 80  # worker 0 alone saw only its share
    assert _total(text, "dnsflow_edge_responses_total") == 80
    assert _total(text, "dnsflow_edge_request_duration_seconds_count", proto="udp") == 80
    assert _total(text, "dnsflow_edge_response_size_bytes_count", proto="udp") == 80
    # one build_info and one start time for the node, not one per worker
    assert _total(text, "dnsflow_build_info") == 1
    assert _total(text, "dnsflow_edge_workers_alive") == 1
