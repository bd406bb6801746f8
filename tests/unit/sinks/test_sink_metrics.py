"""The sink's /metrics and /readyz as an operator reads them: rows per table, DLQ and batch
latency that match what was sent; not ready while ClickHouse does not answer."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dnsflow.bus.memory import MemoryBus
from dnsflow.settings import Settings
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.dsn import parse
from dnsflow.sinks.service import SinkService, build


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_counts_latency_and_lag_match_what_was_stored(tmp_path, events) -> None:
    bus = MemoryBus()
    [svc] = build(Settings(home=tmp_path), bus, config=SinkConfig(
        batch_rows=100, batch_ms=20, query_endpoint=False), metrics=True,
        metrics_listen="127.0.0.1:0", lag_interval_s=0.05)
    await svc.start()
    assert svc.ops is not None
    try:
        await bus.send_many(bus.topics.events, [*events.encoded(250), (b"t", b"{broken")])
        deadline = time.monotonic() + 10
        while (svc.status()["stored"].get("dns_events", 0) < 250 or svc.lag.total()) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # one more lag measurement after the last commit
        async with httpx.AsyncClient(base_url=svc.ops.url) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["schema_migrated"] is True
            assert (await http.get("/healthz")).status_code == 200
            m = scrape((await http.get("/metrics")).text)
    finally:
        await svc.stop()
    assert m[("dnsflow_sink_rows_stored_total", (("table", "dns_events"),))] == 250
    assert m[("dnsflow_sink_rows_stored_total", (("table", "anomalies"),))] == 0
    assert m[("dnsflow_sink_dlq_records_total", ())] == 1
    assert m[("dnsflow_sink_records_consumed_total", ())] == 251
    batches = m[("dnsflow_sink_batch_duration_seconds_count", ())]
    assert batches >= 3 and m[("dnsflow_sink_batch_duration_seconds_sum", ())] > 0
    assert m[("dnsflow_sink_last_error", ())] == 0
    assert m[("dnsflow_sink_reconcile_runs_total", ())] >= 1  # at start
    lag = {dict(lab)["partition"]: v for (n, lab), v in m.items()
           if n == "dnsflow_sink_consumer_lag_records"
           and dict(lab)["topic"] == bus.topics.events}
    assert lag and set(lag.values()) == {0}


async def test_not_ready_while_clickhouse_does_not_answer(tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = MemoryBus()
    svc = SinkService(bus, parse(f"http://127.0.0.1:{port}/dnsflow"),
                      SinkConfig(retry_initial_s=0.05, retry_max_s=0.1), tmp_path,
                      metrics=True, metrics_listen="127.0.0.1:0", ping_interval_s=0.05)
    await svc.start()  # a server that is away: the sink waits for it, it does not exit
    assert svc.ops is not None
    try:
        async with httpx.AsyncClient(base_url=svc.ops.url) as http:
            await asyncio.sleep(0.3)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["schema_migrated"] is False and body["clickhouse_reachable"] is False
            assert str(port) in body["last_error"]
            assert (await http.get("/healthz")).status_code == 200  # retrying is alive
            m = scrape((await http.get("/metrics")).text)
            assert m[("dnsflow_sink_last_error", ())] == 1
            assert m[("dnsflow_sink_schema_migrated", ())] == 0
            assert m[("dnsflow_sink_retries_total", ())] >= 1
    finally:
        svc.sink.abandon()
        await svc.stop()
