"""The in-process streams service's /metrics, /healthz and /readyz, as Prometheus and a
kubelet see them: counts that match what was published, lag that drains, readiness that
follows the lag threshold."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from streams_helpers import T0

from dnsflow.bus.memory import MemoryBus
from dnsflow.settings import Settings
from dnsflow.streams.service import StreamsService


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_counts_lag_and_readiness(ev, lt) -> None:
    bus = MemoryBus()
    await bus.start()
    svc = StreamsService(Settings(), bus, metrics_listen="127.0.0.1:0", ready_max_lag=50,
                         lag_interval_s=0.05)
    # a backlog before the service starts: lag above the threshold, so not ready at first
    events = [ev(T0 + i * 100_000, "shop", f"10.0.0.{i % 4}", "www.example.com")
              for i in range(400)]
    events += [ev(T0 + i * 200_000, "analytics", "10.0.3.77", name, qtype="TXT")
               for i, name in enumerate(lt.iter_names("iodine", 1, "relay-example.net", 100))]
    events.sort(key=lambda e: e["ts"])
    records = [(e["tenant"].encode(), orjson.dumps(e)) for e in events]
    records.append((b"shop", b"{not json"))
    await bus.send_many(bus.topics.events, records)
    await svc._consumer.start()  # joined, nothing read yet: measure once
    await svc.lag.refresh()
    assert svc.lag.total() == len(records)
    assert svc.probe.readiness()[0] is False
    await svc.start()
    assert svc.ops is not None
    try:
        async with httpx.AsyncClient(base_url=svc.ops.url) as http:
            for _ in range(200):
                if svc.status()["events"] >= len(events) and svc.lag.total() == 0:
                    break
                await asyncio.sleep(0.05)
            svc.logic.flush()  # close every window so the counts are final
            await svc.pipeline.publish()
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["lag"] == 0 and ready.json()["assigned_partitions"] == 3
            assert (await http.get("/healthz")).status_code == 200
            m = scrape((await http.get("/metrics")).text)
    finally:
        await svc.stop()
    assert m[("dnsflow_streams_events_processed_total", ())] == len(events)
    assert m[("dnsflow_streams_dlq_records_total", ())] == 1
    windows = m[("dnsflow_streams_windows_closed_total", ())]
    assert windows == svc.logic.emitted["telemetry"] > 0
    tunneling = sum(v for (name, labels), v in m.items()
                    if name == "dnsflow_streams_detections_total"
                    and dict(labels)["kind"] == "tunneling")
    assert tunneling >= 1
    lags = {dict(labels)["partition"]: v for (name, labels), v in m.items()
            if name == "dnsflow_streams_consumer_lag_records"}
    assert lags == {"0": 0, "1": 0, "2": 0}
    assert m[("dnsflow_build_info", (("component", "streams"), *sorted(
        (k, v) for k, v in _build_labels().items())))] == 1


def _build_labels() -> dict[str, str]:
    import platform

    from dnsflow.buildinfo import dnsflow_version

    return {"python": platform.python_version(), "version": dnsflow_version()}
