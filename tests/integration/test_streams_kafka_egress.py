"""The faust worker (``dnsflow streams --kafka``) on the edge's egress topic (#17), on the
real Kafka: dropped connection attempts on ``<prefix>egress`` become an ``unresolved_egress``
anomaly, malformed egress records go to the DLQ, and the egress offsets are committed only
after the outputs are published. Two layouts of the egress topic:

* the contract's (as many partitions as the events): co-partitioned, the detector's open
  window is in the partition checkpoint with the egress offset, so a worker killed mid-window
  is replaced by one that goes on counting the same window;
* one created by hand with another count (3, events 6): not co-partitioned, offsets
  committed once the batch's outputs are published.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from dnsflow.bus.kafka import KafkaBus
from dnsflow.topics import Topics
from harness.peers import stop_process
from tests.helpers.kafka_topics import committed, read

pytestmark = pytest.mark.kafka

T0 = 1_699_999_980_000_000  # minute-aligned, event time only


def drop(i: int, kind: str = "drop", client: str = "10.0.0.7") -> tuple[bytes, bytes]:
    e: dict[str, Any] = {"v": 1, "ts": T0 + i * 100_000, "edge": "node-1", "kind": kind,
                         "tenant": "shop", "namespace": "web", "pod": "web-1",
                         "client_ip": client, "dst_ip": f"203.0.113.{i + 1}",
                         "protocol": "tcp", "port": 443, "mode": "enforce"}
    if kind == "allow":
        e.update(qname="api.example.com", rule="web/egress#api", ttl=65)
    return b"shop", orjson.dumps(e)


def start_worker(bootstrap: str, prefix: str, cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "streams", "--kafka", bootstrap,
         "--topic-prefix", prefix, "--config", str(cfg), "--home", str(cfg.parent),
         "--metrics-listen", "off", "--log-level", "INFO"],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )


async def wait_committed(bootstrap: str, group: str, topic: str, want: int,
                         seconds: float = 90.0) -> int:
    got = 0
    for _ in range(int(seconds * 2)):
        got = await committed(bootstrap, group, topic)
        if got >= want:
            break
        await asyncio.sleep(0.5)
    return got


async def test_faust_worker_raises_unresolved_egress(kafka_bootstrap, topic_prefix, tmp_path):
    topics = Topics(topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # made by hand with another partition count than the events' 6
        await admin.create_topics([NewTopic(topics.egress, 3, 1)])
    finally:
        await admin.close()
    cfg = tmp_path / "dnsflow.yaml"
    cfg.write_text("streams:\n  idle_advance_s: 3600\n")
    log = tmp_path / "worker.log"
    bus = KafkaBus(kafka_bootstrap, topics)
    await bus.start()  # the other contract topics; the existing egress topic stays as it is
    proc = start_worker(kafka_bootstrap, topic_prefix, cfg, log)
    try:
        records = [drop(0, "allow"), *(drop(i) for i in range(1, 5))]
        records.append((b"shop", b'{"kind": "drop", "ts": 1}'))  # no client, no edge: DLQ
        await bus.send_many(bus.topics.egress, records)
        found = [orjson.loads(m.value)
                 for m in await read(bus, "anomalies", 1, seconds=90)]
        dlq = [orjson.loads(m.value) for m in await read(bus, "dlq", 1)]
        group = f"{topic_prefix}dnsflow-streams"
        done = await wait_committed(kafka_bootstrap, group, bus.topics.egress, len(records))
    finally:
        stop_process(proc, 30)
        await bus.stop()
    text = log.read_text()[-3000:]
    assert found, text
    assert {(a["kind"], a["tenant"], a["client_ip"]) for a in found} == {
        ("unresolved_egress", "shop", "10.0.0.7")}, text
    assert found[-1]["evidence"]["distinct_addresses"] == 4
    assert "203.0.113.2:443/tcp" in found[-1]["evidence"]["tried"]
    assert len(dlq) == 1 and dlq[0]["source_topic"] == f"{topic_prefix}egress"
    assert done == len(records), text  # committed once published
    assert "not co-partitioned" in text


async def test_copartitioned_egress_window_survives_a_killed_worker(kafka_bootstrap,
                                                                    topic_prefix, tmp_path):
    """The contract's egress topic has the events' partition count: the two attempts before
    the kill are in the partition checkpoint (their offsets committed with it), so the third
    attempt after the restart reaches ``min_attempts: 3`` in the same window."""
    topics = Topics(topic_prefix)
    cfg = tmp_path / "dnsflow.yaml"
    cfg.write_text("streams:\n  idle_advance_s: 3600\n  checkpoint_s: 0.5\n"
                   "  detectors:\n    unresolved_egress: {min_attempts: 3}\n")
    log = tmp_path / "worker.log"
    bus = KafkaBus(kafka_bootstrap, topics)
    await bus.start()  # the contract's topics: events and egress with 6 partitions
    group = f"{topic_prefix}dnsflow-streams"
    proc = start_worker(kafka_bootstrap, topic_prefix, cfg, log)
    try:
        await bus.send_many(bus.topics.egress, [drop(1), drop(2)])
        done = await wait_committed(kafka_bootstrap, group, bus.topics.egress, 2)
        assert done == 2, log.read_text()[-3000:]  # in a checkpoint
        proc.kill()
        proc.wait(timeout=10)
        assert await read(bus, "anomalies", 1, seconds=2) == []  # below min_attempts
        proc = start_worker(kafka_bootstrap, topic_prefix, cfg, log)
        await bus.send_many(bus.topics.egress, [drop(3)])
        found = [orjson.loads(m.value) for m in await read(bus, "anomalies", 1, seconds=90)]
    finally:
        stop_process(proc, 30)
        await bus.stop()
    text = log.read_text()[-3000:]
    assert len(found) == 1 and found[0]["kind"] == "unresolved_egress", text
    assert found[0]["evidence"]["attempts"] == 3, text
    assert found[0]["evidence"]["distinct_addresses"] == 3
    assert "is co-partitioned" in text and "resumed windows from 1 partition" in text
