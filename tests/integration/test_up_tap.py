"""``dnsflow up --tap-listen`` (issue #14): the embedded default ingests dnstap too. Debian's
unbound sends its dnstap stream to the tap inside ``dnsflow up``; after ``up`` stops, the
queries are rows of chDB's ``dns_events`` with the tenant the edge's identity settings give."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import orjson
import pytest

from harness.peers import Unbound, wait_for_path

pytestmark = pytest.mark.skipif(not shutil.which("unbound"), reason="unbound not installed")

TENANTS = """
clients:
  - {cidr: 127.0.0.2/32, tenant: shop, namespace: shop, pod: web-1}
  - {cidr: 127.0.0.3/32, tenant: payments, namespace: payments, pod: ledger-0}
"""
LOCAL = [f"h{i}.bench.test. 300 IN A 10.0.0.{i}" for i in range(20)]


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="up-tap-"))  # short: unix socket paths
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _stored(home: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "dnsflow", "query", "--home", str(home), "-f", "TSV",
         "SELECT count() FROM dnsflow.dns_events WHERE qname LIKE '%.bench.test'"],
        capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def test_up_with_a_tap_stores_dnstap_queries(workdir: Path) -> None:
    home, sock = workdir / "home", workdir / "tap.sock"
    (workdir / "tenants.yaml").write_text(TENANTS)
    (workdir / "dnsflow.yaml").write_text(orjson.dumps({
        "edge": {"listen": "127.0.0.1:0", "tenant_map": str(workdir / "tenants.yaml")},
        "sink": {"batch_ms": 100},
    }).decode())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (workdir / "up.log").open("w")
    up = subprocess.Popen([sys.executable, "-m", "dnsflow", "up", "--home", str(home),
                           "--config", str(workdir / "dnsflow.yaml"),
                           "--tap-listen", f"unix:{sock}"],
                          stdout=log, stderr=subprocess.STDOUT, env=env)
    ub = None
    try:
        wait_for_path(sock, up, workdir / "up.log", 60, "dnsflow up")
        ub = Unbound(LOCAL, workdir=workdir / "unbound", dnstap_socket=str(sock)).start()
        sent = []
        for i in range(40):
            client = "127.0.0.2" if i % 2 else "127.0.0.3"
            name = f"h{i % 20}.bench.test"
            dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=ub.port,
                          source=client, timeout=3)
            sent.append((client, name))
        # unbound flushes its dnstap queue about every second; the sink stores in batches:
        # ask the running `up` (its query endpoint) until every query is a row
        deadline = time.monotonic() + 60
        while _stored(home) < len(sent):
            assert up.poll() is None, (workdir / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{_stored(home)} of {len(sent)} stored"
            time.sleep(0.5)
    finally:
        if ub is not None:
            ub.stop()
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        finally:
            if up.poll() is None:
                up.kill()
            log.close()
    text = (workdir / "up.log").read_text()
    assert f"unix:{sock}" in text, text[-2000:]  # up said where the tap listens
    out = subprocess.run(
        [sys.executable, "-m", "dnsflow", "query", "--home", str(home), "-f", "json",
         "SELECT client_ip, qname, tenant, pod, edge, rcode FROM dnsflow.dns_events "
         "WHERE qname LIKE '%.bench.test' ORDER BY client_ip, qname"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert sorted((r["client_ip"], r["qname"]) for r in rows) == sorted(sent)
    tenants = {"127.0.0.2": ("shop", "web-1"), "127.0.0.3": ("payments", "ledger-0")}
    for r in rows:
        assert (r["tenant"], r["pod"]) == tenants[r["client_ip"]]
        assert r["edge"] == socket.gethostname() and r["rcode"] == "NOERROR"
