"""Follow the policies topic into a PolicyStore, as an edge does.

Bad records go to the DLQ with the reason and the last good policy stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

from dnsflow.bus import Bus
from dnsflow.bus.base import Consumer, Message
from dnsflow.dlq import send_dead_letter
from dnsflow.policies.store import PolicyStore
from dnsflow.policies.types import PolicyRecordError
from dnsflow.tasks import cancel_and_wait

log = logging.getLogger(__name__)
# Records above this size compile in a worker thread so the event loop keeps serving.
THREAD_THRESHOLD = 256 * 1024


@dataclass(eq=False)
class PolicyFollower:
    """A Service: reads the compacted topic from the beginning, then keeps applying.
    ``on_change`` gets the key and the record in force after each applied record."""

    name: ClassVar[str] = "policy-follower"
    bus: Bus
    store: PolicyStore
    _: KW_ONLY
    on_change: Callable[[str, dict[str, Any] | None], None] | None = None
    poll_ms: int = 200
    applied: int = field(default=0, init=False)
    rejected: int = field(default=0, init=False)
    last_error: str = field(default="", init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _consumer: Consumer = field(init=False)

    def __post_init__(self) -> None:
        self._consumer = self.bus.consumer([self.bus.topics.policies], None,
                                           from_beginning=True)

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="policy-follower")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._consumer.stop()

    def status(self) -> dict[str, Any]:
        return {"applied": self.applied, "rejected": self.rejected,
                "last_error": self.last_error, "keys": self.store.keys()}

    async def poll_once(self, timeout_ms: int | None = None) -> int:
        """Apply what arrived; returns how many records changed what is in force."""
        batch = await self._consumer.getmany(timeout_ms=timeout_ms or self.poll_ms,
                                             max_records=1000)
        changed = 0
        for m in batch:
            if await self._apply(m):
                changed += 1
        return changed

    async def _apply(self, m: Message) -> bool:
        try:
            if m.value is not None and len(m.value) > THREAD_THRESHOLD:
                applied = await asyncio.to_thread(self.store.apply_record, m.key, m.value)
            else:
                applied = self.store.apply_record(m.key, m.value)
            if not applied:
                return False
        except PolicyRecordError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            log.warning("policy record rejected (offset %d): %s", m.offset, exc)
            asyncio.get_running_loop().create_task(
                send_dead_letter(self.bus, m, str(exc), component="policies"))
            return False
        self.applied += 1
        if self.on_change is not None:
            key = m.key.decode("utf-8", "replace") if m.key else ""
            self.on_change(key, self.store.record(key))
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following; the store keeps the last good policy
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("policy follower")
                await asyncio.sleep(1.0)
