"""The sink against the real Kafka broker and chDB, run as users run it: `dnsflow sink`.

* N events produced → exactly N rows;
* the sink SIGKILLed mid-batch several times (right after an insert, before its commit, and
  at a random moment inside ClickHouse's write of a batch) and restarted → still exactly N
  rows, each Kafka offset once;
* a poisoned record → one DLQ record naming it, and every other record stored.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from dnsflow.bus.kafka import KafkaBus
from dnsflow.schema import now_us
from dnsflow.topics import Topics

pytestmark = pytest.mark.kafka
DNSFLOW = [sys.executable, "-m", "dnsflow"]


def event(i: int) -> dict:
    return {
        "v": 1, "ts": now_us() - 5_000_000 + i, "edge": "node-1", "tenant": f"tenant-{i % 5}",
        "namespace": f"ns-{i % 5}", "client_ip": f"10.1.{i % 5}.{i % 200}", "transport": "udp",
        "qname": f"host{i % 700}.svc.example.com", "qtype": "A", "rcode": "NOERROR",
        "answers": ["192.0.2.7"], "latency_us": 100 + i % 900, "cache": "miss",
        "decision": "allow", "rule": "", "policy_version": 1, "upstream": "udp://127.0.0.1:53",
    }


async def produce(bootstrap: str, prefix: str, values: list[tuple[bytes, bytes]]) -> None:
    bus = KafkaBus(bootstrap, Topics(prefix))
    await bus.start()
    try:
        for i in range(0, len(values), 5000):
            await bus.send_many(bus.topics.events, values[i : i + 5000])
    finally:
        await bus.stop()


async def read_dlq(bootstrap: str, prefix: str, expect: int, timeout: float = 15) -> list[dict]:
    bus = KafkaBus(bootstrap, Topics(prefix), create_topics=False)
    consumer = bus.consumer([bus.topics.dlq], None)
    await consumer.start()
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.extend(orjson.loads(m.value) for m in await consumer.getmany(timeout_ms=500))
            if len(out) >= expect:
                # one more poll to catch an unexpected duplicate
                out.extend(orjson.loads(m.value) for m in await consumer.getmany(timeout_ms=1000))
                break
    finally:
        await consumer.stop()
    return out


def sink_cmd(bootstrap: str, prefix: str, home: Path, *extra: str) -> list[str]:
    return [*DNSFLOW, "sink", "--kafka", bootstrap, "--topic-prefix", prefix,
            "--home", str(home), "--group", f"{prefix}sink", "--log-level", "INFO", *extra]


def query(home: Path, sql: str) -> list[dict]:
    out = subprocess.run([*DNSFLOW, "query", "--home", str(home), "-f", "json", sql],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines()]


def counts(home: Path) -> dict:
    [row] = query(home, "SELECT count() AS n, uniqExact(kafka_partition, kafka_offset) AS u, "
                        "uniqExact(ts, qname, client_ip) AS e FROM dnsflow.dns_events")
    return row


def drain(bootstrap: str, prefix: str, home: Path, log: Path, *extra: str) -> dict:
    """Run the sink until it has been idle for 3 s; return its final status line."""
    with log.open("a") as err:
        out = subprocess.run(sink_cmd(bootstrap, prefix, home, "--idle-exit", "3", *extra),
                             stdout=subprocess.PIPE, stderr=err, text=True, timeout=120,
                             check=False)
    assert out.returncode == 0, log.read_text()[-2000:]
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def killed_by_fault(cmd: list[str], fault: str, log: Path) -> None:
    """Run the sink with ``DNSFLOW_SINK_FAULT=fault``: it must die by SIGKILL at that point."""
    with log.open("a") as err:
        p = subprocess.run(cmd, env={**os.environ, "DNSFLOW_SINK_FAULT": fault},
                           stdout=subprocess.DEVNULL, stderr=err, timeout=120, check=False)
    assert p.returncode == -signal.SIGKILL, log.read_text()[-2000:]


def test_n_events_exactly_n_rows_and_poison_to_dlq(kafka_bootstrap, topic_prefix, tmp_path):
    n = 5000
    values = [(f"tenant-{i % 5}".encode(), orjson.dumps(event(i))) for i in range(n)]
    poison = orjson.dumps({**event(n), "transport": "pigeon"})
    values.insert(2500, (b"tenant-0", poison))
    asyncio.run(produce(kafka_bootstrap, topic_prefix, values))

    status = drain(kafka_bootstrap, topic_prefix, tmp_path, tmp_path / "sink.log",
                   "--batch-rows", "1000")
    assert status["stored"] == {"dns_events": n} and status["rejected"] == 1
    assert counts(tmp_path) == {"n": n, "u": n, "e": n}
    dlq = asyncio.run(read_dlq(kafka_bootstrap, topic_prefix, 1))
    assert len(dlq) == 1
    assert dlq[0]["source_topic"] == f"{topic_prefix}events" and "transport" in dlq[0]["reason"]
    assert orjson.loads(dlq[0]["value"])["transport"] == "pigeon"
    # running again finds everything committed: nothing more is stored
    again = drain(kafka_bootstrap, topic_prefix, tmp_path, tmp_path / "sink.log")
    assert again["records"] == 0 and counts(tmp_path)["n"] == n


def test_sigkill_mid_batch_repeatedly_still_exactly_n(kafka_bootstrap, topic_prefix, tmp_path):
    n = 40_000
    values = [(f"tenant-{i % 5}".encode(), orjson.dumps(event(i))) for i in range(n)]
    asyncio.run(produce(kafka_bootstrap, topic_prefix, values))
    log = tmp_path / "sink.log"
    # commit after every batch, so "the n-th insert" is a well-defined moment to die at
    batch = ["--batch-rows", "1500", "--batch-ms", "100", "--commit-ms", "0"]
    cmd = sink_cmd(kafka_bootstrap, topic_prefix, tmp_path, *batch)

    # 1-2: killed right after an insert, before its offsets were committed (worst moment)
    for nth in (2, 3):
        killed_by_fault(cmd, f"after-insert:{nth}", log)
    stored_before_random_kills = counts(tmp_path)["n"]
    assert 0 < stored_before_random_kills < n

    # 3-4: killed at a random moment inside ClickHouse's write of a random batch
    rng = random.Random(7)
    for _ in range(2):
        before = counts(tmp_path)["n"]
        killed_by_fault(cmd, f"during-insert:{rng.randint(1, 3)}", log)
        assert counts(tmp_path)["n"] >= before
    assert counts(tmp_path)["n"] < n, "the kills should land before the end"

    status = drain(kafka_bootstrap, topic_prefix, tmp_path, log, *batch)
    assert counts(tmp_path) == {"n": n, "u": n, "e": n}
    text = log.read_text()
    assert text.count("fault injection: SIGKILL at after-insert") == 2
    assert text.count("fault injection: SIGKILL during during-insert") == 2
    assert text.count("already stored; skipping them") >= 2  # the replays were reconciled
    assert status["rejected"] == 0
