"""Cross-tenant discovery and newly observed domains.

*Cross-tenant* looks at queries the edge denied for tenant isolation. The marker is the
event's ``rule``: the edge sets a rule id starting with ``isolation`` (e.g.
``isolation`` or ``isolation:payments``) when a client asks for another tenant's namespace
name. Why: a workload enumerating other tenants' services is reconnaissance even when every
answer was denied. Incidents per (tenant, client); the score grows with the number of
distinct names probed.

*New domain* looks at registered domains a tenant resolves successfully (NOERROR) for the
first time, after a ``warmup_s`` learning period per tenant. Why: first contact with a
domain (fresh C2, typosquat, newly registered phishing) is a useful low-severity signal;
names that do not resolve are left to the DGA and NXDOMAIN detectors. At most
``max_per_window`` per tenant per window are published; the rest are counted.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.config import CrossTenantConfig, NewDomainConfig
from streams.incidents import Detection
from streams.windows import to_us


class CrossTenantDetector:
    kind = "cross_tenant"

    def __init__(self, cfg: CrossTenantConfig, report: Callable[[Detection], None]) -> None:
        self.cfg = cfg
        self.report = report
        self.win = to_us(cfg.window_s)
        self.state: dict[tuple[str, str], tuple[int, int, dict[str, str]]] = {}

    def observe(self, ts: int, tenant: str, client: str, qname: str, rule: str) -> None:
        key = (tenant, client)
        w = ts // self.win
        st = self.state.get(key)
        if st is None or w > st[0]:
            st = (w, 0, {})
        count, names = st[1] + 1, st[2]
        if len(names) < 200:
            names.setdefault(qname, rule)
        self.state[key] = (st[0], count, names)
        if count >= self.cfg.min_count and (count == self.cfg.min_count or
                                            count & (count - 1) == 0):
            targets = sorted({r.partition(":")[2] for r in names.values()} - {""})
            score = min(1.0, 0.55 + 0.05 * len(names))
            self.report(Detection(
                ts=ts, kind=self.kind, tenant=tenant, client_ip=client, score=score,
                key=(self.kind, tenant, client),
                evidence={"window_s": self.cfg.window_s, "denied": count,
                          "distinct_names": len(names), "names": sorted(names)[:10],
                          "targets": targets[:10]},
            ))

    def prune(self, watermark: int) -> None:
        w = watermark // self.win
        for key in [k for k, st in self.state.items() if st[0] < w - 1]:
            del self.state[key]


class NewDomainDetector:
    kind = "new_domain"

    def __init__(self, cfg: NewDomainConfig, report: Callable[[Detection], None],
                 label_score: Callable[[str], float] = lambda label: 0.0) -> None:
        self.cfg = cfg
        self.label_score = label_score
        self.report = report
        self.warmup = to_us(cfg.warmup_s)
        self.win = to_us(cfg.window_s)
        self.known: dict[str, dict[str, None]] = {}
        self.first: dict[str, int] = {}
        self.budget: dict[str, tuple[int, int]] = {}
        self.unreported = 0

    def observe(self, ts: int, tenant: str, client: str, reg: str, qname: str,
                label: str) -> None:
        known = self.known.get(tenant)
        if known is None:
            known = self.known[tenant] = {}
            self.first[tenant] = ts
        if reg in known:
            return
        known[reg] = None
        if len(known) > self.cfg.max_known:
            del known[next(iter(known))]
        if ts - self.first[tenant] < self.warmup:
            return
        w = ts // self.win
        bw, used = self.budget.get(tenant, (w, 0))
        if bw != w:
            used = 0
        if used >= self.cfg.max_per_window:
            self.unreported += 1
            return
        self.budget[tenant] = (w, used + 1)
        dga_score = self.label_score(label)
        self.report(Detection(
            ts=ts, kind=self.kind, tenant=tenant, client_ip=client, domain=reg,
            score=max(0.3, min(0.75, dga_score)), key=(self.kind, tenant, reg),
            evidence={"first_name": qname, "learning_s": self.cfg.warmup_s,
                      "char_score": round(dga_score, 3)},
        ))
