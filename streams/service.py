"""In-process driver: the stream logic on a bus consumer group (embedded runner, tests).

Consumes ``<prefix>events`` with consumer group ``<prefix><streams.group>``; each batch goes
through the shared ``streams.pipeline.StreamsPipeline`` (decoded, malformed records to
``<prefix>dlq`` with the reason, processed, outputs published — telemetry and anomalies keyed
by tenant, alerts by rule id, auto-denies on the policies topic — webhooks posted) before the
offsets are committed (at-least-once). The edge's dropped egress attempts
(``<prefix>egress``, group ``<group>-egress``) feed ``unresolved_egress``
(``streams.egress_input``). When input idles the watermark follows the wall clock
so windows still close and denies still expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from dnsflow.bus import Bus
from dnsflow.bus.base import BusError, Message
from dnsflow.lag import LagProbe
from dnsflow.ops import OpsServer, component_registry, registry_render, serve_ops
from dnsflow.settings import Settings
from dnsflow.streams import egress_input
from dnsflow.streams.egress_input import EgressInput
from dnsflow.streams.metrics import READY_MAX_LAG, StreamsCollector, StreamsProbe
from dnsflow.streams.pipeline import Record, StreamsPipeline

log = logging.getLogger("dnsflow.streams.service")


class StreamsService:
    """Consumer group ``<prefix><streams.group>`` on the events topic, feeding the shared
    :class:`~streams.pipeline.StreamsPipeline`; offsets are committed once a batch's outputs
    are published.

    With ``metrics_listen`` (HOST:PORT) it serves ``/metrics``, ``/healthz`` and ``/readyz``
    (ready: partitions assigned, polling, lag under ``ready_max_lag``); the embedded runner
    passes none."""

    name = "streams"

    def __init__(self, settings: Settings, bus: Bus, *, batch: int = 5000,
                 rules_check_s: float = 2.0, metrics_listen: str | None = None,
                 ready_max_lag: int = READY_MAX_LAG, lag_interval_s: float = 10.0) -> None:
        self.settings = settings
        self.bus = bus
        self.pipeline = StreamsPipeline(settings, bus.topics, self._send,
                                        rules_check_s=rules_check_s)
        self.logic = self.pipeline.logic
        self.cfg = self.logic.cfg
        self.batch = batch
        self.send_errors = 0
        # Under the topic prefix, like the faust app id: deployments (and tests) sharing a
        # cluster with different prefixes never share a consumer group.
        self.group = f"{bus.topics.prefix}{self.cfg.group}"
        self._consumer = bus.consumer([bus.topics.events], self.group)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.polled_at = time.monotonic()
        self.metrics_listen = metrics_listen
        self.lag = LagProbe(bus.end_offsets, [bus.topics.events], self._positions,
                            lag_interval_s)
        self.probe = StreamsProbe(self.pipeline.metrics_status, self._assigned,
                                  lambda: self.polled_at, self.lag, ready_max_lag=ready_max_lag)
        self.ops: OpsServer | None = None
        self.egress = EgressInput(bus, self.pipeline, self.group) if egress_input.detector(
            self.logic) is not None else None

    async def start(self) -> None:
        await self._consumer.start()
        await self.pipeline.start()
        if self.egress is not None:
            await self.egress.start()
        self._task = asyncio.create_task(self._run(), name="streams")
        if self.metrics_listen is not None:
            registry = component_registry("streams")
            registry.register(StreamsCollector(self.probe))  # type: ignore[arg-type]
            self.lag.start()
            self.ops = await serve_ops("streams", self.metrics_listen, registry_render(registry),
                                       self.probe.readiness, self._liveness)

    async def _positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {p: await self._consumer.position(topic, p) for p in partitions}

    def _assigned(self) -> int:
        return sum(1 for (topic, _p) in self.lag.lag if topic == self.bus.topics.events)

    def _liveness(self) -> tuple[bool, dict[str, Any]]:
        if self._task is None or self._task.done():
            return False, {"loop": "not running"}
        return self.probe.liveness()

    async def stop(self) -> None:
        if self.ops is not None:
            await self.ops.stop()
        await self.lag.stop()
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.egress is not None:
            await self.egress.stop()
        self.logic.flush()
        await self.pipeline.publish()
        with contextlib.suppress(BusError):
            await self._consumer.commit()
        await self._consumer.stop()
        await self.pipeline.stop()

    async def _run(self) -> None:
        pipeline = self.pipeline
        while not self._stopping.is_set():
            self.polled_at = time.monotonic()
            try:
                msgs = await self._consumer.getmany(timeout_ms=200, max_records=self.batch)
            except BusError as exc:
                log.warning("streams: reading events failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            pipeline.maybe_reload_rules()
            if not msgs:
                # no input: the warm-up may have ended since the last batch; and after
                # idle_advance_s the wall clock moves event time so windows still close
                pipeline.advance()
                pipeline.idle_advance()
                await pipeline.publish()
                continue
            await self.handle(msgs)
            if not pipeline.pending:
                try:
                    await self._consumer.commit()
                except BusError as exc:
                    log.warning("streams: commit failed: %s", exc)

    async def handle(self, msgs: list[Message]) -> None:
        """One batch of the events topic through the pipeline (published, not committed)."""
        await self.pipeline.handle(self.bus.topics.events,
                                   ((m.partition, m.offset, m.key, m.value) for m in msgs))

    async def _send(self, topic: str, records: list[Record]) -> bool:
        for attempt in range(3):
            try:
                await self.bus.send_many(topic, records)
                return True
            except BusError as exc:
                self.send_errors += 1
                log.warning("streams: sending %d records to %s failed (%s), attempt %d",
                            len(records), topic, exc, attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        return False

    def status(self) -> dict[str, Any]:
        st = self.pipeline.status()
        st.update({"group": self.group, "send_errors": self.send_errors})
        if self.egress is not None:
            st["egress_records"] = self.egress.records
        return st


def build(settings: Settings, bus: Bus, **kw: Any) -> list[StreamsService]:
    return [StreamsService(settings, bus, **kw)]
