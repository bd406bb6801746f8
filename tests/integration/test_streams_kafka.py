"""Streams end to end on the real Kafka: events in; telemetry, anomalies, DLQ and an auto-deny
on the policies topic out — through the in-process driver and through the faust worker — and
the policy store an edge runs enforces the deny."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dnsflow.bus.kafka import KafkaBus
from dnsflow.schema import now_us
from dnsflow.settings import Settings
from dnsflow.topics import Topics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import labeled_traffic as lt

pytestmark = pytest.mark.kafka


def traffic() -> list[tuple[bytes, bytes]]:
    t0 = now_us() - 40_000_000
    evs = [lt.event(t0 + i * 100_000, "shop", f"10.0.0.{i % 4}", "www.example.com")
           for i in range(300)]
    evs += [lt.event(t0 + i * 200_000, "analytics", "10.0.3.77", n, qtype="TXT")
            for i, n in enumerate(lt.iter_names("iodine", 1, "relay-example.net", 100))]
    evs.sort(key=lambda e: e["ts"])
    recs = [(e["tenant"].encode(), orjson.dumps(e)) for e in evs]
    recs.insert(3, (b"shop", b"{broken"))
    return recs


async def read(bus: KafkaBus, short: str, want: int = 1, seconds: float = 30.0):
    c = bus.consumer([bus.topics.name(short)], None)
    await c.start()
    out = []
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        while asyncio.get_running_loop().time() < deadline:
            out.extend(await c.getmany(timeout_ms=300, max_records=1000))
            if len(out) >= want:
                # keep reading briefly for stragglers
                more = await c.getmany(timeout_ms=300, max_records=1000)
                out.extend(more)
                if not more:
                    break
    finally:
        await c.stop()
    return out


async def check_outputs(bus: KafkaBus) -> None:
    telemetry = [orjson.loads(m.value) for m in await read(bus, "telemetry", 2)]
    assert {t["tenant"] for t in telemetry} >= {"shop", "analytics"}
    anomalies = [orjson.loads(m.value) for m in await read(bus, "anomalies", 1)]
    assert any(a["kind"] == "tunneling" and a["domain"] == "relay-example.net"
               for a in anomalies)
    dlq = [orjson.loads(m.value) for m in await read(bus, "dlq", 1)]
    assert dlq and "not valid JSON" in dlq[0]["reason"] and dlq[0]["value"] == "{broken"
    policies = await read(bus, "policies", 1)
    assert policies and policies[-1].key == b"auto:analytics"
    api = pytest.importorskip("policies.api")
    store = api.PolicyStore()
    for m in policies:
        store.apply_record(m.key, m.value)
    client = api.ClientInfo(ip="10.0.3.77", tenant="analytics", namespace="analytics")
    verdict = store.decide(client, "abc.t.relay-example.net", "TXT")
    assert verdict.action == "deny" and verdict.rule.startswith("auto:")


async def test_in_process_driver_on_kafka(kafka_bootstrap, topic_prefix):
    from streams.service import build

    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    try:
        settings = Settings(kafka=kafka_bootstrap, topic_prefix=topic_prefix,
                            streams={"auto_response": {"enabled": True}, "idle_advance_s": 0.5})
        (svc,) = build(settings, bus)
        await svc.start()
        await bus.send_many(bus.topics.events, traffic())
        for _ in range(150):
            await asyncio.sleep(0.1)
            if svc.status()["events"] >= 400 and svc.status()["dlq"] == 1:
                break
        await svc.stop()
        await check_outputs(bus)
    finally:
        await bus.stop()


async def test_faust_worker_end_to_end(kafka_bootstrap, topic_prefix, tmp_path):
    cfg = tmp_path / "dnsflow.yaml"
    cfg.write_text("streams:\n  auto_response: {enabled: true}\n  idle_advance_s: 0.5\n")
    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "streams", "--kafka", kafka_bootstrap,
         "--topic-prefix", topic_prefix, "--config", str(cfg), "--home", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await bus.send_many(bus.topics.events, traffic())
        await check_outputs(bus)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        await bus.stop()
