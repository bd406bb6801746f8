"""Streams end to end on the real Kafka: events in; telemetry, anomalies, DLQ and an auto-deny
on the policies topic out — through the in-process driver and through the faust worker — and
the policy store an edge runs enforces the deny."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dnsflow.bus.kafka import KafkaBus
from dnsflow.schema import now_us
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from harness.peers import stop_process
from tests.helpers.kafka_topics import committed, read

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


async def check_outputs(bus: KafkaBus) -> None:
    # generous limits: a faust worker joining its group can take a while on a busy machine
    telemetry = [orjson.loads(m.value) for m in await read(bus, "telemetry", 2, seconds=90)]
    assert {t["tenant"] for t in telemetry} >= {"shop", "analytics"}
    anomalies = [orjson.loads(m.value) for m in await read(bus, "anomalies", 1, seconds=60)]
    assert any(a["kind"] == "tunneling" and a["domain"] == "relay-example.net"
               for a in anomalies)
    dlq = [orjson.loads(m.value) for m in await read(bus, "dlq", 1)]
    assert dlq and "not valid JSON" in dlq[0]["reason"] and dlq[0]["value"] == "{broken"
    policies = await read(bus, "policies", 1, seconds=60)
    assert policies and policies[-1].key == b"auto:analytics"
    api = pytest.importorskip("dnsflow.policies.api")
    store = api.PolicyStore()
    for m in policies:
        store.apply_record(m.key, m.value)
    client = api.ClientInfo(ip="10.0.3.77", tenant="analytics", namespace="analytics")
    verdict = store.decide(client, "abc.t.relay-example.net", "TXT")
    assert verdict.action == "deny" and verdict.rule.startswith("auto:")


async def test_in_process_driver_on_kafka(kafka_bootstrap, topic_prefix):
    from dnsflow.streams.service import build

    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    try:
        settings = Settings(kafka=kafka_bootstrap, topic_prefix=topic_prefix,
                            streams={"auto_response": {"enabled": True}, "idle_advance_s": 0.5})
        (svc,) = build(settings, bus)
        await svc.start()
        await bus.send_many(bus.topics.events, traffic())
        for _ in range(600):  # a new consumer group may wait for its coordinator a while
            await asyncio.sleep(0.1)
            if svc.status()["events"] >= 400 and svc.status()["dlq"] == 1:
                break
        assert svc.status()["events"] >= 400, svc.status()
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
        stop_worker(proc)
        await bus.stop()


def start_worker(kafka_bootstrap: str, topic_prefix: str, cfg: Path, log: Path):
    return subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "streams", "--kafka", kafka_bootstrap,
         "--topic-prefix", topic_prefix, "--config", str(cfg), "--home", str(cfg.parent)],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )


def stop_worker(proc: subprocess.Popen) -> None:
    """Gracefully (SIGTERM: the worker checkpoints and commits), killed after 30 s."""
    stop_process(proc, 30)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_restarted_faust_worker_resumes_its_windows(kafka_bootstrap, topic_prefix,
                                                         tmp_path, stop):
    """A worker stopped mid-window (gracefully, or killed with events processed since its
    last checkpoint) is replaced by one that resumes the window: every query counted once."""
    cfg = tmp_path / "dnsflow.yaml"
    cfg.write_text("streams:\n  windows: [60]\n  idle_advance_s: 3600\n")
    log = tmp_path / "worker.log"
    t0 = 1_699_999_980_000_000  # minute-aligned, event time only
    first = [lt.event(t0 + i * 200_000, "shop", "10.0.0.1", "www.example.com")
             for i in range(150)]                      # 0 s .. 30 s
    second = [lt.event(t0 + 30_000_000 + i * 200_000, "shop", "10.0.0.1", "www.example.com")
              for i in range(200)]                     # 30 s .. 70 s
    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    try:
        proc = start_worker(kafka_bootstrap, topic_prefix, cfg, log)
        await bus.send_many(bus.topics.events, [(b"shop", orjson.dumps(e)) for e in first])
        group = f"{topic_prefix}dnsflow-streams"
        for _ in range(120):  # until the first half is processed and checkpointed
            await asyncio.sleep(0.5)
            if await committed(kafka_bootstrap, group, bus.topics.events) >= len(first):
                break
        # 20 more (30 s .. 34 s): processed, not yet in a checkpoint when the worker is killed
        await bus.send_many(bus.topics.events, [(b"shop", orjson.dumps(e))
                                                for e in second[:20]])
        await asyncio.sleep(0.5)
        if stop == "sigkill":
            proc.kill()
            proc.wait(timeout=10)
        else:
            stop_worker(proc)
        assert await read(bus, "telemetry", 1, seconds=2) == []  # window still open
        proc = start_worker(kafka_bootstrap, topic_prefix, cfg, log)
        await bus.send_many(bus.topics.events, [(b"shop", orjson.dumps(e))
                                                for e in second[20:]])
        windows = [orjson.loads(m.value) for m in await read(bus, "telemetry", 1, seconds=60)]
        stop_worker(proc)
    finally:
        await bus.stop()
    first_minute = [w for w in windows if w["window_start"] == t0]
    assert first_minute, log.read_text()[-2000:]
    # 150 + 150 events (0 s .. 60 s) in the same window: without the checkpoint it would be
    # at most 150; offsets follow checkpoints, so the killed worker's last events are re-read
    assert [w["queries"] for w in first_minute] == [300], log.read_text()[-2000:]
    assert "resumed windows from 1 partition checkpoint" in log.read_text()


async def test_second_faust_worker_takes_over_partitions_without_double_counting(
        kafka_bootstrap, topic_prefix, tmp_path):
    """Scale-out: a second worker joins mid-window. The partitions it takes over move with
    their open windows (checkpointed, forgotten by the first worker, resumed by the second),
    so every tenant's minute is published once, with all of its queries."""
    cfg = tmp_path / "dnsflow.yaml"
    cfg.write_text("streams:\n  windows: [60]\n  idle_advance_s: 3600\n  checkpoint_s: 0.5\n")
    t0 = 1_699_999_980_000_000  # minute-aligned, event time only
    tenants = [f"team{i}" for i in range(8)]

    def events(start_s: int, stop_s: int) -> list[tuple[bytes, bytes]]:
        out = [lt.event(t0 + ms * 1000, t, f"10.0.{i}.1", "www.example.com")
               for ms in range(start_s * 1000, stop_s * 1000, 250)
               for i, t in enumerate(tenants)]
        return [(e["tenant"].encode(), orjson.dumps(e)) for e in out]

    first, second = events(0, 30), events(30, 70)
    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    procs = [start_worker(kafka_bootstrap, topic_prefix, cfg, logs[0])]
    try:
        await bus.send_many(bus.topics.events, first)
        group = f"{topic_prefix}dnsflow-streams"
        for _ in range(120):  # until the first half is processed and checkpointed
            await asyncio.sleep(0.5)
            if await committed(kafka_bootstrap, group, bus.topics.events) >= len(first):
                break
        procs.append(start_worker(kafka_bootstrap, topic_prefix, cfg, logs[1]))
        for _ in range(120):  # until the second worker owns partitions
            await asyncio.sleep(0.5)
            if "resumed windows" in logs[1].read_text():
                break
        await bus.send_many(bus.topics.events, second)
        await read(bus, "telemetry", len(tenants), seconds=90)
        await asyncio.sleep(3)  # a window published twice would come by now
        windows = [orjson.loads(m.value) for m in await read(bus, "telemetry", 10**6, 3)]
    finally:
        for p in procs:
            stop_worker(p)
        await bus.stop()
    text = "\n".join(p.read_text()[-1500:] for p in logs)
    minute = [(w["tenant"], w["queries"]) for w in windows
              if w["window_start"] == t0 and w["window_s"] == 60]
    assert "resumed windows" in logs[1].read_text(), text
    assert sorted(minute) == [(t, 240) for t in tenants], text


class _Hooks:
    """A webhook receiver on 127.0.0.1: every POSTed alert, in arrival order."""

    def __init__(self) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()

    async def wait_for(self, rule: str, seconds: float = 90.0) -> list[dict]:
        for _ in range(int(seconds * 10)):
            got = [a for a in self.received if a.get("rule") == rule]
            if got:
                return got
            await asyncio.sleep(0.1)
        return []

    def close(self) -> None:
        self.server.shutdown()


def _rules(url: str, rule_id: str, tenant: str) -> str:
    return (f"rules:\n  - id: {rule_id}\n    match: {{kind: [tunneling], tenant: [{tenant}]}}\n"
            f"    group_by: [tenant, client_ip]\n"
            f"    webhook: {{url: \"{url}/{rule_id}\", retries: 2, backoff_s: 0.1}}\n")


def _tunnel(tenant: str, client: str, domain: str) -> list[tuple[bytes, bytes]]:
    t0 = now_us() - 30_000_000
    evs = [lt.event(t0 + i * 200_000, tenant, client, n, qtype="TXT")
           for i, n in enumerate(lt.iter_names("iodine", 3, domain, 100))]
    return [(tenant.encode(), orjson.dumps(e)) for e in evs]


async def test_faust_worker_posts_webhooks_and_reloads_alert_rules(kafka_bootstrap,
                                                                  topic_prefix, tmp_path):
    """Issue #15: the faust worker (the production path) posts the alerts of rules with a
    webhook, and picks up an edited rule file without a restart."""
    hooks = _Hooks()
    rules = tmp_path / "rules.yaml"
    rules.write_text(_rules(hooks.url, "tunnel-hook", "analytics"))
    cfg = tmp_path / "dnsflow.yaml"
    cfg.write_text(f"streams:\n  alert_rules: {rules}\n  idle_advance_s: 0.5\n")
    log = tmp_path / "worker.log"
    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "streams", "--kafka", kafka_bootstrap,
         "--topic-prefix", topic_prefix, "--config", str(cfg), "--home", str(tmp_path),
         "--log-level", "INFO"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"),  # noqa: SIM115
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await bus.send_many(bus.topics.events, _tunnel("analytics", "10.0.3.77",
                                                       "relay-example.net"))
        first = await hooks.wait_for("tunnel-hook")
        assert first, log.read_text()[-3000:]
        assert first[0]["path"] == "/tunnel-hook" and first[0]["tenant"] == "analytics"
        assert first[0]["kinds"] == ["tunneling"]
        assert first[0]["domains"] == ["relay-example.net"]
        alerts = [orjson.loads(m.value) for m in await read(bus, "alerts", 1)]
        assert [a["rule"] for a in alerts] == ["tunnel-hook"]  # the same alert, on the topic

        # edit the rules: the old rule goes, a new one (another tenant) comes
        rules.write_text(_rules(hooks.url, "billing-hook", "billing"))
        st = rules.stat()
        os.utime(rules, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        for _ in range(300):
            if "alert rules reloaded" in log.read_text():
                break
            await asyncio.sleep(0.1)
        assert "alert rules reloaded" in log.read_text(), log.read_text()[-3000:]
        await bus.send_many(bus.topics.events, _tunnel("analytics", "10.0.3.78",
                                                       "other-relay.net")
                            + _tunnel("billing", "10.0.4.9", "exfil-example.org"))
        second = await hooks.wait_for("billing-hook")
        assert second, log.read_text()[-3000:]
        assert second[0]["path"] == "/billing-hook"
        assert second[0]["domains"] == ["exfil-example.org"]
        anomalies = [orjson.loads(m.value) for m in await read(bus, "anomalies", 3)]
        assert {a["domain"] for a in anomalies if a["kind"] == "tunneling"} >= {
            "relay-example.net", "other-relay.net", "exfil-example.org"}
        # the analytics tunnel after the reload matched no rule: no alert, no webhook
        assert [a["rule"] for a in hooks.received] == ["tunnel-hook", "billing-hook"]
    finally:
        stop_worker(proc)
        await bus.stop()
        hooks.close()
