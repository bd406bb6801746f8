import asyncio
import subprocess
import sys

import orjson
from streams_helpers import T0, read_all

from dnsflow.bus.memory import MemoryBus
from dnsflow.settings import Settings
from dnsflow.streams.service import build


def traffic(ev, lt):
    events = [ev(T0 + i * 100_000, "shop", f"10.0.0.{i % 4}", "www.example.com")
              for i in range(300)]
    events += [ev(T0 + i * 200_000, "analytics", "10.0.3.77", name, qtype="TXT")
               for i, name in enumerate(lt.iter_names("iodine", 1, "relay-example.net", 100))]
    return sorted(events, key=lambda e: e["ts"])


async def test_in_process_service_publishes_and_dead_letters(ev, lt):
    bus = MemoryBus()
    settings = Settings(streams={"auto_response": {"enabled": True}})
    (svc,) = build(settings, bus)
    await svc.start()
    records = [(e["tenant"].encode(), orjson.dumps(e)) for e in traffic(ev, lt)]
    records.insert(10, (b"shop", b"{not json"))
    records.insert(20, (b"shop", orjson.dumps({"v": 1, "ts": T0, "tenant": "shop"})))
    future = ev(T0 + 10 * 365 * 86_400_000_000 * 10, "shop", "10.0.0.1", "www.example.com")
    records.insert(30, (b"shop", orjson.dumps(future)))  # an edge clock far ahead
    await bus.send_many(bus.topics.events, records)
    for _ in range(100):
        await asyncio.sleep(0.02)
        if svc.status()["events"] >= len(records) - 3:
            break
    await svc.stop()
    t = bus.topics
    telemetry = [orjson.loads(m.value) for m in await read_all(bus, t.telemetry)]
    anomalies = [orjson.loads(m.value) for m in await read_all(bus, t.anomalies)]
    policies = await read_all(bus, t.policies)
    dlq = [orjson.loads(m.value) for m in await read_all(bus, t.dlq)]
    assert {x["tenant"] for x in telemetry} == {"shop", "analytics"}
    assert sum(x["queries"] for x in telemetry if x["window_s"] == 10) == len(records) - 3
    assert any(a["kind"] == "tunneling" for a in anomalies)
    assert policies and policies[0].key == b"auto:analytics"
    assert len(dlq) == 3 and {d["source_topic"] for d in dlq} == {t.events}
    assert "not valid JSON" in dlq[0]["reason"] and dlq[0]["value"] == "{not json"
    assert "edge: Field required" in dlq[1]["reason"]
    assert "clock skew" in dlq[2]["reason"]
    st = svc.status()
    assert st["dlq"] == 3 and st["tenants"]["analytics"]["anomalies"] >= 1
    assert st["recent_policy_updates"][0]["domain"] == "relay-example.net"
    assert bus.committed("dnsflow.dnsflow-streams", t.events, 0) is not None


def run_replay(tmp_path, lines, *args):
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    return subprocess.run([sys.executable, "-m", "dnsflow", "replay", str(f), *args,
                           "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, timeout=60)


def test_replay_cli_json_and_bad_lines(tmp_path, ev, lt):
    lines = [orjson.dumps(e) for e in traffic(ev, lt)]
    lines.insert(5, b"garbage")
    p = run_replay(tmp_path, lines, "--json")
    assert p.returncode == 0, p.stderr
    objs = [orjson.loads(x) for x in p.stdout.splitlines()]
    types = {o["type"] for o in objs}
    assert {"telemetry", "anomaly", "alert"} <= types
    assert "line 6: not valid JSON" in p.stderr
    assert "1 bad lines skipped" in p.stderr
    # same input, same output (event time, no wall clock in the logic)
    again = run_replay(tmp_path, lines, "--json")
    assert again.stdout == p.stdout


def test_replay_cli_text_and_missing_file(tmp_path, ev, lt):
    p = run_replay(tmp_path, [orjson.dumps(e) for e in traffic(ev, lt)])
    assert p.returncode == 0
    assert "anomaly" in p.stdout and "tunneling tenant=analytics" in p.stdout
    missing = subprocess.run([sys.executable, "-m", "dnsflow", "replay",
                              str(tmp_path / "nope.jsonl")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr


async def test_same_input_same_output_under_service_and_replay(ev, lt):
    from dnsflow.streams.config import StreamsConfig
    from dnsflow.streams.logic import StreamLogic

    events = traffic(ev, lt)
    direct = StreamLogic(StreamsConfig())
    for e in events:
        direct.process(dict(e))
    direct.flush()
    expected = sorted(orjson.dumps(o.value) for o in direct.drain()
                      if o.type in ("telemetry", "anomaly", "alert"))
    bus = MemoryBus()
    (svc,) = build(Settings(), bus)
    await svc.start()
    await bus.send_many(bus.topics.events, [(e["tenant"].encode(), orjson.dumps(e))
                                            for e in events])
    for _ in range(100):
        await asyncio.sleep(0.02)
        if svc.status()["events"] >= len(events):
            break
    await svc.stop()
    t = bus.topics
    got = []
    for topic in (t.telemetry, t.anomalies, t.alerts):
        got += [m.value for m in await read_all(bus, topic)]
    got.sort()
    assert got == expected


def test_worker_command_line_drops_only_the_workers_flag():
    from dnsflow.streams.cli import without_workers

    argv = ["streams", "--kafka", "k:9092", "--workers", "3", "--topic-prefix", "p."]
    assert without_workers(argv) == ["streams", "--kafka", "k:9092", "--topic-prefix", "p."]
    assert without_workers(["streams", "--workers=2", "--rules", "r.yaml"]) == [
        "streams", "--rules", "r.yaml"]


def test_streams_verb_needs_kafka(tmp_path):
    p = subprocess.run([sys.executable, "-m", "dnsflow", "streams", "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs --kafka" in p.stderr


def test_partition_clock_follows_the_slowest_active_partition():
    from dnsflow.streams.clock import PartitionClock

    clock = PartitionClock(grace_us=5, idle_s=5.0, warmup_s=1.5)
    assert clock.watermark(now=100.0) is None  # nothing seen yet
    clock.observe("p0", 1000, now=0.5)         # the warm-up starts with the first input
    assert clock.watermark(now=1.0) is None  # warming up: other partitions may have backlog
    clock.observe("p1", 400, now=2.5)        # a partition catching up
    assert clock.watermark(now=3.0) == 395
    clock.observe("p0", 1200, now=4.0)
    assert clock.watermark(now=4.5) == 395   # p1 still holds time back
    assert clock.watermark(now=8.0) == 1195  # p1 quiet for > idle_s: it no longer does
    assert clock.watermark(now=20.0) is None  # everything idle: the wall clock takes over
