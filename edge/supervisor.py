"""Extra edge worker processes (``--workers N``): started by worker 0, restarted when they die.

A worker that exits (a crash, ``BusError`` at start, the OOM killer) is started again after a
back-off (1 s doubling to 30 s; back to 1 s once a worker has run for a minute), and every
death is logged at ERROR with its exit code or signal and counted in
``dnsflow_edge_worker_restarts_total{worker}`` (``status()["worker_restarts"]``).
``dnsflow_edge_workers_alive`` says how many of the extra workers are running now.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("dnsflow.edge.workers")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class WorkerSupervisor:
    """Keeps workers ``1..N-1`` running; ``specs[i]`` is worker i's ``edge.worker`` spec."""

    backoff_initial = 1.0
    backoff_max = 30.0
    stable_after = 60.0   # a worker that ran this long restarts with the initial back-off
    poll_interval = 0.5

    def __init__(self, edge: str, specs: dict[int, dict[str, Any]],
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.edge = edge
        self.specs = specs
        self.preexec_fn = preexec_fn
        self.procs: dict[int, subprocess.Popen[bytes] | None] = dict.fromkeys(specs)
        self.started_at: dict[int, float] = {}
        self.restarts: dict[int, int] = dict.fromkeys(specs, 0)
        self.backoff: dict[int, float] = dict.fromkeys(specs, self.backoff_initial)
        self.last_exit: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "dnsflow.edge.worker", json.dumps(self.specs[index])],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            preexec_fn=self.preexec_fn)
        self.started_at[index] = time.monotonic()

    def start(self) -> None:
        for index in self.specs:
            self._spawn(index)
        self._task = asyncio.get_running_loop().create_task(self._watch(),
                                                            name="edge-workers")

    async def _watch(self) -> None:
        due: dict[int, float] = {}   # worker -> monotonic time of its restart
        while not self._stopping:
            now = time.monotonic()
            for index, proc in self.procs.items():
                if proc is None or index in due:
                    continue
                code = proc.poll()
                if code is None:
                    continue
                ran = now - self.started_at.get(index, now)
                if ran >= self.stable_after:
                    self.backoff[index] = self.backoff_initial
                delay = self.backoff[index]
                self.backoff[index] = min(delay * 2, self.backoff_max)
                self.restarts[index] += 1
                self.last_exit[index] = _exit_text(code)
                log.error("edge %s: worker %d (pid %d) died with %s after %.1fs; restarting "
                          "it in %.1fs (restart %d)", self.edge, index, proc.pid,
                          self.last_exit[index], ran, delay, self.restarts[index])
                due[index] = now + delay
            for index, when in list(due.items()):
                if now >= when and not self._stopping:
                    del due[index]
                    try:
                        self._spawn(index)
                    except OSError as exc:
                        log.error("edge %s: cannot start worker %d: %s", self.edge, index,
                                  exc)
                        due[index] = now + self.backoff[index]
                        continue
                    log.warning("edge %s: worker %d restarted (pid %d)", self.edge, index,
                                self.procs[index].pid)  # type: ignore[union-attr]
            await asyncio.sleep(self.poll_interval)

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        live = [p for p in self.procs.values() if p is not None and p.poll() is None]
        for p in live:
            with contextlib.suppress(Exception):
                p.terminate()
        for p in live:
            try:
                await asyncio.to_thread(p.wait, timeout)
            except subprocess.TimeoutExpired:
                p.kill()

    # -- reporting ----------------------------------------------------------------------
    def alive(self) -> int:
        return sum(1 for p in self.procs.values() if p is not None and p.poll() is None)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p is not None and p.poll() is None]

    def status(self) -> dict[str, Any]:
        return {"workers": self.pids(), "workers_alive": self.alive(),
                "worker_restarts": {str(i): n for i, n in self.restarts.items()},
                "worker_last_exit": {str(i): t for i, t in self.last_exit.items()}}

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:  # prometheus collector protocol
        c = CounterMetricFamily("dnsflow_edge_worker_restarts",
                                "extra edge worker processes restarted after they died",
                                labels=["edge", "worker"])
        for index, n in self.restarts.items():
            c.add_metric([self.edge, str(index)], n)
        yield c
        g = GaugeMetricFamily("dnsflow_edge_workers_alive",
                              "extra edge worker processes running (of --workers N - 1)",
                              labels=["edge"])
        g.add_metric([self.edge], self.alive())
        yield g


def ensure_port_free(host: str, port: int, kinds: tuple[str, ...] = ("udp", "tcp")) -> None:
    """Refuse a port another process already holds, before binding it with SO_REUSEPORT.

    SO_REUSEPORT lets any process of the same user join a port's group and silently take a
    share of its traffic (a second edge started by mistake, an old one not yet gone). Worker 0
    probes first with a plain bind (UDP: neither SO_REUSEADDR nor SO_REUSEPORT; TCP:
    SO_REUSEADDR only, so a previous run's TIME_WAIT connections do not count, a listener
    does); only the workers it starts afterwards join the group.
    """
    from dnsflow.settings import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in kinds:
        s = socket.socket(family, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        try:
            if kind == "tcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise ConfigError(
                    f"edge: cannot listen on {where}/{kind}: already in use by another "
                    f"process (another dnsflow edge or DNS server?); the edge shares a port "
                    f"only among its own --workers") from None
            raise
        finally:
            s.close()
