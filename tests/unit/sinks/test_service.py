"""The embedded sink service: migrates on start, stores, and answers `dnsflow query` while it
holds chDB (through the loopback endpoint), then releases chDB on stop."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from dnsflow.bus.memory import MemoryBus
from dnsflow.settings import Settings
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.service import build


async def dnsflow_query(home, sql: str) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dnsflow", "query", "--home", str(home), "-f", "json", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode, out.decode(), err.decode()


async def test_query_answers_through_the_running_service(tmp_path, events):
    bus = MemoryBus()
    [svc] = build(Settings(home=tmp_path), bus,
                  config=SinkConfig(batch_rows=100, batch_ms=20))
    await svc.start()
    try:
        assert (tmp_path / "query.endpoint").exists()
        await bus.send_many(bus.topics.events, events.encoded(250))
        deadline = time.monotonic() + 10
        while svc.status()["stored"].get("dns_events", 0) < 250 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        rc, out, err = await dnsflow_query(
            tmp_path, "SELECT count() AS n FROM dnsflow.dns_events")
        assert rc == 0, err
        assert orjson.loads(out) == {"n": 250}
        rc, out, err = await dnsflow_query(tmp_path, "SELECT nope")
        assert rc == 1 and "Unknown expression identifier" in err
        # read-only through the running process as well: its sink keeps writing
        rc, out, err = await dnsflow_query(tmp_path, "TRUNCATE TABLE dnsflow.dns_events")
        assert rc == 1 and "pass --write" in err
        await bus.send_many(bus.topics.events, events.encoded(10))
        while svc.status()["stored"].get("dns_events", 0) < 260 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        rc, out, err = await dnsflow_query(
            tmp_path, "SELECT count() AS n FROM dnsflow.dns_events")
        assert rc == 0 and orjson.loads(out) == {"n": 260}, err
    finally:
        await svc.stop()
    assert not (tmp_path / "query.endpoint").exists()
    rc, out, err = await dnsflow_query(tmp_path, "SELECT count() AS n FROM dnsflow.dns_events")
    assert rc == 0 and orjson.loads(out) == {"n": 260}, err


async def test_stop_flushes_what_was_gathered(tmp_path, events):
    bus = MemoryBus()
    [svc] = build(Settings(home=tmp_path), bus,
                  config=SinkConfig(batch_rows=10_000, batch_ms=60_000, query_endpoint=False))
    await svc.start()
    await bus.send_many(bus.topics.events, events.encoded(40))
    await asyncio.sleep(0.3)
    await svc.stop()
    assert svc.status()["stored"] == {"dns_events": 40}
    assert sum(bus.committed("dnsflow-sink", bus.topics.events, p) or 0 for p in range(3)) == 40


async def test_query_endpoint_wants_the_token_from_the_0600_file(tmp_path):
    import stat

    import httpx

    [svc] = build(Settings(home=tmp_path), MemoryBus(), config=SinkConfig(batch_ms=20))
    await svc.start()
    try:
        file = tmp_path / "query.endpoint"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        info = orjson.loads(file.read_bytes())
        assert info["url"].startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.post(info["url"] + "/query", content=b'{"sql": "SELECT 1"}')
            assert r.status_code == 401
            r = await http.post(info["url"] + "/query", content=b'{"sql": "SELECT 1 AS one"}',
                                headers={"Authorization": f"Bearer {info['token']}"})
            assert r.status_code == 200 and r.json()["rows"] == [[1]]
    finally:
        await svc.stop()


async def test_clickhouse_server_away_at_start_is_waited_for_not_fatal(tmp_path, events):
    bus = MemoryBus()
    await bus.send_many(bus.topics.events, events.encoded(10))
    settings = Settings(home=tmp_path, clickhouse="http://bob:hunter2@127.0.0.1:1/dnsflow")
    [svc] = build(settings, bus, config=SinkConfig(retry_initial_s=0.01, retry_max_s=0.05),
                  stop_timeout=0.5)
    await svc.start()  # does not raise: the loop keeps trying
    deadline = time.monotonic() + 10
    while svc.status()["retries"] < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    status = svc.status()
    assert status["retries"] >= 2 and "connection refused" in status["last_error"]
    assert "hunter2" not in str(status)
    await svc.stop()
    assert svc.status()["stored"] == {}
    assert all(bus.committed("dnsflow-sink", bus.topics.events, p) is None for p in range(3))
