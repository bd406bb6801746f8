"""Pane-driven detectors: NXDOMAIN bursts and rate spikes, from per-pane client counts.

The stream logic counts ``[queries, nxdomain]`` per (tenant, client) per pane — one dict
increment per event — and hands each closed pane here, so these detectors cost nothing per
event.

*NXDOMAIN burst* looks at NXDOMAIN answers for names with a public suffix over the last
``window_s`` per client and per tenant (count and ratio). Why: misconfiguration, random
subdomain (water-torture) attacks and malware all show as a wall of NXDOMAIN. Names under the
cluster domain count apart, per name: the same service, endpoint, SRV or pod name
(``<svc>.<ns>.svc.<cd>``) NXDOMAIN ``internal_client_min`` times in a window from one client,
or ``internal_tenant_min`` times from a tenant's clients together, is a burst (a deleted
service hammered by a job). Search-path expansions (``api.stripe.com.<ns>.svc.<cd>``,
``x.svc.<cd>``, ``x.<cd>``) are NXDOMAIN by design and never count; ``<a>.<b>.svc.<cd>``
whose ``<a>.<b>`` is also a public name (``stripe.com.svc.<cd>``) counts only when namespace
``<b>`` is known (``ctx.namespace_owner``, the cross-tenant detector's map). A short name's
first expansion (``db.<ns>.svc.<cd>`` for ``db``) looks like a service name, which is why the
minimum is high (10/s from one client by default): a pod's ordinary short-name lookups stay
far below it, a job retrying a deleted service in a loop does not.

*Rate spike* keeps an EWMA mean and variance of queries per pane for every client and every
tenant (the learned baseline) and flags a pane above ``mean + k·sigma`` and ``factor x mean``
and an absolute minimum, after ``warmup_panes``. Why: a compromised or looping workload
shows as a sudden jump against its own history, whatever its normal volume.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field

from dnsflow.streams.detectors.base import (
    FORM,
    LABEL,
    NS,
    Detection,
    Detector,
    DetectorConfig,
    Part,
    WindowConfig,
)
from dnsflow.streams.domains import PTR, PUBLIC, SEARCH
from dnsflow.streams.windows import to_us

if TYPE_CHECKING:
    from dnsflow.streams.detectors.base import DetectorContext, Key, NameEntry, PaneCounts


class NxBurstConfig(WindowConfig):
    client_min: int = Field(30, ge=1)
    client_ratio: float = Field(0.5, ge=0, le=1)
    tenant_min: int = Field(300, ge=1)
    tenant_ratio: float = Field(0.3, ge=0, le=1)
    internal_client_min: int = Field(
        600, ge=1, description="NXDOMAIN of one cluster name from one client per window")
    internal_tenant_min: int = Field(
        1000, ge=1, description="NXDOMAIN of one cluster name from a tenant per window")


class RateConfig(DetectorConfig):
    pane_s: float = Field(10, gt=0)
    alpha: float = Field(0.1, gt=0, le=1, description="EWMA weight of the newest pane")
    k_sigma: float = Field(6.0, gt=0)
    factor: float = Field(3.0, ge=1, description="also require count >= factor * baseline")
    warmup_panes: int = Field(6, ge=1)
    client_min: int = Field(200, ge=1)
    tenant_min: int = Field(1000, ge=1)


def _panes(h: list[list[int]]) -> list[tuple[int, ...]]:
    return [tuple(x) for x in h]


def _window_count(v: Any) -> tuple[int, int]:
    w, n = v
    if type(w) is not int or type(n) is not int:
        raise ValueError("nxdomain_burst internal count is not [window, count]")
    return w, n


class NxBurstDetector(Detector):
    kind = "nxdomain_burst"
    order = 30
    config = NxBurstConfig
    cluster = True
    rcode = "NXDOMAIN"  # of the cluster names (observe_cluster)
    # (tenant, client or "") -> [(pane, n, nx)]; (tenant, client or "", name) -> (window, nx)
    parts = (Part("hist", load=_panes), Part("internal", load=_window_count))

    def __init__(self, cfg: NxBurstConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.span = max(1, round(to_us(cfg.window_s) / self.pane))  # panes in a window
        self.hist: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
        self.win = to_us(cfg.window_s)
        self.internal: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.namespace_owner = ctx.namespace_owner

    def bind(self, ctx: DetectorContext) -> None:
        self.namespace_owner = ctx.namespace_owner

    def observe_cluster(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """An NXDOMAIN of a name under the cluster domain (``rcode``), per name."""
        form = name[FORM]
        if form in (SEARCH, PTR):
            return
        if form == PUBLIC and self.namespace_owner(name[NS]) is None:
            return  # stripe.com.svc.<cd>: a search expansion unless namespace "com" exists
        w = ts // self.win
        tenant, client = key
        qname = ev["qname"]
        self._bump(ts, w, (tenant, client, qname), self.cfg.internal_client_min, name)
        self._bump(ts, w, (tenant, "", qname), self.cfg.internal_tenant_min, name)

    def _bump(self, ts: int, w: int, k: tuple[str, str, str], minimum: int,
              name: NameEntry) -> None:
        st = self.internal.get(k)
        n = 1 if st is None or w > st[0] else st[1] + 1
        self.internal[k] = (w if st is None else max(w, st[0]), n)
        if n >= minimum and (n == minimum or n & (n - 1) == 0):
            tenant, client, qname = k
            self.report(Detection(
                ts=ts, kind=self.kind, tenant=tenant, client_ip=client,
                score=min(0.9, 0.5 + 0.1 * math.log2(n / minimum)),
                key=(self.kind, tenant, client, qname),
                evidence={"window_s": self.cfg.window_s, "nxdomain": n, "name": qname,
                          "namespace": name[NS], "service": name[LABEL],
                          "form": name[FORM], "internal": True,
                          "scope": "client" if client else "tenant"},
            ))

    def on_watermark(self, watermark: int) -> None:
        w = watermark // self.win
        internal = self.internal
        if internal:
            for k in [k for k, st in internal.items() if st[0] < w - 1]:
                del internal[k]

    def on_pane(self, ps: int, counts: PaneCounts) -> None:
        tenants: dict[str, list[int]] = {}
        oldest = ps - (self.span - 1) * self.pane
        hist = self.hist
        cmin, cratio = self.cfg.client_min, self.cfg.client_ratio
        for key, (n, nx) in counts.items():
            t = tenants.get(key[0])
            if t is None:
                t = tenants[key[0]] = [0, 0]
            t[0] += n
            t[1] += nx
            h = hist.get(key)
            if h is None:
                h = hist[key] = []
            h.append((ps, n, nx))
            while h[0][0] < oldest:
                del h[0]
            if nx:
                self._check(ps, key, h, cmin, cratio)
        for tenant, (n, nx) in sorted(tenants.items()):
            self._push_tenant(ps, tenant, n, nx, oldest)
        for key in [k for k, h in hist.items() if h[-1][0] < oldest]:
            del hist[key]

    def _push_tenant(self, ps: int, tenant: str, n: int, nx: int, oldest: int) -> None:
        key = (tenant, "")
        h = self.hist.get(key)
        if h is None:
            h = self.hist[key] = []
        h.append((ps, n, nx))
        while h[0][0] < oldest:
            del h[0]
        if nx:
            self._check(ps, key, h, self.cfg.tenant_min, self.cfg.tenant_ratio)

    def _check(self, ps: int, key: tuple[str, str], h: list[tuple[int, int, int]],
               minimum: int, ratio: float) -> None:
        total = sum(x[1] for x in h)
        nxs = sum(x[2] for x in h)
        r = nxs / total if total else 0.0
        if nxs < minimum or r < ratio:
            return
        score = min(1.0, 0.5 * min(1.0, nxs / (4 * minimum)) + 0.5 * r)
        self.report(Detection(
            ts=ps + self.pane, kind=self.kind, tenant=key[0], client_ip=key[1], score=score,
            key=(self.kind, key[0], key[1]),
            evidence={"window_s": self.cfg.window_s, "nxdomain": nxs, "queries": total,
                      "ratio": round(r, 3), "scope": "client" if key[1] else "tenant"},
        ))


class _Baseline:
    __slots__ = ("last", "mean", "panes", "var")

    def __init__(self, ps: int) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.panes = 0
        self.last = ps


class RateSpikeDetector(Detector):
    kind = "rate_spike"
    order = 40
    config = RateConfig
    parts = (Part("base", _Baseline), Part("started", per_tenant=True))

    def __init__(self, cfg: RateConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.base: dict[tuple[str, str], _Baseline] = {}
        self.started: dict[str, int] = {}
        self._panes_seen = 0

    @classmethod
    def pane_seconds(cls, cfg: RateConfig) -> tuple[float, ...]:
        return (cfg.pane_s,)

    def on_pane(self, ps: int, counts: PaneCounts) -> None:
        tenants: dict[str, int] = {}
        cfg = self.cfg
        base, pane = self.base, self.pane
        alpha, keep = cfg.alpha, 1 - cfg.alpha
        warm, cmin = cfg.warmup_panes, cfg.client_min
        for key, (n, _) in counts.items():
            tenants[key[0]] = tenants.get(key[0], 0) + n
            b = base.get(key)
            if (b is not None and b.last == ps - pane
                    and (b.panes < warm or n < cmin or n <= b.mean)):
                # the common case, as _update does it: seen last pane, nothing to flag
                diff = n - b.mean
                b.mean += alpha * diff
                b.var = keep * (b.var + alpha * diff * diff)
                b.panes += 1
                b.last = ps
                continue
            self._update(ps, key, n, cmin)
        for tenant, n in sorted(tenants.items()):
            self._update(ps, (tenant, ""), n, cfg.tenant_min)
        self._panes_seen += 1
        if self._panes_seen % 360 == 0:  # forget clients idle for a day (bounded memory)
            horizon = ps - 86_400 * 1_000_000
            for key in [k for k, b in self.base.items() if b.last < horizon]:
                del self.base[key]

    def _update(self, ps: int, key: tuple[str, str], n: int, minimum: int) -> None:
        cfg = self.cfg
        b = self.base.get(key)
        if b is None:
            b = self.base[key] = _Baseline(ps - self.pane)
            # First sight: earlier panes of this tenant count as zeros once warm.
            first = self.started.setdefault(key[0], ps)
            b.panes = int((ps - first) // self.pane)
        gap = (ps - b.last) // self.pane - 1  # whole panes (integer microseconds)
        if gap > 0:  # idle panes were zero: decay the baseline
            decay = (1 - cfg.alpha) ** gap
            b.mean *= decay
            b.var *= decay
            b.panes += gap
        if (b.panes >= cfg.warmup_panes and n >= minimum
                and n > b.mean + cfg.k_sigma * (sigma := math.sqrt(b.var))
                and n >= cfg.factor * b.mean):
            excess = (n - b.mean) / (cfg.k_sigma * sigma + 1.0)
            score = min(1.0, 0.5 + 0.1 * excess)
            self.report(Detection(
                ts=ps + self.pane, kind=self.kind, tenant=key[0], client_ip=key[1],
                score=score, key=(self.kind, key[0], key[1]),
                evidence={"pane_s": cfg.pane_s, "queries": n,
                          "baseline_mean": round(b.mean, 1), "baseline_std": round(sigma, 1),
                          "scope": "client" if key[1] else "tenant"},
            ))
        diff = n - b.mean
        b.mean += cfg.alpha * diff
        b.var = (1 - cfg.alpha) * (b.var + cfg.alpha * diff * diff)
        b.panes += 1
        b.last = ps
