"""Several upstreams with failover and health checks.

Order of preference is the configured order. A reply that is malformed, or whose rcode is
not NOERROR/NXDOMAIN (SERVFAIL, REFUSED, FORMERR, NOTIMP...), sends the query on to the next
upstream; the caller gets an error (and answers SERVFAIL, or stale) only when all fail.

Health is the health check's to decide, never one client's names: a query that times out
(or gets garbage) only makes the upstream *suspect* and starts a health check at once (a
``. NS`` query, two tries — any well-formed reply counts, even SERVFAIL or REFUSED); the
upstream is marked down only when that check fails, and skipped until a later check (every
``check_interval``) brings it back. Names nobody can resolve therefore never flip an
upstream whose server still answers, nor ``/readyz``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dnsflow.edge import wire
from dnsflow.edge.upstream.base import Upstream, UpstreamError, parse_upstream
from dnsflow.edge.upstream.doh import DohUpstream
from dnsflow.edge.upstream.stream import StreamUpstream
from dnsflow.edge.upstream.udp import UdpUpstream
from dnsflow.tasks import cancel_and_wait

# upstream answer-time buckets (seconds): a loopback resolver answers in ~100 µs, a remote
# DoH one in tens of milliseconds
UPSTREAM_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

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
    bad_replies: int = 0    # malformed replies and SERVFAIL/REFUSED/...: not health failures
    # answer times: counts per UPSTREAM_BOUNDS_S bucket (+Inf last) and their sum (seconds)
    latency: list[int] = field(default_factory=lambda: [0] * (len(UPSTREAM_BOUNDS_S) + 1))
    latency_sum: float = 0.0

    def answered(self, seconds: float) -> None:
        self.latency[bisect.bisect_left(UPSTREAM_BOUNDS_S, seconds)] += 1
        self.latency_sum += seconds


class UpstreamPool:
    def __init__(self, upstreams: Sequence[Upstream], *, timeout: float = 2.0,
                 check_interval: float = 2.0) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.check_interval = check_interval
        self.health = {u.name: Health() for u in self.upstreams}
        self._task: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def from_urls(cls, urls: Sequence[str], ssl_context: ssl.SSLContext | None = None,
                  **kw: float) -> UpstreamPool:
        return cls([make_upstream(u, ssl_context) for u in urls], **kw)  # type: ignore[arg-type]

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.upstreams]

    async def query(self, packet: bytes) -> tuple[bytes, str]:
        """Ask healthy upstreams in order within one overall timeout; the first reply that
        matches the query, whatever its rcode (health checks, raw forwarding)."""
        reply, name, _ = await self._ask(packet, None)
        return reply, name

    async def resolve(self, packet: bytes, max_ttl: int = wire.MAX_CACHE_TTL
                      ) -> tuple[bytes, str, wire.Response]:
        """Like :meth:`query`, but only a validated reply (:func:`wire.parse_response`) with
        rcode NOERROR or NXDOMAIN ends the search; SERVFAIL, REFUSED, other rcodes and
        malformed replies go on to the next upstream. Raises :class:`UpstreamError` when
        none gives one in time."""
        reply, name, resp = await self._ask(packet, (wire.question_of(packet), max_ttl))
        assert resp is not None
        return reply, name, resp

    async def _ask(self, packet: bytes, validate: tuple[bytes, int] | None
                   ) -> tuple[bytes, str, wire.Response | None]:
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
            sent = loop.time()
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
            h.last_ok = time.time()
            h.answered(loop.time() - sent)
            resp = None
            if validate is not None:
                try:
                    resp = wire.parse_response(reply, *validate)
                except wire.WireError as exc:
                    h.bad_replies += 1
                    h.last_error = f"{up.name}: malformed reply ({exc})"
                    errors.append(h.last_error)
                    continue
                if resp.rcode not in (wire.NOERROR, wire.NXDOMAIN):
                    h.bad_replies += 1
                    errors.append(f"{up.name}: {wire.rcode_name(resp.rcode)}")
                    continue
            return reply, up.name, resp
        raise UpstreamError("; ".join(errors) or "no upstream answered in time")

    def _failed(self, up: Upstream, h: Health, err: str) -> None:
        """A query got no usable reply: count it, and let a health check decide at once
        whether the upstream is down (one client's unanswerable names must not do it)."""
        h.errors += 1
        h.last_error = err
        if h.up:
            self._suspect(up)

    def _suspect(self, up: Upstream) -> None:
        t = self._probes.get(up.name)
        if t is None or t.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._probes[up.name] = loop.create_task(self._probe(up))

    async def _probe(self, up: Upstream) -> bool:
        """The health check of one upstream: ``. NS``, up to two tries; marks it up or down."""
        h = self.health[up.name]
        probe = wire.make_query(".", wire.T_NS)
        err = ""
        for _ in range(2):
            try:
                await up.query(probe, min(self.timeout, 1.0))
            except Exception as exc:
                err = str(exc) or repr(exc)
                continue
            if not h.up:
                log.info("upstream %s is back", up.name)
            h.up, h.fails, h.last_ok = True, 0, time.time()
            return True
        h.fails += 1
        h.last_error = err
        if h.up:
            h.up = False
            log.warning("upstream %s marked down by health check: %s", up.name, err)
        return False

    async def check_once(self) -> None:
        for up in self.upstreams:
            h = self.health[up.name]
            if h.up and time.time() - h.last_ok < self.check_interval:
                continue
            await self._probe(up)

    async def _checker(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            with contextlib.suppress(Exception):
                await self.check_once()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._checker())

    async def close(self) -> None:
        await cancel_and_wait(self._task, quiet=True)
        self._task = None
        for t in self._probes.values():
            t.cancel()
        self._probes.clear()
        for up in self.upstreams:
            with contextlib.suppress(Exception):
                await up.close()

    def status(self) -> dict[str, dict[str, object]]:
        return {n: {"up": h.up, "queries": h.queries, "errors": h.errors,
                    "bad_replies": h.bad_replies, "last_error": h.last_error,
                    "latency": list(h.latency), "latency_sum": h.latency_sum}
                for n, h in self.health.items()}
