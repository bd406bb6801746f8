"""Event publisher: the answer path only appends a tuple; everything else happens later.

Design (why): building the event dict, JSON encoding and producing to Kafka cost several
microseconds each, which would halve a cache-hit answer rate. So the answer path appends one
tuple to a bounded deque; a background task builds and encodes events in batches and calls
``bus.send_many`` (one event per Kafka record, keyed by tenant). When Kafka is unreachable
(``BusError``) batches go to the on-disk :class:`Spool`, and a drainer re-sends them in order
when Kafka is back; while anything is spooled, new events are spooled behind it so order is
kept. Events are dropped only when the spool is full, and then an ERROR says how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson

from dnsflow.bus import Bus, BusError
from dnsflow.edge.telemetry.spool import Record, Spool
from dnsflow.schema import EVENT_FIELDS, SCHEMA_VERSION

log = logging.getLogger(__name__)

# Order of the tuple the answer path emits: the core's event fields (dnsflow.schema.Event)
# without the ones constant per edge (v, edge), which the encoder writes first.
_CONSTANT = ("v", "edge")
EVENT_KEYS: tuple[str, ...] = tuple(k for k in EVENT_FIELDS if k not in _CONSTANT)
# A memoised hit's template holds every field but these two, which vary per hit.
_PER_HIT = ("ts", "latency_us")
TEMPLATE_KEYS: tuple[str, ...] = tuple(k for k in EVENT_KEYS if k not in _PER_HIT)
if EVENT_KEYS[:2] != ("ts", "tenant"):  # encode() takes the key from ev[1]
    raise ImportError("edge.telemetry.publisher: the event tuple must start with ts, tenant")


def _count(ev: tuple[Any, ...]) -> int:
    """Events in one queue item: a batch of memoised hits holds a list of templates, a
    batch of ready records (:meth:`EventPublisher.emit_records`) a list of records."""
    if len(ev) == 1:
        return len(ev[0])
    return len(ev[2]) if len(ev) == 3 and type(ev[2]) is list else 1


class EventPublisher:
    def __init__(self, bus: Bus, spool: Spool, *, edge: str, topic: str | None = None,
                 max_queue: int = 200_000, batch: int = 2_000, linger: float = 0.02,
                 drain_interval: float = 1.0) -> None:
        self.bus = bus
        self.spool = spool
        self.edge = edge
        self.topic = topic or bus.topics.events
        self.max_queue = max_queue
        self.batch = batch
        self.linger = linger
        self.drain_interval = drain_interval
        self.queue: deque[tuple[Any, ...]] = deque()
        self.queued = 0  # events in ``queue`` (a batch item holds several)
        self.emitted = 0
        self.published = 0
        self.spooled = 0
        self.dropped = 0
        self.send_errors = 0
        self.kafka_ok = True
        self.last_error = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._last_drop_log = 0.0
        self._drops_since_log = 0
        self._wake_drainer = asyncio.Event()

    # -- answer path --------------------------------------------------------------------
    def emit(self, ev: tuple[Any, ...]) -> None:
        """Queue one event tuple (fields in :data:`EVENT_KEYS` order). Never blocks."""
        self.emitted += 1
        if self.queued >= self.max_queue:
            # The background task is behind (Kafka slow): make room by spooling the oldest half.
            self._spill(self._take(len(self.queue) // 2 or 1))
        self.queued += 1
        self.queue.append(ev)

    def emit_many(self, ts: int, latency_us: int, templates: list[tuple[bytes, bytes]]) -> None:
        """Queue one event per template (see :meth:`template`) sharing ``ts`` and
        ``latency_us``: a batch of memoised cache hits costs one queue item, and encoding
        builds the shared JSON head once for the whole batch."""
        n = len(templates)
        self.emitted += n
        if self.queued >= self.max_queue:
            self._spill(self._take(len(self.queue) // 2 or 1))
        self.queued += n
        self.queue.append((ts, latency_us, templates))

    def emit_records(self, records: list[Record]) -> None:
        """Queue ready records (``(key, value)``, the value the event's whole JSON) as one
        queue item: the tap hands over one read's events in one call. ``records`` is the
        publisher's from now on (not copied). The edge's per-event :meth:`emit` and
        :meth:`emit_many` are unchanged."""
        n = len(records)
        self.emitted += n
        if self.queued >= self.max_queue:
            self._spill(self._take(len(self.queue) // 2 or 1))
        self.queued += n
        self.queue.append((records,))

    # -- encoding -----------------------------------------------------------------------
    def _take(self, n: int) -> list[tuple[Any, ...]]:
        q = self.queue
        if len(q) <= n:  # the usual case: swap the whole queue out in O(1)
            self.queue = deque()
            self.queued = 0
            return list(q)
        out = [q.popleft() for _ in range(n)]
        self.queued -= sum(_count(ev) for ev in out)
        return out

    def template(self, fields: tuple[Any, ...]) -> tuple[bytes, bytes]:
        """Pre-encode an event whose fields repeat (a memoised cache hit): only ``ts`` and
        ``latency_us`` vary, so the answer path emits ``(ts, latency_us, template)``."""
        d: dict[str, Any] = {"v": SCHEMA_VERSION, "edge": self.edge}
        d.update(zip(TEMPLATE_KEYS, fields, strict=True))
        return d["tenant"].encode(), b"," + orjson.dumps(d)[1:]

    def encode(self, events: list[tuple[Any, ...]]) -> list[Record]:
        edge = self.edge
        dumps = orjson.dumps
        keys = EVENT_KEYS
        out: list[Record] = []
        append = out.append
        for ev in events:
            if len(ev) == 3:  # (ts, latency_us, template or list of templates)
                tpl = ev[2]
                if type(tpl) is list:
                    head = b'{"ts":%d,"latency_us":%d' % (ev[0], ev[1])
                    out.extend([(k, head + v) for k, v in tpl])
                    continue
                append((tpl[0], b'{"ts":%d,"latency_us":%d%b' % (ev[0], ev[1], tpl[1])))
                continue
            if len(ev) == 1:  # ready records (emit_records)
                out.extend(ev[0])
                continue
            d = {"v": SCHEMA_VERSION, "edge": edge}
            d.update(zip(keys, ev, strict=True))
            append((ev[1].encode(), dumps(d)))
        return out

    def _spill(self, events: list[tuple[Any, ...]]) -> None:
        self._spool_records(self.encode(events))

    def _spool_records(self, records: list[Record], front: bool = False) -> None:
        if not records:
            return
        dropped = self.spool.prepend(records) if front else self.spool.append(records)
        self.spooled += len(records) - dropped
        if dropped:
            self._drop(dropped)
        self._wake_drainer.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._drops_since_log += n
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:
            log.error("event spool %s is full (%d bytes limit): dropped %d events "
                      "(%d in total, %d spooled pending)", self.spool.dir,
                      self.spool.limit_bytes, self._drops_since_log, self.dropped,
                      len(self.spool))
            self._last_drop_log = now
            self._drops_since_log = 0

    # -- background ---------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pump(), name="events-pump"),
                       loop.create_task(self._drain(), name="events-drain")]
        if not self.spool.empty:
            self.kafka_ok = False
            self._wake_drainer.set()

    async def _send(self, records: list[Record]) -> bool:
        try:
            await self.bus.send_many(self.topic, records)
        except BusError as exc:
            self.send_errors += 1
            self.last_error = str(exc)
            if self.kafka_ok:
                log.warning("kafka unavailable, spooling events to %s: %s", self.spool.dir, exc)
            self.kafka_ok = False
            return False
        self.published += len(records)
        return True

    async def _pump(self) -> None:
        while not self._stopping:
            if not self.queue:
                await asyncio.sleep(self.linger)
                continue
            await self.flush_once()

    async def flush_once(self) -> None:
        events = self._take(self.batch)
        records = self.encode(events)
        if self.kafka_ok and self.spool.empty:
            try:
                ok = await self._send(records)
            except asyncio.CancelledError:
                # delivery unknown: spool them (a duplicate is better than a loss)
                self._spool_records(records, front=True)
                raise
            if not ok:
                # newer events may have been spooled meanwhile: these go in front of them
                self._spool_records(records, front=True)
        else:
            self._spool_records(records)

    async def _drain(self) -> None:
        while not self._stopping:
            if self.spool.empty:
                self._wake_drainer.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_drainer.wait(), self.drain_interval)
                continue
            if not await self.drain_once():
                await asyncio.sleep(self.drain_interval)

    async def drain_once(self) -> bool:
        """Send the oldest spooled chunk; True if progress was made."""
        self.spool.flush()
        records, cursor = self.spool.peek(self.batch * 2)
        if cursor is None:
            return False
        if records and not await self._send(records):
            return False
        self.spool.commit(cursor, len(records))
        if self.spool.empty and not self.kafka_ok:
            log.warning("kafka is back: spool drained (%d events published in total)",
                        self.published)
            self.kafka_ok = True
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued to Kafka, or spool it; nothing in memory is lost."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        await self._finish_tasks(timeout / 2)
        while self.queue:
            if self.kafka_ok and self.spool.empty and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.flush_once(),
                                           max(0.1, deadline - time.monotonic()))
                except TimeoutError:  # flush_once spooled what it had in flight
                    self.kafka_ok = False
            else:
                self._spill(self._take(self.batch))
        await self._drain_spool_then_close(deadline)

    async def _drain_spool_then_close(self, deadline: float) -> None:
        """One bounded attempt to drain the spool before exiting; what is left stays on disk
        for the next start."""
        while not self.spool.empty and self.kafka_ok and time.monotonic() < deadline:
            try:  # cancel-safe: a chunk leaves the spool only once it was confirmed
                if not await asyncio.wait_for(self.drain_once(),
                                              max(0.1, deadline - time.monotonic())):
                    break
            except TimeoutError:
                break
        self.spool.close()

    async def _finish_tasks(self, grace: float) -> None:
        """Let the background tasks finish their current batch (they see ``_stopping``);
        cancel what is still running after ``grace`` (both are cancel-safe)."""
        self._wake_drainer.set()
        if self._tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(
                    *self._tasks, return_exceptions=True)), grace)
        for t in self._tasks:
            if not t.done():
                t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    def status(self) -> dict[str, Any]:
        return {"emitted": self.emitted, "published": self.published, "spooled": self.spooled,
                "spool_pending": len(self.spool), "spool_bytes": self.spool.size_bytes,
                "spooled_max": self.spool.max_pending, "dropped": self.dropped,
                "queue": self.queued, "kafka_ok": self.kafka_ok,
                "send_errors": self.send_errors, "last_error": self.last_error}
