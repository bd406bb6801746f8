"""The live tail: one filter for ``/api/tail`` (server-sent events) and ``dnsflow tail``.

Events come from the bus topic ``events`` (the in-process bus inside ``dnsflow up``/``demo``,
Kafka with ``--kafka``). One reader per process fans them out to every subscriber, each
with its own filter and a bounded queue: a slow browser loses events (counted), it never
holds the reader or the other subscribers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, get_args

import orjson

from dnsflow.bus import Bus
from dnsflow.schema import Decision

log = logging.getLogger(__name__)

DECISIONS: tuple[str, ...] = get_args(Decision)
QUEUE_SIZE = 1000


class FilterError(ValueError):
    """A filter value that cannot match anything sensible (e.g. an unknown decision)."""


@dataclass(frozen=True)
class TailFilter:
    """Exact tenant, namespace and decision; pod exact or ``prefix*``; name a substring
    (case-insensitive). Empty means "any"."""

    tenant: str = ""
    namespace: str = ""
    pod: str = ""
    name: str = ""
    decision: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TailFilter:
        """From query parameters or parsed flags; unknown keys are ignored."""
        got = {f.name: str(values.get(f.name) or "").strip() for f in fields(cls)}
        got["name"] = got["name"].lower().rstrip(".")
        if got["decision"] and got["decision"] not in DECISIONS:
            raise FilterError(
                f"decision {got['decision']!r}: must be one of {', '.join(DECISIONS)}")
        return cls(**got)

    def scoped(self, tenant: str | None) -> TailFilter:
        """This filter within ``tenant`` (None: every tenant). Asking for another tenant
        is refused rather than silently widened or emptied."""
        if tenant is None:
            return self
        if self.tenant and self.tenant != tenant:
            raise PermissionError(f"tenant {self.tenant!r} is not visible with this token")
        return replace(self, tenant=tenant)

    def matches(self, ev: Mapping[str, Any]) -> bool:
        if self.tenant and ev.get("tenant") != self.tenant:
            return False
        if self.namespace and ev.get("namespace") != self.namespace:
            return False
        if self.decision and ev.get("decision") != self.decision:
            return False
        if self.pod:
            pod = str(ev.get("pod") or "")
            if self.pod.endswith("*"):
                if not pod.startswith(self.pod[:-1]):
                    return False
            elif pod != self.pod:
                return False
        return not self.name or self.name in str(ev.get("qname") or "").lower()


def decode(value: bytes | None) -> dict[str, Any] | None:
    """One event record as a dict, or None for something that is not a JSON object."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


class Subscription:
    def __init__(self, flt: TailFilter) -> None:
        self.filter = flt
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def offer(self, ev: dict[str, Any]) -> None:
        if not self.filter.matches(ev):
            return
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.dropped += 1

    async def events(self, idle_s: float) -> AsyncIterator[dict[str, Any] | None]:
        """Matching events as they come; ``None`` after ``idle_s`` without one (a
        keep-alive tick); ends when the feed closes."""
        while True:
            try:
                ev = await asyncio.wait_for(self.queue.get(), idle_s)
            except TimeoutError:
                yield None
                continue
            if ev is None:
                return
            yield ev


async def _settle(bus: Bus, consumer: Any, timeout_s: float = 10.0) -> None:
    """Resolve the end position of every partition now (Kafka does it lazily), so an event
    published once a subscriber is told "live" is never skipped."""
    topic = bus.topics.events
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            for p in range(await bus.partition_count(topic) or 0):
                while await consumer.position(topic, p) < 0:
                    await asyncio.sleep(0.05)


class EventFeed:
    """Reads ``events`` from the bus while someone watches; new events only."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.subscribers: set[Subscription] = set()
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def subscribe(self, flt: TailFilter) -> AsyncIterator[Subscription]:
        sub = Subscription(flt)
        async with self._lock:
            self.subscribers.add(sub)
            if self._task is None:
                self._ready = asyncio.Event()
                self._task = asyncio.create_task(self._read(), name="dnsflow-console-tail")
            ready = self._ready
        assert ready is not None
        await ready.wait()  # positioned at the end: what is published from now on arrives
        try:
            yield sub
        finally:
            async with self._lock:
                self.subscribers.discard(sub)
                if not self.subscribers:
                    await self._halt()

    async def _read(self) -> None:
        assert self._ready is not None
        consumer = self.bus.consumer([self.bus.topics.events], None, from_beginning=False)
        try:
            await consumer.start()
            await consumer.seek_to_end()
            await _settle(self.bus, consumer)
        except Exception:
            log.exception("live tail: cannot read %s", self.bus.topics.events)
            self._ready.set()
            self._close_all()
            return
        self._ready.set()
        try:
            while True:
                for msg in await consumer.getmany(timeout_ms=200, max_records=2000):
                    ev = decode(msg.value)
                    if ev is None:
                        continue
                    self.received += 1
                    for sub in tuple(self.subscribers):
                        sub.offer(ev)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live tail: reading %s failed", self.bus.topics.events)
            self._close_all()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _close_all(self) -> None:
        for sub in tuple(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    async def _halt(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        """End every subscriber's stream and stop reading."""
        self._close_all()
        async with self._lock:
            await self._halt()


def format_line(ev: Mapping[str, Any]) -> str:
    """One event as one line, ``hubble observe`` style: when, who, what, verdict, how fast."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromtimestamp(int(ev.get("ts") or 0) / 1e6, UTC)
        clock = when.strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError):
        clock = "--:--:--.---"
    who = f"{ev.get('tenant', '?')}/{ev.get('namespace') or '-'}/{ev.get('pod') or '-'}"
    try:
        latency = f"{int(ev.get('latency_us') or 0) / 1000:.2f}ms"
    except (TypeError, ValueError):
        latency = "?ms"
    rule = ev.get("rule") or ""
    answers = ev.get("answers") or []
    out = (f"{clock} {who} ({ev.get('client_ip', '?')}) {ev.get('transport', '?')} "
           f"{ev.get('qtype', '?')} {ev.get('qname', '?')} -> {ev.get('decision', '?')} "
           f"{ev.get('rcode', '?')} {latency} cache={ev.get('cache', '?')}")
    if answers:
        out += f" answers={len(answers)}"
    out += f" rule={rule}" if rule else ""
    # a name may carry any byte: never let one move a terminal's cursor or change its colours
    return out if out.isprintable() else "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)
