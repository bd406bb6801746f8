"""Several upstreams with failover and health checks.

Order of preference is the configured order; an upstream that fails is marked down after
``fail_threshold`` consecutive failures and skipped until a background health check (a
``. NS`` query — any well-formed reply counts, even SERVFAIL) brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from edge import wire
from edge.upstream.base import Upstream, UpstreamError, parse_upstream
from edge.upstream.doh import DohUpstream
from edge.upstream.stream import StreamUpstream
from edge.upstream.udp import UdpUpstream

log = logging.getLogger(__name__)


def make_upstream(text: str, ssl_context: ssl.SSLContext | None = None) -> Upstream:
    addr = parse_upstream(text)
    if addr.scheme == "udp":
        return UdpUpstream(addr)
    if addr.scheme in ("tcp", "tls"):
        return StreamUpstream(addr, ssl_context if addr.scheme == "tls" else None)
    return DohUpstream(addr, ssl_context)


@dataclass
class Health:
    up: bool = True
    fails: int = 0
    queries: int = 0
    errors: int = 0
    last_error: str = ""
    last_ok: float = 0.0


class UpstreamPool:
    def __init__(self, upstreams: Sequence[Upstream], *, timeout: float = 2.0,
                 fail_threshold: int = 3, check_interval: float = 2.0) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.fail_threshold = fail_threshold
        self.check_interval = check_interval
        self.health = {u.name: Health() for u in self.upstreams}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_urls(cls, urls: Sequence[str], ssl_context: ssl.SSLContext | None = None,
                  **kw: float) -> UpstreamPool:
        return cls([make_upstream(u, ssl_context) for u in urls], **kw)  # type: ignore[arg-type]

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.upstreams]

    async def query(self, packet: bytes) -> tuple[bytes, str]:
        """Ask healthy upstreams in order within one overall timeout; raise if none answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        order = [u for u in self.upstreams if self.health[u.name].up] or self.upstreams
        errors = []
        for i, up in enumerate(order):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # leave time for the next upstream unless this is the last one
            budget = remaining if i == len(order) - 1 else max(remaining / 2, 0.2)
            h = self.health[up.name]
            h.queries += 1
            try:
                reply = await up.query(packet, min(budget, remaining))
            except UpstreamError as exc:
                self._failed(up, h, str(exc))
                errors.append(str(exc))
                continue
            except Exception as exc:  # a bug or odd transport error must not hang a client
                self._failed(up, h, repr(exc))
                errors.append(repr(exc))
                continue
            h.fails = 0
            h.up = True
            h.last_ok = time.time()
            return reply, up.name
        raise UpstreamError("; ".join(errors) or "no upstream answered in time")

    def _failed(self, up: Upstream, h: Health, err: str) -> None:
        h.errors += 1
        h.fails += 1
        h.last_error = err
        if h.up and h.fails >= self.fail_threshold:
            h.up = False
            log.warning("upstream %s marked down: %s", up.name, err)

    async def check_once(self) -> None:
        probe = wire.make_query(".", wire.T_NS)
        for up in self.upstreams:
            h = self.health[up.name]
            if h.up and time.time() - h.last_ok < self.check_interval:
                continue
            try:
                await up.query(probe, min(self.timeout, 1.0))
            except Exception as exc:
                h.last_error = str(exc)
                if h.up:
                    h.fails += 1
                    if h.fails >= self.fail_threshold:
                        h.up = False
                        log.warning("upstream %s marked down by health check", up.name)
                continue
            if not h.up:
                log.info("upstream %s is back", up.name)
            h.up, h.fails, h.last_ok = True, 0, time.time()

    async def _checker(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            with contextlib.suppress(Exception):
                await self.check_once()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._checker())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        for up in self.upstreams:
            with contextlib.suppress(Exception):
                await up.close()

    def status(self) -> dict[str, dict[str, object]]:
        return {n: {"up": h.up, "queries": h.queries, "errors": h.errors,
                    "last_error": h.last_error} for n, h in self.health.items()}
