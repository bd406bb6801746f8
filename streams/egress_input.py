"""The second input of the streams: ``dnsflow.egress`` (#17), for ``unresolved_egress``.

Why separate from the events path: egress records are another schema, far fewer, and only
one detector wants them (the dropped attempts; allowances are skipped before validation).
They do not move the DNS partition clock. :func:`attempts` decodes a batch (malformed
records become DLQ records, as on the events path); :class:`EgressInput` is the in-process
driver's consumer (its own group ``<group>-egress``, committed after publishing); replay
takes egress records mixed into its input (:func:`attempt_of`); the faust worker has the
topic delivered in batches next to the events (``FaustWorker.process_egress``: committed
with the checkpoints when co-partitioned with the events, else once published).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from dnsflow.bus.base import BusError
from dnsflow.dlq import dlq_record
from dnsflow.schema import RecordError, parse_egress
from dnsflow.streams.detectors.egress import UnresolvedEgress

if TYPE_CHECKING:
    from dnsflow.bus import Bus
    from dnsflow.streams.logic import StreamLogic
    from dnsflow.streams.pipeline import Record, Row, StreamsPipeline

log = logging.getLogger("dnsflow.streams.egress")


def attempt_of(value: bytes, where: str) -> dict[str, Any] | None:
    """The validated record when ``value`` is a dropped attempt, None for an allowance;
    :class:`RecordError` (with the reason) for what is not an egress record."""
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"{where}: not JSON ({exc})") from None
    if isinstance(raw, dict) and raw.get("kind") == "allow":
        return None
    return parse_egress(raw, where).model_dump()


def attempts(topic: str, rows: Iterable[Row]) -> tuple[list[dict[str, Any]], list[Record]]:
    """The dropped attempts of a fetched batch (event-time order) and DLQ records."""
    good: list[dict[str, Any]] = []
    dead: list[Record] = []
    for part, offset, key, value in rows:
        try:
            ev = attempt_of(value or b"", f"{topic}[{part}]@{offset}")
        except RecordError as exc:
            dead.append((topic.encode(), dlq_record(topic, part, offset, str(exc), value, key,
                                                    component="streams")))
            continue
        if ev is not None:
            good.append(ev)
    good.sort(key=lambda e: e["ts"])
    return good, dead


def detector(logic: StreamLogic) -> UnresolvedEgress | None:
    """The enabled ``unresolved_egress`` detector of ``logic``, if any."""
    det = logic.detectors.get(UnresolvedEgress.kind)
    return det if isinstance(det, UnresolvedEgress) else None


class EgressInput:
    """In-process driver: follows the egress topic into the pipeline's detector."""

    def __init__(self, bus: Bus, pipeline: StreamsPipeline, group: str) -> None:
        self.bus = bus
        self.pipeline = pipeline
        self.group = f"{group}-egress"
        self.consumer = bus.consumer([bus.topics.egress], self.group)
        self.records = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="streams-egress")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(BusError):
            await self.consumer.commit()
        await self.consumer.stop()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            except BusError as exc:
                log.warning("streams: reading egress records failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if not msgs:
                continue
            self.records += len(msgs)
            await self.pipeline.handle_egress(
                self.bus.topics.egress, ((m.partition, m.offset, m.key, m.value) for m in msgs))
            if not self.pipeline.pending:
                with contextlib.suppress(BusError):
                    await self.consumer.commit()
