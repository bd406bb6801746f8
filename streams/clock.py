"""Event time for live drivers: the watermark follows the slowest *active* partition.

Events are partitioned by tenant. When a worker catches up on a backlog, one partition can
be minutes ahead of another; a watermark taken from the newest event would make every other
partition's events late. Like Flink's per-partition watermarks, the live drivers take the
minimum over partitions that delivered recently (``idle_s``), and do not advance at all
during a short warm-up after the first input so every partition with a backlog is seen first.
Partitions that stay quiet drop out, so one idle partition does not stop time.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Hashable


class PartitionClock:
    def __init__(self, grace_us: int, idle_s: float = 5.0, warmup_s: float = 3.0) -> None:
        self.grace = grace_us
        self.idle_s = idle_s
        self.warmup_s = warmup_s
        self.started: float | None = None  # the first input: joining a group takes a while
        self.newest: dict[Hashable, int] = {}
        self.seen: dict[Hashable, float] = {}

    def observe(self, partition: Hashable, max_ts: int, now: float | None = None) -> None:
        """``max_ts``: the newest event time in a batch from ``partition``."""
        now = time.monotonic() if now is None else now
        if self.started is None:
            self.started = now
        if max_ts > self.newest.get(partition, -(1 << 62)):
            self.newest[partition] = max_ts
        self.seen[partition] = now

    def watermark(self, now: float | None = None,
                  lagging: Collection[Hashable] = ()) -> int | None:
        """The event time every active partition has reached, minus grace; None: wait.

        ``lagging``: partitions the driver knows still have unread records (consumer lag);
        they hold time back even when they delivered nothing lately, and one never seen
        holds it completely.
        """
        now = time.monotonic() if now is None else now
        if self.started is None or now - self.started < self.warmup_s:
            return None
        if any(p not in self.newest for p in lagging):
            return None
        active = [self.newest[p] for p, t in self.seen.items()
                  if now - t <= self.idle_s or p in lagging]
        if not active:
            return None
        return min(active) - self.grace
