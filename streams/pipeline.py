"""The streams pipeline: raw event records in, published outputs out — one path for both
drivers (the in-process ``service.py`` and the faust worker ``faust_app.py``).

decode → DLQ → order → logic → clock → publish, plus alert webhooks and alert-rule reload:

* **decode**: the fast msgspec path, the slow pydantic path for the rest; a record that fails
  both (or whose clock is more than ``max_future_s`` ahead) goes to ``<prefix>dlq`` with
  partition, offset, reason and the raw value;
* **order**: a batch spans partitions (tenants): its events are interleaved in event time;
* **logic**: ``StreamLogic.process_many``;
* **clock**: the newest event time per partition feeds the :class:`PartitionClock`, whose
  watermark (the slowest active partition's) closes windows; when input idles for
  ``idle_advance_s`` the wall clock moves event time (:meth:`StreamsPipeline.idle_advance`);
* **publish**: telemetry/anomalies by tenant, alerts by rule id, auto-denies on the policies
  topic, through the driver's ``send``; every alert whose rule has a webhook is posted;
* **rules**: the alert rule file is re-read when it changes (:meth:`maybe_reload_rules`).

A driver owns only what is its own: where rows come from, how records are sent, when
offsets are committed, and (faust) checkpoints and rebalances — for which the pipeline keeps
the last offset per partition its state includes (``done``), which partitions moved since
the last checkpoint (``touched``) and each tenant's partition (``owner``) when asked to
(``track_offsets``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import orjson

from dnsflow.dlq import dlq_record
from dnsflow.schema import RecordError, now_us
from dnsflow.settings import ConfigError, Settings
from dnsflow.streams import config as streams_config
from dnsflow.streams import egress_input
from dnsflow.streams.alerts import AlertEngine, RuleFileError, load_rules
from dnsflow.streams.clock import PartitionClock
from dnsflow.streams.event_decode import decode, decode_fast
from dnsflow.streams.logic import FAR_FUTURE, Output, StreamLogic
from dnsflow.streams.webhook import WebhookSender
from dnsflow.topics import Topics

log = logging.getLogger("dnsflow.streams.pipeline")

Row = tuple[int, int, bytes | None, bytes | None]  # partition, offset, key, value
Record = tuple[bytes | None, bytes | None]          # key, value
# the driver's way out: send records to a topic; False when they could not be sent
Send = Callable[[str, list[Record]], Awaitable[bool]]

OUTPUT_TOPIC = {"telemetry": "telemetry", "anomaly": "anomalies", "alert": "alerts"}


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


def idle_watermark(logic: StreamLogic, idle_s: float) -> int:
    """Event time after ``idle_s`` without input: the newest event plus the wall time since.

    Live traffic is near the wall clock, so this closes windows and expires denies when
    queries stop; a backlog of old events is never overtaken by the wall clock during a pause
    (a consumer group join, a rebalance). Nothing moves before the first event.
    """
    if logic.max_ts <= -(1 << 61):
        return logic.watermark
    return min(logic.max_ts + int(idle_s * 1_000_000), now_us()) - logic.grace


def records_by_topic(topics: Topics, outputs: list[Output]) -> dict[str, list[Record]]:
    """Map outputs to ``{topic: [(key, value)]}`` in output order."""
    by: dict[str, list[Record]] = {}
    for o in outputs:
        if o.type == "policy_update":
            if o.record is not None:
                by.setdefault(topics.policies, []).append(o.record)
            continue
        topic = topics.name(OUTPUT_TOPIC[o.type])
        by.setdefault(topic, []).append((o.key.encode(), orjson.dumps(o.value)))
    return by


class RuleFile:
    """The alert rule file, re-read into the engine when its mtime changes (checked at most
    every ``check_s``); a file that does not validate keeps the last good rules."""

    def __init__(self, path: str | None, engine: AlertEngine, check_s: float = 2.0) -> None:
        self.path = path
        self.engine = engine
        self.check_s = check_s
        self.checked = time.monotonic()
        self.mtime = self._mtime()

    def _mtime(self) -> float | None:
        if not self.path:
            return None
        try:
            return Path(self.path).stat().st_mtime
        except OSError:
            return None

    def maybe_reload(self, now: float | None = None) -> bool:
        """:meth:`reload_if_changed` at most every ``check_s``."""
        now = time.monotonic() if now is None else now
        if not self.path or now - self.checked < self.check_s:
            return False
        self.checked = now
        return self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """True when new rules were loaded."""
        mtime = self._mtime()
        if mtime is None or mtime == self.mtime:
            return False
        self.mtime = mtime
        err = self.engine.reload(self.path)
        if err:
            log.error("streams: alert rules not reloaded, keeping the last good set: %s", err)
            return False
        log.info("streams: alert rules reloaded from %s", self.path)
        return True


def _ts(ev: dict[str, Any]) -> int:
    return ev["ts"]


class StreamsPipeline:
    def __init__(self, settings: Settings, topics: Topics, send: Send, *,
                 rules_check_s: float = 2.0, track_offsets: bool = False) -> None:
        self.logic = build_logic(settings, auto_watermark=False)
        self.cfg = self.logic.cfg
        self.topics = topics
        self.send = send
        self.clock = PartitionClock(self.logic.grace)
        self.webhooks = WebhookSender()
        self.rules = RuleFile(self.cfg.alert_rules, self.logic.alerts, rules_check_s)
        self.track = track_offsets
        self.done: dict[int, int] = {}    # last offset per partition in the logic's state
        self.touched: set[int] = set()    # partitions with input since the last checkpoint
        self.owner: dict[str, int] = {}   # tenant -> partition (events are keyed by tenant)
        self.egress_done: dict[int, int] = {}  # the same for the egress topic (tracked only
        # when it is co-partitioned with the events: handle_egress(track=True))
        self.pending: list[Output] = []   # outputs not sent yet (retried by publish)
        self.dlq = 0
        self.duplicates = 0
        self.detections: dict[tuple[str, str], int] = {}  # (kind, severity) -> published
        self.last_input = time.monotonic()

    async def start(self) -> None:
        await self.webhooks.start()

    async def stop(self) -> None:
        await self.webhooks.stop()

    # ------------------------------------------------------------------ input

    async def handle(self, topic: str, rows: Iterable[Row],
                     lagging: Callable[[], Collection[int]] | None = None) -> None:
        """One fetched batch of ``topic`` (any partitions, offset order per partition):
        decode, dead-letter, order, process, move the clock, publish. ``lagging``: asked
        after the batch is in, the partitions known to have unread records (they hold
        time back)."""
        self.last_input = time.monotonic()
        good, dead = self.decode(topic, rows)
        good.sort(key=_ts)
        self.logic.process_many(good)
        self.advance(lagging() if lagging is not None else ())
        if dead:
            self.dlq += len(dead)
            await self.send(self.topics.dlq, dead)
        await self.publish()

    async def handle_egress(self, topic: str, rows: Iterable[Row], *,
                            track: bool = False) -> None:
        """One fetched batch of the egress topic (``streams.egress_input``): dropped
        attempts to ``unresolved_egress``, malformed records to the DLQ, outputs published.
        Egress records do not move the clock: DNS events do.

        ``track`` (the faust worker when the egress topic is co-partitioned with the events:
        same key, same partition count, so egress partition *i* carries the tenants of
        events partition *i*): the last egress offset per partition goes to ``egress_done``
        (records at or below it are already in the state and skipped), the partition and
        each attempt's tenant's partition to ``touched``, and a tenant seen only here to
        ``owner``, so the next checkpoint of that partition holds the detector's state."""
        if track:
            good, dead = self._egress_tracked(topic, rows)
        else:
            good, dead = egress_input.attempts(topic, rows)
        det = egress_input.detector(self.logic)
        if det is not None:
            for ev in good:
                det.observe_egress(ev)
        if dead:
            self.dlq += len(dead)
            await self.send(self.topics.dlq, dead)
        await self.publish()

    def _egress_tracked(self, topic: str, rows: Iterable[Row]) -> tuple[list[dict[str, Any]],
                                                                      list[Record]]:
        done, touched, owner = self.egress_done, self.touched, self.owner
        by_part: dict[int, list[Row]] = {}
        for row in rows:
            part, offset = row[0], row[1]
            if offset <= done.get(part, -1):
                self.duplicates += 1  # already in the state (re-read after a restart)
                continue
            done[part] = offset
            touched.add(part)
            by_part.setdefault(part, []).append(row)
        good: list[dict[str, Any]] = []
        dead: list[Record] = []
        for part, part_rows in by_part.items():
            g, d = egress_input.attempts(topic, part_rows)
            for ev in g:
                touched.add(owner.setdefault(str(ev.get("tenant", "")), part))
            good += g
            dead += d
        good.sort(key=_ts)
        return good, dead

    def decode(self, topic: str, rows: Iterable[Row]) -> tuple[list[dict[str, Any]],
                                                              list[Record]]:
        """The events of ``rows`` and the DLQ records of the rest; the newest event time per
        partition goes to the clock."""
        good: list[dict[str, Any]] = []
        dead: list[Record] = []
        newest: dict[int, int] = {}
        not_after = now_us() + int(self.cfg.max_future_s * 1_000_000)
        track, done, touched, owner = self.track, self.done, self.touched, self.owner
        for part, offset, key, value in rows:
            if track:
                if offset <= done.get(part, -1):
                    # already in the state: re-delivered around start-up, restarts, rebalances
                    self.duplicates += 1
                    continue
                done[part] = offset
                touched.add(part)  # even a dead-lettered record must be checkpointed past
            ev = decode_fast(value) if value else None
            if ev is None or ev["ts"] > not_after:
                try:  # slow path: normalise, or find the reason for the DLQ
                    ev = decode(value or b"", f"{topic}[{part}]@{offset}", not_after)
                except RecordError as exc:
                    dead.append((topic.encode(), dlq_record(topic, part, offset, str(exc),
                                                            value, key, component="streams")))
                    continue
            good.append(ev)
            if track:
                owner[ev["tenant"]] = part
            ts = ev["ts"]
            if ts > newest.get(part, -FAR_FUTURE):
                newest[part] = ts
        for part, ts in newest.items():
            self.clock.observe(part, ts)
        return good, dead

    # ------------------------------------------------------------------ time

    def advance(self, lagging: Collection[int] = ()) -> bool:
        """Let the partition clock close windows; True when panes closed."""
        wm = self.clock.watermark(lagging=lagging)
        return wm is not None and self.logic.advance_to(wm)

    def idle_advance(self) -> bool:
        """After ``idle_advance_s`` without input the wall clock moves event time, so windows
        close and denies expire when nobody queries; True when panes closed."""
        idle = time.monotonic() - self.last_input
        if idle < self.cfg.idle_advance_s:
            return False
        return self.logic.advance_to(idle_watermark(self.logic, idle))

    def maybe_reload_rules(self, every_call: bool = False) -> bool:
        """Re-read a changed alert rule file (at most every ``rules_check_s`` unless
        ``every_call``: a driver's own timer); True when new rules were loaded."""
        return self.rules.reload_if_changed() if every_call else self.rules.maybe_reload()

    # ------------------------------------------------------------------ output

    async def publish(self) -> bool:
        """Send what the logic produced (and what could not be sent before); post the
        alerts whose rule has a webhook. False: some outputs are still pending."""
        outputs = self.logic.drain()
        if not outputs and not self.pending:
            return True
        alerts, detections = self.logic.alerts, self.detections
        for o in outputs:
            if o.type == "alert":
                rule = alerts.rule(o.key)
                if rule is not None and rule.webhook is not None:
                    self.webhooks.submit(rule.webhook, o.value)
            elif o.type == "anomaly":  # per output, not per event: /metrics by kind
                k = (str(o.value.get("kind", "")), str(o.value.get("severity", "")))
                detections[k] = detections.get(k, 0) + 1
        todo = self.pending + outputs if self.pending else outputs
        self.pending = []
        for topic, records in records_by_topic(self.topics, todo).items():
            if not await self.send(topic, records):
                self.pending = todo  # retried next time; the driver does not commit meanwhile
                return False
        return True

    def metrics_status(self) -> dict[str, Any]:
        """:meth:`status` plus the detections by (kind, severity) (tuple keys: not JSON)."""
        return {**self.status(), "detections": dict(self.detections)}

    def status(self) -> dict[str, Any]:
        st = self.logic.status()
        st.update({"dlq": self.dlq, "duplicates": self.duplicates,
                   "pending_outputs": len(self.pending), "webhooks": self.webhooks.status()})
        return st
