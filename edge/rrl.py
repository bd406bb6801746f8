"""Response rate limiting for UDP answers (the BIND RRL / unbound ``ip-ratelimit`` idea).

A UDP source address can be forged, so an open UDP resolver amplifies: a small query with a
victim's address as its source buys the victim a larger answer. Each client prefix (/24 for
IPv4, /56 for IPv6 by default: one site, one subscriber) gets a token bucket of ``rate``
answers per second with ``burst`` in reserve. A query over the limit gets no answer, except
every ``slip``-th one, which gets an empty truncated answer (TC=1, question only): a real
client behind that prefix retries over TCP, which cannot be forged, while a forger's victim
receives at most a small fraction of small packets. ``slip`` 0 drops them all, 1 truncates all.

Off by default (``rrl_rate: 0``). The edge runs next to its workloads: in Kubernetes a node's
pods share the node's pod CIDR, usually one /24, so any per-/24 budget counts every pod on the
node as one client and a busy node would lose answers to its own legitimate traffic. Turn it
on where the UDP listener is reachable from outside the node (a hostNetwork or public address),
with a rate well above one client's normal peak.

Cost: nothing when off (one ``is None`` test per datagram). When on, one dict lookup and a
little float arithmetic per datagram, with the key computed from the raw source address the
batched receive path already holds (an integer mask for IPv4) and the clock read once per
batch. The table is bounded (``max_entries``): when full, buckets that have refilled (and so
mean nothing) are pruned first.
"""

from __future__ import annotations

import socket
from typing import Any

from dnsflow.edge.tokens import take

ANSWER, DROP, SLIP = 0, 1, 2


class ResponseRateLimiter:
    def __init__(self, rate: float, burst: float = 0.0, slip: int = 2, v4_prefix: int = 24,
                 v6_prefix: int = 56, max_entries: int = 100_000) -> None:
        if rate <= 0:
            raise ValueError("rrl rate must be > 0 (leave the limiter out to disable it)")
        self.rate = float(rate)
        self.burst = float(burst) if burst and burst > 0 else float(rate)
        self.slip = max(0, int(slip))
        self.v4_prefix = v4_prefix
        self.v6_prefix = v6_prefix
        self.max_entries = max_entries
        # the IPv4 address sits little-endian in bits 32..63 of the sockaddr_in word the
        # batched path reads; this mask keeps the prefix's bytes of it
        self.mask4 = int.from_bytes(
            ((0xFFFFFFFF << (32 - v4_prefix)) & 0xFFFFFFFF).to_bytes(4, "big"), "little")
        self.shift6 = 128 - v6_prefix
        self.buckets: dict[Any, list[float]] = {}
        self.limited = 0
        self.dropped = 0
        self.slipped = 0
        self._text_keys: dict[str, Any] = {}

    # -- keys ------------------------------------------------------------------------
    def key_v4(self, sockaddr_word: int) -> int:
        """From the first 8 bytes of a sockaddr_in read as a little-endian integer."""
        return (sockaddr_word >> 32) & self.mask4

    def key_v6(self, sockaddr: bytes) -> tuple[int]:
        """From a raw sockaddr_in6 (the address is bytes 8..24)."""
        return (int.from_bytes(sockaddr[8:24], "big") >> self.shift6,)

    def key_ip(self, ip: str) -> Any:
        """From an address string (the unbatched path); cached."""
        k = self._text_keys.get(ip)
        if k is None:
            if len(self._text_keys) >= self.max_entries:
                self._text_keys.clear()
            if ":" in ip:
                k = (int.from_bytes(socket.inet_pton(socket.AF_INET6, ip.split("%")[0]),
                                    "big") >> self.shift6,)
            else:
                k = int.from_bytes(socket.inet_aton(ip), "little") & self.mask4
            self._text_keys[ip] = k
        return k

    # -- the decision -------------------------------------------------------------------
    def check(self, key: Any, now: float) -> int:
        """ANSWER, DROP or SLIP for one query from this prefix at time ``now``."""
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.max_entries:
                self._prune(now)
            self.buckets[key] = [self.burst - 1.0, now]
            return ANSWER
        if take(b, now, self.rate, self.burst):
            return ANSWER
        self.limited += 1
        if self.slip and self.limited % self.slip == 0:
            self.slipped += 1
            return SLIP
        self.dropped += 1
        return DROP

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate  # seconds after which any bucket is full again
        for k in [k for k, b in self.buckets.items() if now - b[1] >= full]:
            del self.buckets[k]
        if len(self.buckets) >= self.max_entries * 0.9:
            self.buckets.clear()

    def status(self) -> dict[str, Any]:
        return {"enabled": True, "rate": self.rate, "burst": self.burst, "slip": self.slip,
                "limited": self.limited, "dropped": self.dropped, "slipped": self.slipped,
                "prefixes": len(self.buckets)}


def tc_reply(query: bytes) -> bytes | None:
    """An empty truncated answer (QR, TC, the question, nothing else) to a standard query,
    or None when the packet is not one (then nothing is sent)."""
    n = len(query)
    if n < 17 or query[2] & 0x80 or query[2] & 0x78 or query[4:6] != b"\x00\x01":
        return None
    i = 12
    while True:
        if i >= n:
            return None
        ln = query[i]
        if ln == 0:
            i += 1
            break
        if ln & 0xC0:
            return None
        i += 1 + ln
        if i - 12 > 255:
            return None
    end = i + 4
    if end > n:
        return None
    flags = bytes(((query[2] & 0x01) | 0x82, 0x80 | (query[3] & 0x10)))  # QR TC RD / RA CD
    return query[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]
