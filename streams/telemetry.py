"""Per-tenant telemetry in tumbling event-time windows.

Per event the work is a handful of dict increments on the current *pane* (the gcd of the
configured windows, 10 s by default); larger windows (1 min) merge closed panes, so the
per-event cost does not grow with the number of windows. Approximations, stated:

* latency percentiles come from a log histogram with 16 sub-buckets per power of two
  (relative error ≤ 3.2 %);
* distinct names are exact up to ``names_exact_cap`` per pane, then a HyperLogLog counts
  the overflow (standard error 1.6 % of the overflow); top names are exact counts among the
  names seen before the cap was reached;
* distinct clients are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heapify, heappop
from itertools import compress
from typing import Any

from dnsflow.streams.config import TelemetryConfig
from dnsflow.streams.sketch import STD_ERROR, HyperLogLog


def latency_code(lat: int) -> int:
    b = lat.bit_length()
    return lat if b <= 5 else ((b - 5) << 5) | (lat >> (b - 5))


def latency_value(code: int) -> int:
    """Mid-point of a histogram bucket."""
    shift, mant = code >> 5, code & 31
    if shift == 0:
        return mant
    return ((mant << shift) + ((mant + 1) << shift) - 1) // 2


class Pane:
    """Aggregates of one tenant over one pane (or a merged window)."""

    __slots__ = ("clients", "combos", "count", "hist", "late", "names", "overflow")

    def __init__(self) -> None:
        self.count = 0
        self.late = 0
        self.combos: dict[tuple[str, str, str, str], int] = {}
        self.hist: dict[int, int] = {}
        self.names: dict[str, int] = {}
        self.overflow: HyperLogLog | None = None
        self.clients: set[str] = set()

    def merge(self, other: Pane, cap: int) -> None:
        self.count += other.count
        self.late += other.late
        for src, dst in ((other.combos, self.combos), (other.hist, self.hist)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        names = self.names
        on = other.names
        if len(names) + len(on) <= cap:  # the union fits: no name can overflow
            common = names.keys() & on.keys()
            summed = {k: names[k] + on[k] for k in common}
            names.update(on)  # C-level for the names new here
            if summed:
                names.update(summed)
            on = {}
        for k, v in on.items():
            c = names.get(k)
            if c is not None:
                names[k] = c + v
            elif len(names) < cap:
                names[k] = v
            else:
                if self.overflow is None:
                    self.overflow = HyperLogLog()
                self.overflow.add(k)
        if other.overflow is not None:
            if self.overflow is None:
                self.overflow = HyperLogLog()
            self.overflow.merge(other.overflow)
        self.clients |= other.clients


def _percentiles(hist: dict[int, int], total: int) -> dict[str, int]:
    """p50/p95/p99 from one pass over the sorted histogram."""
    out = {"p50": 0, "p95": 0, "p99": 0}
    if not total:
        return out
    codes = sorted(hist)
    i, seen = 0, hist[codes[0]]
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        rank = q * total
        while seen < rank and i + 1 < len(codes):
            i += 1
            seen += hist[codes[i]]
        out[name] = latency_value(codes[i])
    return out


def top_names(names: dict[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` most queried names, ties by name.

    The n-th largest count is the cut: the fewer than ``n`` names above it are sorted, and
    the names at the cut are taken in name order — with C-level filters and a C heap, since
    most names of a window are seen once and sit at the cut.
    """
    if n <= 0 or not names:
        return []
    if len(names) <= n:
        return sorted(names.items(), key=_by_count_then_name)
    counts = sorted(names.values(), reverse=True)
    cut = counts[n - 1]
    n_above = counts.index(cut)
    above = ([(k, names[k]) for k in compress(names, map(cut.__lt__, names.values()))]
             if n_above else [])
    above.sort(key=_by_count_then_name)
    need = n - n_above
    if cut == counts[-1]:  # every name not above is at the cut: no second filter
        ties = list(names)
        skip = {k for k, _ in above}
    else:
        ties = list(compress(names, map(cut.__eq__, names.values())))
        skip = set()
    heapify(ties)
    picked: list[str] = []
    while len(picked) < need:
        k = heappop(ties)
        if k not in skip:
            picked.append(k)
    return above + [(k, cut) for k in picked]


def _by_count_then_name(kv: tuple[str, int]) -> tuple[int, str]:
    return -kv[1], kv[0]


def render(tenant: str, start: int, size: int, p: Pane, top_n: int) -> dict[str, Any]:
    """The telemetry record published for one tenant and window."""
    rcode: dict[str, int] = {}
    qtype: dict[str, int] = {}
    decision: dict[str, int] = {}
    cache: dict[str, int] = {}
    for (rc, qt, de, ca), n in p.combos.items():
        rcode[rc] = rcode.get(rc, 0) + n
        qtype[qt] = qtype.get(qt, 0) + n
        decision[de] = decision.get(de, 0) + n
        cache[ca] = cache.get(ca, 0) + n
    lookups = cache.get("hit", 0) + cache.get("miss", 0) + cache.get("stale", 0)
    overflow = p.overflow.count() if p.overflow is not None else 0
    top = top_names(p.names, top_n)
    return {
        "v": 1,
        "ts": start + size,
        "tenant": tenant,
        "window_start": start,
        "window_end": start + size,
        "window_s": size // 1_000_000 if size % 1_000_000 == 0 else size / 1_000_000,
        "queries": p.count,
        "rcode": dict(sorted(rcode.items())),
        "qtype": dict(sorted(qtype.items())),
        "decision": dict(sorted(decision.items())),
        "cache": dict(sorted(cache.items())),
        "cache_hit_ratio": round((cache.get("hit", 0) + cache.get("stale", 0)) / lookups, 4)
        if lookups else 0.0,
        "latency_us": _percentiles(p.hist, p.count),
        "distinct_clients": len(p.clients),
        "distinct_names": len(p.names) + overflow,
        "distinct_names_error": round(STD_ERROR * overflow / max(1, len(p.names) + overflow), 4),
        "top_names": [[n, c] for n, c in top],
        "late_events": p.late,
    }


class Telemetry:
    """Pane-based tumbling windows; ``close(watermark)`` emits every window that ended."""

    def __init__(self, cfg: TelemetryConfig, windows_us: list[int], pane_us: int,
                 emit: Callable[[str, str, dict[str, Any]], None]) -> None:
        self.cfg = cfg
        self.windows = sorted(windows_us)
        self.pane = pane_us
        self.emit = emit
        self.cap = cfg.names_exact_cap
        self.panes: dict[int, dict[str, Pane]] = {}
        self.merged: dict[int, dict[int, dict[str, Pane]]] = {w: {} for w in self.windows}

    def add(self, ps: int, key: tuple[str, str], ev: dict[str, Any], late: bool) -> None:
        """Count event ``ev`` of ``key`` = (tenant, client), as the logic already holds it,
        in pane ``ps`` (``late``: the pane is not the newest)."""
        tenant, client = key
        tenants = self.panes.get(ps)
        if tenants is None:
            tenants = self.panes[ps] = {}
        p = tenants.get(tenant)
        if p is None:
            p = tenants[tenant] = Pane()
        p.count += 1
        if late:
            p.late += 1
        combos = p.combos
        k = (ev["rcode"], ev["qtype"], ev["decision"], ev["cache"])
        combos[k] = combos.get(k, 0) + 1
        latency: int = ev["latency_us"]
        b = latency.bit_length()
        code = latency if b <= 5 else ((b - 5) << 5) | (latency >> (b - 5))
        hist = p.hist
        hist[code] = hist.get(code, 0) + 1
        names = p.names
        qname: str = ev["qname"]
        c = names.get(qname)
        if c is not None:
            names[qname] = c + 1
        elif len(names) < self.cap:
            names[qname] = 1
        else:
            if p.overflow is None:
                p.overflow = HyperLogLog()
            p.overflow.add(qname)
        p.clients.add(client)

    def close(self, watermark: int) -> None:
        """Close panes that ended at or before ``watermark``; emit finished windows."""
        pane = self.pane
        for ps in sorted(k for k in self.panes if k + pane <= watermark):
            tenants = self.panes.pop(ps)
            for w in self.windows:
                if w == pane:
                    for tenant in sorted(tenants):
                        self.emit("telemetry", tenant, render(tenant, ps, w, tenants[tenant],
                                                              self.cfg.top_names))
                    continue
                ws = ps - ps % w
                acc = self.merged[w].setdefault(ws, {})
                for tenant, p in tenants.items():
                    into = acc.get(tenant)
                    if into is None:
                        acc[tenant] = p if len(self.windows) == 1 else _copy(p, self.cap)
                    else:
                        into.merge(p, self.cap)
        for w in self.windows:
            if w == pane:
                continue
            merged = self.merged[w]
            for ws in sorted(k for k in merged if k + w <= watermark):
                tenants = merged.pop(ws)
                for tenant in sorted(tenants):
                    self.emit("telemetry", tenant,
                              render(tenant, ws, w, tenants[tenant], self.cfg.top_names))

    def open_panes(self) -> int:
        return len(self.panes)


def _copy(p: Pane, cap: int) -> Pane:
    q = Pane()
    q.merge(p, cap)
    return q
