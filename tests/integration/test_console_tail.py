"""``dnsflow tail --kafka``: filtered events from the real broker, one line (or JSON object)
each, and a quiet exit when piped to ``head``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from dnsflow.bus import open_bus

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.kafka


def _event(tenant: str, i: int, decision: str) -> dict:
    return {"v": 1, "ts": time.time_ns() // 1000, "edge": "tail-test", "tenant": tenant,
            "namespace": f"{tenant}-ns", "pod": f"web-{i}", "client_ip": "10.0.0.1",
            "transport": "udp", "qname": f"n{i}.{tenant}.example", "qtype": "A",
            "rcode": "NOERROR" if decision == "allow" else "NXDOMAIN", "answers": [],
            "latency_us": 1500, "cache": "miss", "decision": decision, "rule": "",
            "policy_version": 1, "upstream": ""}


async def _feed(bootstrap: str, prefix: str, proc: subprocess.Popen, until: float) -> int:
    """Publish a mix of tenants and decisions until the pipeline ends (bounded)."""
    bus = open_bus(bootstrap, prefix)
    await bus.start()
    sent = 0
    try:
        while proc.poll() is None and time.monotonic() < until:
            batch = [_event(t, sent + i, d) for i, (t, d) in
                     enumerate((("acme", "allow"), ("globex", "deny"), ("acme", "deny")))]
            await bus.send_many(bus.topics.events,
                                [(e["tenant"].encode(), orjson.dumps(e)) for e in batch])
            sent += len(batch)
            await asyncio.sleep(0.3)
    finally:
        await bus.stop()
    return sent


@pytest.mark.parametrize("mode", ["json", "text"])
def test_tail_filters_and_leaves_quietly_when_head_has_enough(kafka_bootstrap: str,
                                                              topic_prefix: str, mode: str):
    fmt = "--json" if mode == "json" else ""
    cmd = (f"set -o pipefail; {sys.executable} -m dnsflow tail --kafka {kafka_bootstrap} "
           f"--topic-prefix {topic_prefix} --tenant acme --decision deny {fmt} "
           "--seconds 60 | head -n 3")
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        asyncio.run(_feed(kafka_bootstrap, topic_prefix, proc, time.monotonic() + 45))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err  # pipefail: this is the tail's own exit status
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    lines = out.splitlines()
    assert len(lines) == 3
    if mode == "json":
        events = [json.loads(line) for line in lines]
        assert {(e["tenant"], e["decision"]) for e in events} == {("acme", "deny")}
    else:
        for line in lines:
            assert " acme/acme-ns/web-" in line and " -> deny NXDOMAIN 1.50ms " in line


def test_tail_without_kafka_or_a_running_up_says_what_to_do(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "dnsflow", "tail", "--home", str(tmp_path),
                          "--seconds", "1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "no live event stream" in out.stderr and "--kafka" in out.stderr
    assert out.stderr.count("\n") == 1
