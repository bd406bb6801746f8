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

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dnsflow.streams.detectors.base import LABEL, REG, Detection, Detector, Part, WindowConfig
from dnsflow.streams.windows import to_us

if TYPE_CHECKING:
    from dnsflow.streams.detectors.base import DetectorContext, Key, NameEntry


class CrossTenantConfig(WindowConfig):
    min_count: int = Field(3, ge=1)
    rule_prefix: str = "isolation"


class NewDomainConfig(WindowConfig):
    warmup_s: float = Field(300, ge=0, description="learn a tenant's domains this long first")
    max_per_window: int = Field(20, ge=0)
    max_known: int = Field(200_000, ge=100)


def _denied(v: Any) -> tuple[int, int, dict[str, str]]:
    """A cross-tenant entry: (window, denied count, {name: rule})."""
    w, count, names = v
    if type(names) is not dict:
        raise ValueError("cross_tenant names is not a map")
    return w, count, names


def _budget(v: Any) -> tuple[int, int]:
    return tuple(v)  # type: ignore[return-value]


class CrossTenantDetector(Detector):
    kind = "cross_tenant"
    order = 50
    config = CrossTenantConfig
    on_deny = True
    parts = (Part("state", load=_denied),)

    def __init__(self, cfg: CrossTenantConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.win = to_us(cfg.window_s)
        self.prefix = cfg.rule_prefix
        self.state: dict[tuple[str, str], tuple[int, int, dict[str, str]]] = {}

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """A denied query: counted when the edge's rule is an isolation rule."""
        rule = ev.get("rule") or ""
        if not rule.startswith(self.prefix):
            return
        tenant, client = key
        qname = ev["qname"]
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

    def on_watermark(self, watermark: int) -> None:
        w = watermark // self.win
        for key in [k for k, st in self.state.items() if st[0] < w - 1]:
            del self.state[key]


class NewDomainDetector(Detector):
    kind = "new_domain"
    order = 60
    config = NewDomainConfig
    rcode = "NOERROR"  # names that do not resolve are left to the DGA and NXDOMAIN detectors
    parts = (Part("known", per_tenant=True, dump=list, load=dict.fromkeys),
             Part("first", per_tenant=True), Part("budget", per_tenant=True, load=_budget))

    def __init__(self, cfg: NewDomainConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.label_score = ctx.label_score
        self.names = 0  # every name with a public suffix (NOERROR answers count)
        ctx.known = self.is_known  # the DGA detector skips domains the tenant resolved
        self.warmup = to_us(cfg.warmup_s)
        self.win = to_us(cfg.window_s)
        self.known: dict[str, dict[str, None]] = {}
        self.seen = self.known  # no call at all for domains the tenant resolved before
        self.first: dict[str, int] = {}
        self.budget: dict[str, tuple[int, int]] = {}
        self.unreported = 0

    def bind(self, ctx: DetectorContext) -> None:
        self.label_score = ctx.label_score

    def is_known(self, tenant: str, reg: str) -> bool:
        known = self.known.get(tenant)
        return known is not None and reg in known

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """A NOERROR answer for a name with a public suffix (``rcode``): a registered domain
        the tenant never resolved before counts."""
        tenant = key[0]
        reg = name[REG]
        known = self.known.get(tenant)
        if known is None:
            known = self.known[tenant] = {}
            self.first[tenant] = ts
        elif reg in known:
            return
        client = key[1]
        qname = ev["qname"]
        label = name[LABEL]
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
