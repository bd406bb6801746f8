"""``dnsflow edge --workers 2``: two processes share the port (SO_REUSEPORT), both answer,
and every query becomes one event in Kafka; SIGTERM stops both gracefully."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.fake_upstream import FakeUpstream
from harness.peers import count_events, cpu_seconds, dns_probe, free_port, stop_process, wait_dns

pytestmark = pytest.mark.kafka

N = 2000  # enough for each process to accumulate CPU ticks


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def test_two_workers_share_the_port(kafka_bootstrap: str, topic_prefix: str,
                                          tmp_path: Path) -> None:
    up = FakeUpstream(["example.com. 60 IN A 192.0.2.1"])
    await up.start()
    port = free_port()
    cmd = [sys.executable, "-m", "dnsflow", "edge", "--kafka", kafka_bootstrap,
           "--topic-prefix", topic_prefix, "--home", str(tmp_path), "--listen",
           f"127.0.0.1:{port}", "--upstream", up.address, "--workers", "2", "--name", "w"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_dns, port, 30, proc)
        for _ in range(100):
            kids = children(proc.pid)
            if kids:
                break
            await asyncio.sleep(0.1)
        assert len(kids) == 1
        worker = kids[0]
        await asyncio.sleep(2.0)  # the worker binds the port
        before = {p: cpu_seconds(p) for p in (proc.pid, worker)}

        def load() -> int:
            ok = 0
            for i in range(N):  # a new source port each time spreads over the workers
                reply = dns_probe(port, "example.com" if i % 2 else f"n{i}.example.com",
                                  timeout=2)
                ok += reply is not None
            return ok

        answered = await asyncio.to_thread(load)
        assert answered == N
        after = {p: cpu_seconds(p) for p in (proc.pid, worker)}
        assert all(after[p] > before[p] for p in before)
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        assert proc.returncode == 0
        assert not children(proc.pid)
        deadline = time.monotonic() + 20
        events = 0
        while time.monotonic() < deadline:
            events = await count_events(kafka_bootstrap, topic_prefix + "events")
            if events >= N + 1:
                break
            await asyncio.sleep(0.5)
        # every query (and the readiness probes) became one event
        assert N + 1 <= events <= N + 5
    finally:
        stop_process(proc)
        await up.stop()
