"""HyperLogLog for distinct counts past the exact cap (standard error ≈ 1.04/√m = 1.6 %).

Only names beyond a pane's exact cap reach it, so its per-item cost (a blake2b hash) is paid
only under floods of unique names (tunneling, random-subdomain attacks).
"""

from __future__ import annotations

import math
from hashlib import blake2b

P = 12
M = 1 << P
ALPHA = 0.7213 / (1 + 1.079 / M)
STD_ERROR = 1.04 / math.sqrt(M)


class HyperLogLog:
    __slots__ = ("reg",)

    def __init__(self) -> None:
        self.reg = bytearray(M)

    def add(self, item: str) -> None:
        h = int.from_bytes(blake2b(item.encode(), digest_size=8).digest(), "big")
        idx = h >> (64 - P)
        rest = (h << P) & ((1 << 64) - 1)
        rank = 64 - P + 1 if rest == 0 else (64 - rest.bit_length()) + 1
        if rank > self.reg[idx]:
            self.reg[idx] = rank

    def merge(self, other: HyperLogLog) -> None:
        r, o = self.reg, other.reg
        for i in range(M):
            if o[i] > r[i]:
                r[i] = o[i]

    def count(self) -> int:
        z = sum(2.0 ** -r for r in self.reg)
        est = ALPHA * M * M / z
        zeros = self.reg.count(0)
        if est <= 2.5 * M and zeros:
            est = M * math.log(M / zeros)
        return round(est)
