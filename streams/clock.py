"""Event time for live drivers: the watermark follows the slowest *active* partition.

Events are partitioned by tenant. When a worker catches up on a backlog, one partition can
be minutes ahead of another; a watermark taken from the newest event would make every other
partition's events late. Like Flink's per-partition watermarks, the live drivers take the
minimum over partitions that delivered recently (``idle_s``), and do not advance at all
during a short warm-up after start so every partition with a backlog is seen first.
Partitions that stay quiet drop out, so one idle partition does not stop time.
"""

from __future__ import annotations

import time
from collections.abc import Hashable


class PartitionClock:
    def __init__(self, grace_us: int, idle_s: float = 5.0, warmup_s: float = 2.0) -> None:
        self.grace = grace_us
        self.idle_s = idle_s
        self.warmup_s = warmup_s
        self.started = time.monotonic()
        self.newest: dict[Hashable, int] = {}
        self.seen: dict[Hashable, float] = {}

    def observe(self, partition: Hashable, max_ts: int, now: float | None = None) -> None:
        """``max_ts``: the newest event time in a batch from ``partition``."""
        if max_ts > self.newest.get(partition, -(1 << 62)):
            self.newest[partition] = max_ts
        self.seen[partition] = time.monotonic() if now is None else now

    def watermark(self, now: float | None = None) -> int | None:
        """The event time every active partition has reached, minus grace; None: wait."""
        now = time.monotonic() if now is None else now
        if now - self.started < self.warmup_s:
            return None
        active = [self.newest[p] for p, t in self.seen.items() if now - t <= self.idle_s]
        if not active:
            return None
        return min(active) - self.grace
