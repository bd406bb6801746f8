"""The first path through every real part: a dnspython query to the edge is answered by
unbound, its event reaches the real Kafka, the sink stores it in ClickHouse (chDB), and
``dnsflow query`` returns it with the right tenant, qname, qtype and rcode — both while
``dnsflow up`` runs (through its query endpoint) and after it stopped (chDB directly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from harness.peers import Unbound, free_port, stop_process, wait_dns

pytestmark = pytest.mark.kafka


def dnsflow(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnsflow", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def query_rows(sql: str, common: list[str], env: dict[str, str]) -> list[dict]:
    out = dnsflow("query", *common, "--format", "json", sql, env=env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_query_to_edge_lands_in_clickhouse_via_kafka(tmp_path: Path, kafka_bootstrap: str,
                                                     topic_prefix: str) -> None:
    home = tmp_path / "home"
    edge_port = free_port()
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({
        "default": {"tenant": "unknown", "namespace": "unknown"},
        "clients": [{"cidr": "127.0.4.0/24", "tenant": "acme", "namespace": "acme-web"}],
    }))
    config = tmp_path / "dnsflow.yaml"
    config.write_text(yaml.safe_dump({"edge": {"tenant_map": str(tenants), "name": "edge-e2e"},
                                      "sink": {"batch_ms": 200}}))
    common = ["--kafka", kafka_bootstrap, "--topic-prefix", topic_prefix, "--home", str(home),
              "--clickhouse", f"chdb://{home / 'chdb'}", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with Unbound(["www.spine.test. 300 IN A 192.0.2.7"], zones=["spine.test"]) as unbound:
        edge_cfg = yaml.safe_load(config.read_text())
        edge_cfg["edge"].update({"listen": f"127.0.0.1:{edge_port}",
                                 "upstreams": [f"udp://127.0.0.1:{unbound.port}"]})
        config.write_text(yaml.safe_dump(edge_cfg))
        up = subprocess.Popen([sys.executable, "-m", "dnsflow", "up", *common], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_dns(edge_port, timeout=60, proc=up)
            answers = {}
            for qname, qtype in (("WWW.Spine.Test.", "A"), ("missing.spine.test.", "AAAA")):
                q = dns.message.make_query(qname, qtype)
                r = dns.query.udp(q, "127.0.0.1", port=edge_port, timeout=3,
                                  source="127.0.4.9")
                assert r.id == q.id
                answers[qname.lower().rstrip(".")] = r
            assert answers["www.spine.test"].rcode() == dns.rcode.NOERROR
            assert answers["www.spine.test"].answer[0][0].address == "192.0.2.7"
            assert answers["missing.spine.test"].rcode() == dns.rcode.NXDOMAIN

            sql = ("SELECT tenant, namespace, client_ip, qname, qtype, rcode, transport, edge "
                   "FROM dnsflow.dns_events WHERE qname LIKE '%spine.test' ORDER BY qname")
            rows: list[dict] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(rows) < 2:  # through the running process
                rows = query_rows(sql, common, env)
                time.sleep(0.5)
        finally:
            stop_process(up, 30)
    assert up.returncode == 0, up.stdout.read() if up.stdout else ""
    expected = [
        {"tenant": "acme", "namespace": "acme-web", "client_ip": "127.0.4.9",
         "qname": "missing.spine.test", "qtype": "AAAA", "rcode": "NXDOMAIN",
         "transport": "udp", "edge": "edge-e2e"},
        {"tenant": "acme", "namespace": "acme-web", "client_ip": "127.0.4.9",
         "qname": "www.spine.test", "qtype": "A", "rcode": "NOERROR",
         "transport": "udp", "edge": "edge-e2e"},
    ]
    assert rows == expected
    assert query_rows(sql, common, env) == expected  # after stop: chDB opened directly
