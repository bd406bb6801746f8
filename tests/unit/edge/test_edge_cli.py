"""`dnsflow edge` as a user runs it: bad flags and files get one clear line, JSON logs parse."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import orjson

from dnsflow.edge.logs import JsonFormatter


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dnsflow", "edge", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_bad_upstream_is_named(tmp_path: Path) -> None:
    r = run("--home", str(tmp_path), "--upstream", "ftp://1.2.3.4", "--no-events")
    assert r.returncode == 2
    assert "edge.upstreams" in r.stderr and "ftp://1.2.3.4" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_tenant_map_is_named(tmp_path: Path) -> None:
    m = tmp_path / "map.yaml"
    m.write_text("clients:\n  - {cidr: 10.0.0.0/33, tenant: a}\n")
    r = run("--home", str(tmp_path), "--tenant-map", str(m), "--listen", "127.0.0.1:0",
            "--upstream", "udp://127.0.0.1:9")
    assert r.returncode == 2
    assert f"tenant map {m}: clients[0]" in r.stderr and "10.0.0.0/33" in r.stderr


def test_workers_need_kafka(tmp_path: Path) -> None:
    r = run("--home", str(tmp_path), "--workers", "2")
    assert r.returncode == 2 and "--kafka" in r.stderr


def test_json_log_lines() -> None:
    rec = logging.LogRecord("edge.x", logging.ERROR, __file__, 1, "dropped %d events", (3,),
                            None)
    rec.spool = "/tmp/s"
    out = orjson.loads(JsonFormatter().format(rec))
    assert out["level"] == "ERROR" and out["msg"] == "dropped 3 events"
    assert out["spool"] == "/tmp/s" and out["logger"] == "edge.x"


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        r = run("--home", str(tmp_path), "--listen", f"127.0.0.1:{port}", "--upstream",
                "udp://127.0.0.1:9", "--no-events")
    assert r.returncode == 2
    assert "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_example_files_are_valid() -> None:
    from dnsflow.edge.config import EdgeConfig
    from dnsflow.edge.identity import load_static_map
    from dnsflow.settings import load_settings, section

    root = Path(__file__).resolve().parents[3] / "edge" / "examples"
    m = load_static_map(root / "tenants.yaml")
    assert m.default == ("unknown", "unknown") and m.namespaces["bank"] == "globex"
    assert len(m.entries) == 4
    cfg = section(load_settings(root / "edge.yaml", environ={}), "edge", EdgeConfig)
    assert cfg.name == "node-1" and len(cfg.upstreams) == 3
