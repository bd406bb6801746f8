"""``dnsflow tap --kafka`` as users run it: unbound sends dnstap to the command, and every
query comes back from ``dnsflow.events`` on the real broker as one schema-v1 event, keyed
by its tenant."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import dns.asyncquery
import dns.message
import msgspec
import pytest

from dnsflow.bus import open_bus
from dnsflow.schema import Event
from harness.peers import Unbound, stop_process, wait_for_path

pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(not shutil.which("unbound"), reason="unbound not installed")]

TENANTS = "clients:\n  - {cidr: 127.0.0.4/32, tenant: analytics, namespace: etl, pod: job-1}\n"


async def read_events(bootstrap: str, prefix: str, want: int, timeout: float = 30.0
                      ) -> list[tuple[bytes | None, Event]]:
    bus = open_bus(bootstrap, prefix)
    await bus.start()
    consumer = bus.consumer([bus.topics.events], group=None, from_beginning=True)
    await consumer.start()
    out: list[tuple[bytes | None, Event]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < want and loop.time() < deadline:
            for m in await consumer.getmany(timeout_ms=500, max_records=5000):
                out.append((m.key, msgspec.json.decode(m.value, type=Event)))
    finally:
        await consumer.stop()
        await bus.stop()
    return out


async def test_tap_command_publishes_unbound_queries_to_kafka(kafka_bootstrap: str,
                                                              topic_prefix: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="tap-kafka-"))
    sock = work / "tap.sock"
    (work / "tenants.yaml").write_text(TENANTS)
    log = open(work / "tap.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "tap", "--listen", f"unix:{sock}", "--kafka",
         kafka_bootstrap, "--topic-prefix", topic_prefix, "--home", str(work / "home"),
         "--tenant-map", str(work / "tenants.yaml"), "--name", "tap-kafka",
         "--log-level", "INFO"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ub = None
    try:
        wait_for_path(sock, proc, work / "tap.log", 30, "dnsflow tap")
        ub = Unbound([f"k{i}.bench.test. 300 IN A 10.1.0.{i}" for i in range(50)],
                     workdir=work / "unbound", dnstap_socket=str(sock)).start()
        names = [f"k{i}.bench.test" for i in range(50)]
        for name in names:
            await dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                                     port=ub.port, source="127.0.0.4", timeout=3)
        await asyncio.sleep(1.5)  # unbound's dnstap thread flushes about every second
    finally:
        if ub is not None:
            ub.stop()
        proc.send_signal(signal.SIGTERM)
        stop_process(proc, 30)
        log.close()
    out = (work / "tap.log").read_text()
    assert proc.returncode == 0, out[-2000:]
    assert "dnsflow tap: frames=" in out
    got = await read_events(kafka_bootstrap, topic_prefix, len(names) + 1)
    mine = [(k, e) for k, e in got if e.client_ip == "127.0.0.4"]
    assert sorted(e.qname for _, e in mine) == sorted(names)  # each exactly once
    for key, e in mine:
        assert key == b"analytics"
        assert (e.tenant, e.namespace, e.pod, e.rcode, e.edge) == (
            "analytics", "etl", "job-1", "NOERROR", socket.gethostname())
        assert e.answers == [f"A 10.1.0.{e.qname[1:].split('.')[0]}"]
    shutil.rmtree(work, ignore_errors=True)
