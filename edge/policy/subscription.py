"""Follow the compacted policies topic; apply atomically; keep the last good policy on disk.

Fail-static: on start the edge loads ``edge-policy.snapshot`` (if any) before touching Kafka,
so it enforces the last known policy even when Kafka is down. Invalid records go to the DLQ
with the reason and never replace what is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from dnsflow.bus import Bus, Message
from dnsflow.dlq import send_dead_letter
from dnsflow.edge.resolver import PolicyHolder
from dnsflow.policies.api import PolicyRecordError, PolicyStore

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PolicySubscription:
    """Follows the policies topic into ``holder``, whose store it loads from and saves to
    ``snapshot_path``. ``ns_tenants`` gives the namespace owners a snapshot's store needs;
    ``on_change`` is called with the keys whose policy changed."""

    bus: Bus
    holder: PolicyHolder
    snapshot_path: Path
    _: KW_ONLY
    cluster_domain: str = "cluster.local"
    ns_tenants: Callable[[], Mapping[str, str]] | None = None
    retry: float = 2.0
    on_change: Callable[[list[bytes]], None] | None = None
    applied: int = field(default=0, init=False)
    ignored: int = field(default=0, init=False)
    rejected: int = field(default=0, init=False)
    ready: bool = field(default=False, init=False)
    from_snapshot: bool = field(default=False, init=False)
    last_error: str = field(default="", init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    def load_snapshot(self) -> bool:
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("policy snapshot %s unreadable: %s", self.snapshot_path, exc)
            return False
        try:
            store = PolicyStore.from_snapshot(data, self.cluster_domain)
        except Exception as exc:
            log.error("policy snapshot %s is invalid (%s); starting without it",
                      self.snapshot_path, exc)
            return False
        if self.ns_tenants is not None:
            store.set_namespace_tenants(self.ns_tenants())
        self.holder.store = store
        self.holder.changed()
        self.from_snapshot = True
        self.ready = True
        log.info("policy loaded from snapshot %s", self.snapshot_path)
        return True

    def save_snapshot(self) -> None:
        try:
            data = self.holder.store.snapshot()
            self.snapshot_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.snapshot_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(self.snapshot_path)
        except Exception as exc:
            log.error("cannot write policy snapshot %s: %s", self.snapshot_path, exc)

    async def start(self) -> None:
        self.load_snapshot()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="policy-sub")

    async def _run(self) -> None:
        topic = self.bus.topics.policies
        backoff = self.retry
        while not self._stopping:
            consumer = self.bus.consumer([topic], group=None, from_beginning=True)
            try:
                await consumer.start()
            except Exception as exc:
                self.last_error = f"policies topic: {exc}"
                # said once loudly, then quietly while it lasts (retrying with back-off)
                (log.warning if backoff == self.retry else log.debug)(
                    "cannot follow %s (%s); enforcing the last good policy", topic, exc)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if backoff != self.retry:
                log.warning("following %s again", topic)
            backoff = self.retry
            try:
                while not self._stopping:
                    msgs = await consumer.getmany(timeout_ms=500, max_records=1000)
                    if msgs:
                        await self.apply(msgs)
                    else:
                        self.ready = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"policies topic: {exc}"
                log.warning("following %s failed (%s); retrying", topic, exc)
                await asyncio.sleep(self.retry)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def apply(self, msgs: list[Message]) -> None:
        """Apply a fetched batch without yielding to the event loop in between, so no query
        sees half of it; rejected records go to the DLQ afterwards."""
        changed: list[bytes] = []
        store = self.holder.store
        rejected: list[tuple[Message, str]] = []
        for m in msgs:
            try:
                if store.apply_record(m.key, m.value):
                    self.applied += 1
                    changed.append(m.key or b"")
                else:
                    self.ignored += 1
            except PolicyRecordError as exc:
                self.rejected += 1
                log.error("policy record %s[%d]@%d rejected: %s", m.topic, m.partition,
                          m.offset, exc)
                rejected.append((m, str(exc)))
            except Exception as exc:  # a bug in the store must not kill the subscription
                self.rejected += 1
                log.exception("policy record %s@%d failed to apply", m.topic, m.offset)
                rejected.append((m, f"apply failed: {exc!r}"))
        if changed:
            self.holder.changed()
            if self.on_change is not None:
                self.on_change(changed)
            self.save_snapshot()
        for m, reason in rejected:
            await send_dead_letter(self.bus, m, reason, component="edge")

    async def stop(self) -> None:
        # A stop flag first: a consumer's getmany may swallow a cancellation (asyncio.wait_for
        # on Python 3.11), so cancelling alone could leave this task running forever.
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(self._task, 1.0)
            self._task = None

    def status(self) -> dict[str, Any]:
        return {"applied": self.applied,
                "ignored": self.ignored, "rejected": self.rejected, "ready": self.ready,
                "from_snapshot": self.from_snapshot, "last_error": self.last_error}
