"""In-process driver: the stream logic on a bus consumer group (embedded runner, tests).

Consumes ``<prefix>events`` with consumer group ``<prefix><streams.group>``; each batch is decoded
(malformed records go to ``<prefix>dlq`` with the reason), processed, and the outputs are
published — telemetry and anomalies keyed by tenant, alerts by rule id, auto-denies on the
policies topic — before the offsets are committed (at-least-once). When input idles the
watermark follows the wall clock so windows still close and denies still expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson

from dnsflow.bus import Bus
from dnsflow.bus.base import BusError, Message
from dnsflow.dlq import dlq_record
from dnsflow.schema import RecordError, now_us
from dnsflow.settings import ConfigError, Settings
from streams import config as streams_config
from streams.alerts import RuleFileError, load_rules
from streams.clock import PartitionClock
from streams.event_decode import decode, decode_fast
from streams.logic import Output, StreamLogic
from streams.webhook import WebhookSender

log = logging.getLogger("streams.service")

def idle_watermark(logic: StreamLogic, idle_s: float) -> int:
    """Event time after ``idle_s`` without input: the newest event plus the wall time since.

    Live traffic is near the wall clock, so this closes windows and expires denies when
    queries stop; a backlog of old events is never overtaken by the wall clock during a pause
    (a consumer group join, a rebalance). Nothing moves before the first event.
    """
    if logic.max_ts <= -(1 << 61):
        return logic.watermark
    return min(logic.max_ts + int(idle_s * 1_000_000), now_us()) - logic.grace


def _ts(ev: dict[str, Any]) -> int:
    return ev["ts"]


TOPIC_OF = {"telemetry": "telemetry", "anomaly": "anomalies", "alert": "alerts"}


def build_logic(settings: Settings, *, auto_watermark: bool = True) -> StreamLogic:
    """The configured logic; an unusable alert rule file is a configuration error."""
    cfg = streams_config.load(settings)
    rules = None
    if cfg.alert_rules:
        try:
            rules = load_rules(cfg.alert_rules)
        except RuleFileError as exc:
            raise ConfigError(f"streams.alert_rules: {exc}") from None
    return StreamLogic(cfg, rules, auto_watermark=auto_watermark)


def records_by_topic(bus: Bus, outputs: list[Output]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Map outputs to ``{topic: [(key, value)]}`` in output order."""
    by: dict[str, list[tuple[bytes, bytes]]] = {}
    for o in outputs:
        if o.type == "policy_update":
            if o.record is not None:
                by.setdefault(bus.topics.policies, []).append(o.record)
            continue
        topic = bus.topics.name(TOPIC_OF[o.type])
        by.setdefault(topic, []).append((o.key.encode(), orjson.dumps(o.value)))
    return by


class StreamsService:
    name = "streams"

    def __init__(self, settings: Settings, bus: Bus, *, batch: int = 5000,
                 rules_check_s: float = 2.0) -> None:
        self.settings = settings
        self.bus = bus
        self.logic = build_logic(settings, auto_watermark=False)
        self.cfg = self.logic.cfg
        self.clock = PartitionClock(self.logic.grace)
        self.batch = batch
        self.rules_check_s = rules_check_s
        self.webhooks = WebhookSender()
        self.dlq = 0
        self.send_errors = 0
        # Under the topic prefix, like the faust app id: deployments (and tests) sharing a
        # cluster with different prefixes never share a consumer group.
        self.group = f"{bus.topics.prefix}{self.cfg.group}"
        self._consumer = bus.consumer([bus.topics.events], self.group)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._pending: list[Output] = []
        self._rules_mtime = self._mtime()
        self._last_input = time.monotonic()

    def _mtime(self) -> float | None:
        if not self.cfg.alert_rules:
            return None
        try:
            return Path(self.cfg.alert_rules).stat().st_mtime
        except OSError:
            return None

    async def start(self) -> None:
        await self._consumer.start()
        await self.webhooks.start()
        self._task = asyncio.create_task(self._run(), name="streams")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.logic.flush()
        await self._publish(self.logic.drain())
        with contextlib.suppress(BusError):
            await self._consumer.commit()
        await self._consumer.stop()
        await self.webhooks.stop()

    async def _run(self) -> None:
        last_rules_check = time.monotonic()
        while not self._stopping.is_set():
            try:
                msgs = await self._consumer.getmany(timeout_ms=200, max_records=self.batch)
            except BusError as exc:
                log.warning("streams: reading events failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            now = time.monotonic()
            if msgs:
                self._last_input = now
                await self.handle(msgs)
            else:
                # no input: the warm-up may have ended since the last batch; and after
                # idle_advance_s the wall clock moves event time so windows still close
                wm = self.clock.watermark()
                if wm is not None:
                    self.logic.advance_to(wm)
                if now - self._last_input >= self.cfg.idle_advance_s:
                    self.logic.advance_to(idle_watermark(self.logic, now - self._last_input))
            if now - last_rules_check >= self.rules_check_s:
                last_rules_check = now
                self._maybe_reload_rules()
            outputs = self.logic.drain()
            if outputs or self._pending:
                await self._publish(outputs)
            if msgs and not self._pending:
                try:
                    await self._consumer.commit()
                except BusError as exc:
                    log.warning("streams: commit failed: %s", exc)

    async def handle(self, msgs: list[Message]) -> None:
        dead: list[tuple[bytes | None, bytes | None]] = []
        good: list[dict[str, Any]] = []
        newest: dict[tuple[str, int], int] = {}
        not_after = now_us() + int(self.cfg.max_future_s * 1_000_000)
        for m in msgs:
            ev = decode_fast(m.value) if m.value else None
            try:
                if ev is None:
                    ev = decode(m.value or b"", f"{m.topic}[{m.partition}]@{m.offset}",
                                not_after)
                elif ev["ts"] > not_after:
                    decode(m.value or b"", f"{m.topic}[{m.partition}]@{m.offset}", not_after)
            except RecordError as exc:
                dead.append((m.topic.encode(), dlq_record(m.topic, m.partition, m.offset,
                                                          str(exc), m.value, m.key,
                                                          component="streams")))
                continue
            good.append(ev)
            tp = (m.topic, m.partition)
            if ev["ts"] > newest.get(tp, -(1 << 62)):
                newest[tp] = ev["ts"]
        # A batch spans partitions (tenants); interleave them in event time, and let time
        # follow the slowest active partition, so no partition's events look late.
        good.sort(key=_ts)
        self.logic.process_many(good)
        for tp, ts in newest.items():
            self.clock.observe(tp, ts)
        wm = self.clock.watermark()
        if wm is not None:
            self.logic.advance_to(wm)
        if dead:
            self.dlq += len(dead)
            await self._send(self.bus.topics.dlq, dead)

    async def _publish(self, outputs: list[Output]) -> None:
        for o in outputs:
            if o.type == "alert":
                rule = self.logic.alerts.rule(o.key)
                if rule is not None and rule.webhook is not None:
                    self.webhooks.submit(rule.webhook, o.value)
        todo = self._pending + outputs
        self._pending = []
        for topic, records in records_by_topic(self.bus, todo).items():
            if not await self._send(topic, records):
                self._pending = todo  # retried next round; offsets are not committed meanwhile
                return

    async def _send(self, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> bool:
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

    def _maybe_reload_rules(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self._rules_mtime:
            return
        self._rules_mtime = mtime
        assert self.cfg.alert_rules
        err = self.logic.alerts.reload(self.cfg.alert_rules)
        if err:
            log.error("streams: alert rules not reloaded, keeping the last good set: %s", err)
        else:
            log.info("streams: alert rules reloaded from %s", self.cfg.alert_rules)

    def status(self) -> dict[str, Any]:
        st = self.logic.status()
        st.update({"group": self.group, "dlq": self.dlq, "send_errors": self.send_errors,
                   "pending_outputs": len(self._pending), "webhooks": self.webhooks.status()})
        return st


def build(settings: Settings, bus: Bus, **kw: Any) -> list[StreamsService]:
    return [StreamsService(settings, bus, **kw)]
