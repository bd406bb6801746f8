"""Per-client token buckets (the verdict carries the rate; the edge keeps the buckets)."""

from __future__ import annotations

import time

from dnsflow.edge.tokens import take


class RateLimiter:
    """``allow(ip, rate, burst)`` refills lazily; memory bounded by ``max_clients``."""

    def __init__(self, max_clients: int = 100_000, clock=time.monotonic) -> None:
        self._b: dict[str, list[float]] = {}
        self.max_clients = max_clients
        self.clock = clock
        self.limited = 0

    def allow(self, ip: str, rate: float, burst: int) -> bool:
        now = self.clock()
        b = self._b.get(ip)
        if b is None:
            if len(self._b) >= self.max_clients:
                self._b.clear()
            self._b[ip] = [burst - 1.0, now]
            return True
        if take(b, now, rate, burst):
            return True
        self.limited += 1
        return False
