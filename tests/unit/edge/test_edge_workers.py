"""``--workers N``: one spool per worker, dead workers restarted and reported, and the port
shared (SO_REUSEPORT) only among the edge's own workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dnsflow.edge.supervisor import WorkerSupervisor
from dnsflow.settings import ConfigError
from harness.peers import dns_probe, free_port
from tests.helpers.waiting import until


async def _until(cond, timeout: float = 20.0) -> None:
    """Workers are processes: give them longer, and poll less often, than in-process tests."""
    await until(cond, timeout=timeout, interval=0.05)


def _worker_spool_locked(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


async def test_dead_worker_is_restarted_logged_and_counted(start_edge, tmp_path: Path,
                                                           monkeypatch, caplog) -> None:
    monkeypatch.setattr(WorkerSupervisor, "backoff_initial", 0.2)
    monkeypatch.setattr(WorkerSupervisor, "poll_interval", 0.05)
    port = free_port()
    spool = tmp_path / "spool"
    svc = await start_edge(listen=f"127.0.0.1:{port}", workers=2, spool_dir=str(spool),
                           metrics_listen="127.0.0.1:0")
    # one spool per worker under spool_dir: w0 (this process) and w1 (the extra worker)
    assert (spool / "w0").is_dir()
    await _until(lambda: _worker_spool_locked(spool / "w1"))
    first = svc.status()["workers"]
    assert len(first) == 1 and svc.status()["workers_alive"] == 1
    os.kill(first[0], signal.SIGKILL)
    await _until(lambda: svc.status()["workers"] and svc.status()["workers"] != first)
    st = svc.status()
    assert st["worker_restarts"] == {"1": 1}
    assert st["worker_last_exit"] == {"1": "signal SIGKILL"}
    assert any("worker 1" in r.getMessage() and "SIGKILL" in r.getMessage()
               and r.levelname == "ERROR" for r in caplog.records)
    # the restarted worker took its spool again (the dead one's lock went with it)
    await _until(lambda: svc.status()["workers_alive"] == 1)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{st['metrics_port']}/metrics")).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("dnsflow_edge_worker_restarts_total",
                    (("edge", "edge-test"), ("worker", "1")))] == 1
    assert samples[("dnsflow_edge_workers_alive", (("edge", "edge-test"),))] == 1
    assert await asyncio.to_thread(dns_probe, port, "example.com", "127.0.0.1", 2) is not None
    pid = svc.status()["workers"][0]
    await svc.stop()
    await _until(lambda: not _alive(pid), 20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("reuse", [True, False])
async def test_a_port_held_by_another_process_is_refused(start_edge, reuse: bool) -> None:
    """A socket of someone else -- even one that set SO_REUSEPORT itself -- is not joined."""
    port = free_port()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuse:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", port))
    try:
        with pytest.raises(ConfigError,
                           match=rf"cannot listen on 127\.0\.0\.1:{port}/udp: already in use"):
            await start_edge(listen=f"127.0.0.1:{port}")
    finally:
        other.close()


async def test_a_second_edge_on_the_same_port_is_refused(start_edge) -> None:
    port = free_port()
    await start_edge(listen=f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="already in use by another process"):
        await start_edge(listen=f"127.0.0.1:{port}", name="second")
    # the first one still gets all the traffic
    assert await asyncio.to_thread(dns_probe, port, "example.com", "127.0.0.1", 2) is not None
