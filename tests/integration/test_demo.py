"""`dnsflow demo` (what `make run` shows a new user) on the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_demo(home: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dnsflow", "demo", "--home", str(home), *extra],
        capture_output=True, text=True, timeout=180,
    )


def test_demo_json_covers_every_tenant_and_the_whole_pipeline(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--seconds", "8", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert set(report["tenants"]) == {"shop", "payments", "analytics"}
    assert report["sent"] > 500
    assert report["answered"] == report["sent"]
    events = sum(t["events"] for t in report["tenants"].values())
    assert events == report["answered"]  # one event per answered query
    assert report["stored_rows"] == events  # and every one of them in ClickHouse
    kinds = {(a["kind"], a["tenant"], a["client_ip"]) for a in report["anomalies"]}
    assert ("dga", "shop", "127.0.1.66") in kinds
    assert ("tunneling", "analytics", "127.0.3.77") in kinds
    assert ("cross_tenant", "payments", "127.0.2.99") in kinds
    # isolation: the discovery pod's probes of other tenants' services were denied
    assert report["tenants"]["payments"]["decisions"].get("deny", 0) > 0
    auto = [p for p in report["policy_updates"] if str(p["key"]).startswith("auto:")]
    assert {p["key"] for p in auto} >= {"auto:analytics"}
    assert report["telemetry_windows"] >= 3


def test_second_demo_in_same_home_stores_its_own_events_too(tmp_path: Path) -> None:
    first = json.loads(run_demo(tmp_path, "--seconds", "3", "--json").stdout)
    second = json.loads(run_demo(tmp_path, "--seconds", "3", "--json").stdout)
    assert second["stored_rows"] == sum(t["events"] for t in second["tenants"].values()) > 0
    assert first["stored_rows"] > 0


def test_demo_rejects_bad_flags_in_one_line(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--seconds", "-1")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "--seconds" in out.stderr
