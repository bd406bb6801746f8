"""Consumer lag per partition, measured in the background for ``/metrics`` and ``/readyz``.

Lag is the bus's end offset (:meth:`dnsflow.bus.Bus.end_offsets`) minus where the consumer
is (the component says: the next offset it will process, or -1 for a partition it does not
own). On Kafka the end offsets cost a short-lived client, so they are fetched every
``interval_s`` in a task and a scrape only reads the last result: a scrape never waits on
Kafka, and the hot path pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

EndOffsets = Callable[[str], Awaitable[dict[int, int]]]
# (topic, partitions) -> {partition: next offset to process, -1 when not owned}
Positions = Callable[[str, list[int]], Awaitable[dict[int, int]]]


class LagProbe:
    def __init__(self, end_offsets: EndOffsets, topics: Iterable[str], positions: Positions,
                 interval_s: float = 10.0) -> None:
        self.end_offsets = end_offsets
        self.topics = list(topics)
        self.positions = positions
        self.interval_s = interval_s
        self.lag: dict[tuple[str, int], int] = {}
        self.refreshed_at = 0.0  # time.time() of the last complete refresh
        self.error = ""
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """One measurement of every topic; an error keeps the previous figures (and says so
        in :attr:`error`, which readiness reports)."""
        lag: dict[tuple[str, int], int] = {}
        try:
            for topic in self.topics:
                ends = await self.end_offsets(topic)
                pos = await self.positions(topic, sorted(ends))
                for part, end in ends.items():
                    at = pos.get(part, -1)
                    if at >= 0:
                        lag[(topic, part)] = max(0, end - at)
        except Exception as exc:  # Kafka away, consumer restarting: say so, keep trying
            self.errors += 1
            self.error = f"{type(exc).__name__}: {exc}"
            log.debug("lag probe: %s", self.error)
            return
        self.lag = lag
        self.error = ""
        self.refreshed_at = time.time()

    def total(self) -> int:
        return sum(self.lag.values())

    def fresh(self) -> bool:
        """Measured within the last three intervals."""
        return time.time() - self.refreshed_at <= 3 * self.interval_s

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lag-probe")

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def lag_families(component: str, probe: LagProbe) -> Iterator[Metric]:
    """``dnsflow_<component>_consumer_lag_records{topic,partition}`` and how fresh it is."""
    g = GaugeMetricFamily(f"dnsflow_{component}_consumer_lag_records",
                          "records not yet processed, per owned partition (end offset minus "
                          "position)", labels=["topic", "partition"])
    for (topic, part), n in sorted(probe.lag.items()):
        g.add_metric([topic, str(part)], n)
    yield g
    yield GaugeMetricFamily(f"dnsflow_{component}_consumer_lag_updated_timestamp_seconds",
                            "when the lag was last measured (Unix seconds; 0: never)",
                            value=probe.refreshed_at)
