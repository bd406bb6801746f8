"""``TapService``: listeners + decoding + pairing + the edge's identity layer and publisher.

Identity and publishing are the edge's own parts, configured from the same ``edge:`` keys
(``tenant_map``, ``kubernetes``/``kubeconfig``/``kube_api``/``node_name``, ``default_tenant``,
``spool_dir``, ``spool_limit_mb``, ``producer``, ``kafka_timeout``, ``event_queue``,
``metrics_listen``, ``name``), so a tap event names the same tenant as an edge event would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dnsflow.bus import Bus, BusError
from dnsflow.dlq import dlq_record
from dnsflow.edge.config import EdgeConfig
from dnsflow.edge.identity import IdentityTable
from dnsflow.edge.identity.feeds import IdentityFeeds
from dnsflow.edge.lifecycle import stop_each
from dnsflow.edge.listeners.sockets import split_hostport
from dnsflow.edge.service import config_from, make_publisher
from dnsflow.edge.tap.adjacent import AdjacentPairs
from dnsflow.edge.tap.decode import DecodeError, decode
from dnsflow.edge.tap.events import EventBuilder
from dnsflow.edge.tap.fast import FastPath
from dnsflow.edge.tap.metrics import TapMetrics
from dnsflow.edge.tap.pairing import Pairer
from dnsflow.edge.tap.server import Connection, Endpoint, TapListener
from dnsflow.edge.telemetry import EventPublisher
from dnsflow.settings import ConfigError, Settings
from dnsflow.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DLQ_SOURCE = "dnstap"  # the DLQ record's source_topic: the frame came from a socket, not Kafka
_DLQ_MAX_BYTES = 8 << 20  # undecodable frames held for the DLQ at once; more are only counted


class TapConfig(BaseModel):
    """What only the tap has (the rest is the ``edge:`` section)."""

    model_config = ConfigDict(extra="forbid")

    listen: list[str] = Field(min_length=1, description="unix:PATH or tcp:HOST:PORT")
    pair_timeout: float = Field(default=2.0, gt=0, le=60,
                                description="seconds a query waits for its response")
    max_pending: int = Field(default=100_000, ge=1, description="queries waiting at once")


class TapService:
    name = "tap"
    expire_every = 0.1  # seconds between sweeps of queries that waited too long

    def __init__(self, settings: Settings, bus: Bus, tap: TapConfig, edge: EdgeConfig) -> None:
        self.settings = settings
        self.bus = bus
        self.tap = tap
        self.cfg = edge
        try:
            self.endpoints = [Endpoint.parse(x) for x in tap.listen]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.identity = IdentityTable(edge.default_tenant, edge.default_namespace)
        self.listeners = [TapListener(ep, on_frames=self.on_frames, scanner=self._scanner)
                          for ep in self.endpoints]
        self.publisher: EventPublisher | None = None
        self.builder: EventBuilder | None = None
        self.pairer: Pairer | None = None
        self.fast: FastPath | None = None
        self.metrics = TapMetrics(self.status)
        self.frames = 0
        self.decode_errors = 0
        self.ignored = 0             # dnstap records that are not DNS queries/responses
        self.upstream_ignored = 0    # resolver-side messages from a sender that logs clients
        self.wire_errors = 0         # responses whose DNS message did not parse strictly
        self.dlq_sent = 0
        self.dlq_dropped = 0
        self._client_side: set[str] = set()
        self._dlq: deque[bytes] = deque()
        self._dlq_bytes = 0
        self._dlq_wake = asyncio.Event()
        self._last_error_log = 0.0
        self._errors_since_log = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.feeds = IdentityFeeds(self.identity, edge)
        self.ops: Any = None
        self.started = False

    # -- hot path -------------------------------------------------------------------------
    def on_frames(self, frames: list[bytes], conn: Connection) -> None:
        """One read's data frames, in order (the listener's callback)."""
        if self.fast is not None:
            self.fast(frames, conn)
        else:  # not started: nothing to pair with
            for frame in frames:
                self.on_frame(frame, conn)

    def _scanner(self, conn: Connection) -> AdjacentPairs | None:
        """A sender's adjacent query/response pairs, read from its stream (once wired)."""
        return AdjacentPairs(self.fast, conn) if self.fast is not None else None

    def on_frame(self, frame: bytes, conn: Connection) -> None:
        """The general path for one frame (what the fast path does not take)."""
        self.frames += 1
        try:
            m = decode(frame)
        except DecodeError as exc:
            self._bad_frame(frame, conn, str(exc))
            return
        except Exception as exc:  # never let one frame end the reader
            self._bad_frame(frame, conn, f"{type(exc).__name__}: {exc}")
            return
        if m is None:
            self.ignored += 1
            return
        edge = m.identity or conn.label
        if m.client_side:  # AUTH_*/CLIENT_*
            self._client_side.add(edge)
        elif edge in self._client_side:
            self.upstream_ignored += 1  # one client query is one event, not one per upstream
            return
        self.wire_errors += m.wire_errors
        assert self.pairer is not None
        self.pairer.add(edge, m)

    def _bad_frame(self, frame: bytes, conn: Connection, reason: str) -> None:
        self.decode_errors += 1
        self._errors_since_log += 1
        now = time.monotonic()
        if now - self._last_error_log >= 5.0:
            log.error("dnstap frame %d from %s (%s) not decoded: %s (%d such frames since the "
                      "last report, %d in total)", conn.frames, conn.label,
                      conn.listener.endpoint, reason, self._errors_since_log,
                      self.decode_errors)
            self._last_error_log = now
            self._errors_since_log = 0
        if self._dlq_bytes + len(frame) > _DLQ_MAX_BYTES:
            self.dlq_dropped += 1
            return
        rec = dlq_record(DLQ_SOURCE, 0, conn.frames,
                         f"{conn.label} on {conn.listener.endpoint}: {reason}", frame,
                         conn.label.encode(), component="tap")
        self._dlq.append(rec)
        self._dlq_bytes += len(rec)
        self._dlq_wake.set()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        await self.feeds.start(2.0, "tap-tenant-map")
        spool_dir = Path(cfg.spool_dir) if cfg.spool_dir else (
            Path(self.settings.home) / "spool" / f"tap-{cfg.name}")
        self.publisher = make_publisher(self.bus, spool_dir, cfg)
        await self.publisher.start()
        self.wire(self.publisher)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._expire(), name="tap-expire"),
                       loop.create_task(self._send_dlq(), name="tap-dlq")]
        for lst in self.listeners:
            try:
                await lst.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {lst.endpoint} "
                                  f"({exc.strerror or exc})") from None
        if cfg.metrics_listen:
            from dnsflow.edge.ops import OpsServer

            host, port = split_hostport(cfg.metrics_listen, 9153)
            self.ops = OpsServer(self.metrics, host, port, self.readiness)  # type: ignore[arg-type]
            await self.ops.start()
        self.started = True
        log.info("tap %s listening on %s", cfg.name, ", ".join(map(str, self.endpoints)))

    def wire(self, publisher: EventPublisher) -> None:
        """Decoding, pairing and event building in front of ``publisher`` (``start`` does
        this; ``python -m bench.tap --inproc`` does it with a publisher that only counts)."""
        self.publisher = publisher
        self.builder = EventBuilder(self.identity, publisher)
        self.pairer = Pairer(self.builder, timeout=self.tap.pair_timeout,
                             max_pending=self.tap.max_pending)
        self.fast = FastPath(self)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(self.expire_every)
            if self.pairer is not None:
                self.pairer.expire()

    async def _send_dlq(self) -> None:
        while True:
            await self._dlq_wake.wait()
            self._dlq_wake.clear()
            while self._dlq:
                batch = [(DLQ_SOURCE.encode(), self._dlq.popleft())
                         for _ in range(min(len(self._dlq), 100))]
                self._dlq_bytes -= sum(len(v) for _, v in batch)
                try:
                    await self.bus.send_many(self.bus.topics.dlq, batch)
                    self.dlq_sent += len(batch)
                except BusError as exc:
                    self.dlq_dropped += len(batch)
                    log.warning("tap: %d undecodable frames not sent to %s: %s", len(batch),
                                self.bus.topics.dlq, exc)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ident_ok = self.feeds.synced
        return self.started and ident_ok, {"listening": self.started,
                                           "identity_synced": ident_ok}

    async def stop(self) -> None:
        """Stop reading, emit what still waits for a response, then flush the publisher."""
        for lst in self.listeners:
            with contextlib.suppress(Exception):
                await lst.stop()
        if self.pairer is not None:
            self.pairer.flush()
        for t in [*self._tasks, self.feeds.map_task]:
            await cancel_and_wait(t, quiet=True)
        self._tasks = []
        await stop_each([("ops", self.ops.stop if self.ops else None),
                         ("publisher", self.publisher.stop if self.publisher else None),
                         ("kubernetes identity", self.feeds.k8s.stop if self.feeds.k8s else None)],
                        log, f"tap {self.cfg.name}")
        self.started = False

    def status(self) -> dict[str, Any]:
        events = self.publisher.status() if self.publisher is not None else {}
        return {
            "tap": self.cfg.name,
            "listen": [str(lst.endpoint) for lst in self.listeners],
            "listeners": [lst.status() for lst in self.listeners],
            "frames": self.frames,
            "decode_errors": self.decode_errors,
            "ignored": self.ignored,
            "upstream_ignored": self.upstream_ignored,
            "wire_errors": self.wire_errors,
            "dlq_sent": self.dlq_sent,
            "dlq_dropped": self.dlq_dropped,
            "pairing": self.pairer.status() if self.pairer is not None else {},
            "events_built": self.builder.built if self.builder is not None else 0,
            "adjacent_pairs": self.fast.adjacent if self.fast is not None else 0,
            "events": events,
            "metrics_port": self.ops.port if self.ops is not None else None,
            "identity": self.feeds.status(),
        }


def build(settings: Settings, bus: Bus, **kw: Any) -> TapService:
    """``listen``/``pair_timeout``/``max_pending`` are the tap's; every other keyword is an
    ``edge:`` field (e.g. ``tenant_map``, ``name``)."""
    tap_kw = {k: kw.pop(k) for k in list(kw) if k in TapConfig.model_fields}
    try:
        tap = TapConfig.model_validate(tap_kw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"tap.{loc}: {err['msg']}") from None
    return TapService(settings, bus, tap, config_from(settings, **kw))
