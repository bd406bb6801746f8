"""Alert webhooks: POST the alert JSON with retries and backoff (httpx), off the hot path.

Failures after the last retry are counted and logged with the rule id — never raised into
the stream loop. The queue is bounded; when it is full the alert is still on the alerts topic
and the drop is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from dnsflow.streams.alerts import Webhook

log = logging.getLogger("dnsflow.streams.webhook")


class WebhookSender:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue: asyncio.Queue[tuple[Webhook, dict[str, Any]]] = asyncio.Queue(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient()
        self._task = asyncio.create_task(self._run(), name="streams-webhooks")

    def submit(self, hook: Webhook, alert: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((hook, alert))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook queue full: alert %s not posted to %s", alert.get("rule"),
                        hook.url)

    async def _run(self) -> None:
        while True:
            hook, alert = await self.queue.get()
            try:
                await self.post(hook, alert)
            finally:
                self.queue.task_done()

    async def post(self, hook: Webhook, alert: dict[str, Any]) -> bool:
        assert self._client is not None
        delay = hook.backoff_s
        for attempt in range(hook.retries + 1):
            try:
                r = await self._client.post(hook.url, json=alert, timeout=hook.timeout_s)
                if r.status_code < 500 and r.status_code != 429:
                    if r.is_success:
                        self.sent += 1
                        return True
                    break  # a 4xx will not get better by retrying
            except httpx.HTTPError as exc:
                log.debug("webhook %s attempt %d: %s", hook.url, attempt + 1, exc)
            if attempt < hook.retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.failed += 1
        log.warning("webhook %s: alert %s not delivered after %d attempts", hook.url,
                    alert.get("rule"), hook.retries + 1)
        return False

    async def stop(self, drain_timeout: float = 5.0) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), drain_timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def status(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                "queued": self.queue.qsize()}
