"""``unresolved_egress`` (#17): the edge's dropped connection attempts on the egress topic
become one anomaly per client (deduplicated), medium, high once many distinct addresses were
tried; through the detector, the in-process driver (a second consumer) and replay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import orjson
from streams_helpers import T0, anomalies, make_logic, read_all

from dnsflow.bus.memory import MemoryBus
from dnsflow.schema import parse_anomaly
from dnsflow.settings import Settings
from dnsflow.streams import egress_input
from dnsflow.streams.service import build


def egress(ts: int, kind: str, dst: str, port: int = 443, client: str = "10.0.0.7",
           mode: str = "enforce") -> dict[str, Any]:
    return {"v": 1, "ts": ts, "edge": "node-1", "kind": kind, "tenant": "shop",
            "namespace": "web", "pod": "web-1", "client_ip": client, "dst_ip": dst,
            "protocol": "tcp", "port": port, "mode": mode,
            **({"qname": "api.example.com", "rule": "web/egress#api", "ttl": 65}
               if kind == "allow" else {})}


def scan(n: int, start: int = 0) -> list[dict[str, Any]]:
    """A client trying ``n`` distinct addresses it never resolved, one every 100 ms."""
    return [egress(T0 + (start + i) * 100_000, "drop", f"203.0.113.{start + i + 1}")
            for i in range(n)]


def test_dropped_attempts_are_one_incident_medium_then_high():
    logic = make_logic()
    det = egress_input.detector(logic)
    assert det is not None
    det.observe_egress(egress(T0, "allow", "198.51.100.1"))  # allowances are not attempts
    assert logic.drain() == []
    for e in scan(3):
        det.observe_egress(e)
    first = anomalies(logic.drain(), "unresolved_egress")
    assert len(first) == 1  # deduplicated: one incident, updates only when it grows
    a = first[0]
    parse_anomaly(a)  # a valid anomaly record
    assert (a["tenant"], a["client_ip"], a["severity"]) == ("shop", "10.0.0.7", "medium")
    assert a["evidence"]["tried"] == ["203.0.113.1:443/tcp"]
    assert a["evidence"]["pod"] == "web-1" and a["evidence"]["modes"] == ["enforce"]
    for e in scan(12, start=3):
        det.observe_egress(e)
    later = anomalies(logic.drain(), "unresolved_egress")
    assert later and later[-1]["severity"] == "high"
    ev = later[-1]["evidence"]
    assert ev["distinct_addresses"] >= 10 and "203.0.113.10:443/tcp" in ev["tried"]


def test_audit_attempts_count_unless_configured_off():
    logic = make_logic()
    det = egress_input.detector(logic)
    det.observe_egress(egress(T0, "would_drop", "203.0.113.9", mode="audit"))
    [a] = anomalies(logic.drain(), "unresolved_egress")
    assert a["evidence"]["modes"] == ["audit"]
    quiet = make_logic(detectors={"unresolved_egress": {"audit": False}})
    egress_input.detector(quiet).observe_egress(egress(T0, "would_drop", "203.0.113.9",
                                                       mode="audit"))
    assert quiet.drain() == []
    off = make_logic(detectors={"unresolved_egress": {"enabled": False}})
    assert egress_input.detector(off) is None


def test_min_attempts_and_clients_apart():
    logic = make_logic(detectors={"unresolved_egress": {"min_attempts": 3}})
    det = egress_input.detector(logic)
    det.observe_egress(egress(T0, "drop", "203.0.113.1"))
    det.observe_egress(egress(T0 + 1, "drop", "203.0.113.1", client="10.0.0.8"))
    det.observe_egress(egress(T0 + 2, "drop", "203.0.113.1"))
    assert logic.drain() == []
    det.observe_egress(egress(T0 + 3, "drop", "203.0.113.1", port=22))
    [a] = anomalies(logic.drain(), "unresolved_egress")
    assert a["client_ip"] == "10.0.0.7" and a["evidence"]["attempts"] == 3
    assert a["evidence"]["tried"] == ["203.0.113.1:443/tcp", "203.0.113.1:22/tcp"]



async def test_the_in_process_driver_consumes_the_egress_topic():
    bus = MemoryBus()
    (svc,) = build(Settings(), bus)
    await svc.start()
    records = [(b"shop", orjson.dumps(e)) for e in [egress(T0, "allow", "198.51.100.1"),
                                                      *scan(4)]]
    records.append((b"shop", b'{"kind": "drop", "ts": 1}'))  # no client, no edge: DLQ
    await bus.send_many(bus.topics.egress, records)
    for _ in range(100):
        await asyncio.sleep(0.02)
        if svc.status().get("egress_records", 0) >= len(records):
            break
    await svc.stop()
    found = [orjson.loads(m.value) for m in await read_all(bus, bus.topics.anomalies)]
    assert {(a["kind"], a["client_ip"]) for a in found} == {("unresolved_egress", "10.0.0.7")}
    assert found[-1]["evidence"]["distinct_addresses"] == 4  # one incident and its updates
    assert [a["evidence"].get("update", 0) for a in found] == list(range(len(found)))
    dlq = [orjson.loads(m.value) for m in await read_all(bus, bus.topics.dlq)]
    assert len(dlq) == 1 and dlq[0]["source_topic"] == bus.topics.egress
    assert bus.committed("dnsflow.dnsflow-streams-egress", bus.topics.egress, 0) is not None


def test_replay_takes_egress_records_mixed_in(tmp_path, ev):
    lines = [orjson.dumps(ev(T0 + i * 100_000, "shop", "10.0.0.7", "www.example.com"))
             for i in range(20)]
    lines[5:5] = [orjson.dumps(e) for e in scan(3)]
    lines.insert(2, orjson.dumps(egress(T0, "allow", "198.51.100.1")))
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    p = subprocess.run([sys.executable, "-m", "dnsflow", "replay", str(f), "--json",
                        "--home", str(tmp_path / "home")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    objs = [orjson.loads(x) for x in p.stdout.splitlines()]
    found = [o for o in objs if o["type"] == "anomaly" and o["kind"] == "unresolved_egress"]
    assert len(found) == 1 and found[0]["client_ip"] == "10.0.0.7"
    assert "0 bad lines skipped" in p.stderr


async def test_tracked_egress_goes_into_the_partition_checkpoint_and_skips_repeats():
    """The faust worker with the egress topic co-partitioned with the events: a tenant seen
    only on the egress topic is owned by that partition, whose checkpoint carries the
    detector's open window and the last egress offset; a resumed logic goes on counting and
    records the checkpoint includes are skipped when read again."""
    from dnsflow.streams.checkpoint import read_meta, restore, snapshot
    from dnsflow.streams.pipeline import StreamsPipeline
    from dnsflow.topics import Topics

    sent: dict[str, list] = {}

    async def send(topic, records):
        sent.setdefault(topic, []).extend(records)
        return True

    settings = Settings(streams={"detectors": {"unresolved_egress": {"min_attempts": 3}}})
    p = StreamsPipeline(settings, Topics("x."), send, track_offsets=True)
    rows = [(2, i, b"shop", orjson.dumps(e)) for i, e in enumerate(scan(2))]
    rows.append((2, 2, b"shop", b"{broken"))
    await p.handle_egress("x.egress", rows, track=True)
    assert p.egress_done == {2: 2} and p.owner == {"shop": 2} and p.touched == {2}
    assert "x.anomalies" not in sent and p.dlq == 1  # two attempts: below min_attempts
    data = snapshot(p.logic, {"shop"}, {"partition": 2, "offset": -1,
                                        "egress_offset": p.egress_done[2]})

    q = StreamsPipeline(settings, Topics("x."), send, track_offsets=True)
    restore(q.logic, [data])
    q.egress_done[2] = read_meta(data)["egress_offset"]
    again = [(2, 1, b"shop", orjson.dumps(scan(2)[1])),           # in the checkpoint
             (2, 3, b"shop", orjson.dumps(scan(1, start=2)[0]))]  # new: the third attempt
    await q.handle_egress("x.egress", again, track=True)
    assert q.duplicates == 1 and q.egress_done == {2: 3}
    [a] = [orjson.loads(v) for _, v in sent["x.anomalies"]]
    assert a["kind"] == "unresolved_egress" and a["evidence"]["attempts"] == 3
    assert a["evidence"]["distinct_addresses"] == 3
