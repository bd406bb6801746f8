"""The token bucket both of the edge's limiters use (the policy's per-client rate limit and
UDP response rate limiting): one bucket is ``[tokens, last_refill]``, refilled lazily when a
query arrives, so an idle client costs nothing until it asks again."""

from __future__ import annotations


def take(bucket: list[float], now: float, rate: float, burst: float) -> bool:
    """Refill ``bucket`` for the time since its last use (at most ``burst`` tokens) and take
    one token; False when there was none to take."""
    tokens = bucket[0] + (now - bucket[1]) * rate
    if tokens > burst:
        tokens = burst
    bucket[1] = now
    if tokens >= 1.0:
        bucket[0] = tokens - 1.0
        return True
    bucket[0] = tokens
    return False
