"""Cross-tenant discovery and newly observed domains.

*Cross-tenant* looks for clients asking for other tenants' names, two ways:

* queries the edge denied for tenant isolation. The marker is the event's ``rule``: the edge
  sets a rule id starting with ``isolation`` (e.g. ``isolation`` or ``isolation:payments``)
  when a client asks for another tenant's namespace name;
* the names themselves, for resolvers that give no verdicts (``dnsflow tap`` events carry
  decision ``allow`` and no rule) and audit-mode edges (``would_deny``): a query under the
  cluster domain for a service ``<svc>.<ns>.svc.<cd>``, an endpoint ``<ep>.<svc>.<ns>.svc``,
  an SRV name ``_<port>._<proto>.<svc>.<ns>.svc``, a pod ``<a-b-c-d>.<ns>.pod``, or a PTR
  answered with such a name, whose namespace belongs to another tenant -- whether the
  resolver answered it or said NXDOMAIN. Namespace -> tenant comes from the settings
  (``namespaces``, a ``tenant_map`` file) and, with ``learn``, from the events: every event
  of a cluster name tells the namespace and tenant of its asking client (pods' search paths
  go through their own namespace). A namespace two tenants were seen in is nobody's;
  ``shared`` namespaces and services (``kube-system``, ``default``, ``<svc>.<ns>``) are
  everybody's; an ``allow`` of an edge that applied policies (``policy_version`` > 0) is an
  export, not a probe (``trust_edge_allow``). Search-path expansions never count.

Why: a workload enumerating other tenants' services is reconnaissance even when every answer
was denied, and worse when it was answered. Incidents per (tenant, client); the score grows
with the number of distinct names probed. An event the edge denied for isolation is counted
once (by its rule), whatever its name. The learned map is per worker: with several workers
(tenants spread over partitions) a worker learns only its own tenants' namespaces, so give
the map in the settings there.

*New domain* looks at registered domains a tenant resolves successfully (NOERROR) for the
first time, after a ``warmup_s`` learning period per tenant. Why: first contact with a
domain (fresh C2, typosquat, newly registered phishing) is a useful low-severity signal;
names that do not resolve are left to the DGA and NXDOMAIN detectors. The domains of one
tenant and window make one record (when the window closes) listing the first
``max_per_window`` of them, with their total, so they do not drown the anomaly stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dnsflow.policies.api import TenantMapError, load_tenant_map
from dnsflow.streams.detectors.base import (
    FORM,
    LABEL,
    NS,
    REG,
    Detection,
    Detector,
    Part,
    WindowConfig,
)
from dnsflow.streams.domains import PTR, SEARCH
from dnsflow.streams.windows import to_us

if TYPE_CHECKING:
    from dnsflow.streams.detectors.base import DetectorContext, Key, NameEntry

SHARED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMES_KEPT = 200  # distinct names remembered per client and window
NAMESPACES_PER_TENANT = 10_000  # learned namespaces kept per tenant


class CrossTenantConfig(WindowConfig):
    min_count: int = Field(3, ge=1)
    rule_prefix: str = "isolation"
    namespaces: dict[str, str] = Field(
        default_factory=dict, description="namespace -> tenant (wins over what is learned)")
    tenant_map: str | None = Field(
        None, description="the edge's tenant map file: its namespace -> tenant too")
    learn: bool = Field(True, description="learn namespace -> tenant from the events")
    shared: list[str] = Field(
        default_factory=lambda: list(SHARED_NAMESPACES),
        description="namespaces (or <svc>.<ns>) every tenant may ask for")
    trust_edge_allow: bool = Field(
        True, description="an allow by an edge that applied policies is an export")


class NewDomainConfig(WindowConfig):
    warmup_s: float = Field(300, ge=0, description="learn a tenant's domains this long first")
    max_per_window: int = Field(20, ge=0, description="domains listed per record")
    max_known: int = Field(200_000, ge=100)


def _denied(v: Any) -> tuple[int, int, dict[str, str], int]:
    """A cross-tenant entry: (window, probes, {name: how}, of them denied by the edge); a
    3-tuple (before names counted) is all denied."""
    if len(v) == 3:
        w, count, names = v
        denied = count
    else:
        w, count, names, denied = v
    if type(names) is not dict:
        raise ValueError("cross_tenant names is not a map")
    return w, count, names, denied


def _namespaces(v: Any) -> dict[str, None]:
    if type(v) not in (list, tuple) or not all(type(x) is str for x in v):
        raise ValueError("cross_tenant namespaces is not a list of names")
    return dict.fromkeys(v)


class _Owners:
    """namespace -> tenant ("" when several tenants claim it): the settings, then what was
    learned. Derived from the detector's ``learned`` part (not state of its own)."""

    __slots__ = ("by_ns", "fixed")

    def __init__(self, fixed: dict[str, str]) -> None:
        self.fixed = fixed
        self.by_ns = dict(fixed)

    def add(self, tenant: str, ns: str) -> None:
        if ns in self.fixed:
            return
        cur = self.by_ns.get(ns)
        self.by_ns[ns] = tenant if cur is None or cur == tenant else ""

    def rebuild(self, learned: dict[str, dict[str, None]]) -> None:
        self.by_ns = dict(self.fixed)
        for tenant, nss in learned.items():
            for ns in nss:
                self.add(tenant, ns)


class CrossTenantDetector(Detector):
    kind = "cross_tenant"
    order = 50
    config = CrossTenantConfig
    on_deny = True
    cluster = True
    parts = (Part("state", load=_denied),
             Part("learned", per_tenant=True, dump=list, load=_namespaces))

    def __init__(self, cfg: CrossTenantConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.win = to_us(cfg.window_s)
        self.prefix = cfg.rule_prefix
        self.state: dict[tuple[str, str], tuple[int, int, dict[str, str], int]] = {}
        fixed: dict[str, str] = {}
        if cfg.tenant_map:
            try:
                fixed.update(load_tenant_map(cfg.tenant_map).namespace_tenants())
            except (TenantMapError, OSError) as exc:
                raise ValueError(f"streams.detectors.cross_tenant.tenant_map: {exc}") from None
        fixed.update(cfg.namespaces)
        self.owners = _Owners(fixed)
        self.learned: dict[str, dict[str, None]] = {}  # tenant -> its clients' namespaces
        self.learn = cfg.learn
        self.shared = frozenset(cfg.shared)
        self.trust = cfg.trust_edge_allow
        self.cluster_name = ctx.cluster_name
        ctx.namespace_owner = self.owner_of

    def owner_of(self, ns: str) -> str | None:
        return self.owners.by_ns.get(ns)

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """A denied query: counted when the edge's rule is an isolation rule."""
        rule = ev.get("rule") or ""
        if not rule.startswith(self.prefix):
            return
        self._count(ts, key, ev["qname"], rule, True)

    def observe_cluster(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """A name under the cluster domain (or a PTR): counted when its namespace belongs to
        another tenant, or an audit-mode edge would have denied it for isolation."""
        tenant = key[0]
        mine = ev["namespace"]
        if mine and self.learn:
            nss = self.learned.get(tenant)
            if nss is None or mine not in nss:
                self._learn(tenant, mine)
        ns, form = name[NS], name[FORM]
        if form == PTR:
            if ev["rcode"] != "NOERROR":
                return
            # the PTR target: a service's or pod's name, in the edge's answer text
            # ("PTR 10-0-1-10.shop.pod.cluster.local."; a bare name is taken too); the fast
            # decoder keeps answers for PTR events only (streams/event_decode.py)
            for answer in ev.get("answers") or ():
                kind, _, target = answer.rpartition(" ")
                if kind and kind.upper() != "PTR":
                    continue
                ns, label, form = self.cluster_name(target.lower().rstrip("."))
                if form != SEARCH:
                    break
            else:
                return
        else:
            label = name[LABEL]
        if form == SEARCH or ns == mine:
            return
        decision = ev["decision"]
        rule = ev.get("rule") or ""
        if rule.startswith(self.prefix):
            if decision == "deny":
                return  # the edge's isolation deny: counted once, by observe()
            if decision == "would_deny":  # audit mode: the edge says so, map or not
                self._count(ts, key, ev["qname"], f"audit:{ns}", False)
                return
        owner = self.owners.by_ns.get(ns)
        if not owner or owner == tenant or ns in self.shared or f"{label}.{ns}" in self.shared:
            return
        if decision == "allow" and self.trust and ev.get("policy_version"):
            return  # an edge enforcing isolation let it through: an export
        how = "denied" if decision == "deny" else ev["rcode"].lower()
        self._count(ts, key, ev["qname"], f"{how}:{ns}", False)

    def _learn(self, tenant: str, ns: str) -> None:
        nss = self.learned.get(tenant)
        if nss is None:
            nss = self.learned[tenant] = {}
        if len(nss) >= NAMESPACES_PER_TENANT:
            return
        nss[ns] = None
        self.owners.add(tenant, ns)

    def _count(self, ts: int, key: Key, qname: str, how: str, denied: bool) -> None:
        tenant, client = key
        w = ts // self.win
        st = self.state.get(key)
        if st is None or w > st[0]:
            st = (w, 0, {}, 0)
        count, names, n_denied = st[1] + 1, st[2], st[3] + denied
        if len(names) < NAMES_KEPT:
            names.setdefault(qname, how)
        self.state[key] = (st[0], count, names, n_denied)
        if count >= self.cfg.min_count and (count == self.cfg.min_count or
                                            count & (count - 1) == 0):
            targets = sorted({r.partition(":")[2] for r in names.values()} - {""})
            score = min(1.0, 0.55 + 0.05 * len(names))
            evidence: dict[str, Any] = {
                "window_s": self.cfg.window_s, "denied": n_denied,
                "distinct_names": len(names), "names": sorted(names)[:10],
                "targets": targets[:10]}
            if count > n_denied:  # found from the names (tap, audit mode, not enforced)
                hows = [r.partition(":")[0] for r in names.values()]
                evidence["probes"] = count
                evidence["answered_names"] = hows.count("noerror")
                evidence["audit_names"] = hows.count("audit")
            self.report(Detection(
                ts=ts, kind=self.kind, tenant=tenant, client_ip=client, score=score,
                key=(self.kind, tenant, client), evidence=evidence,
            ))

    def on_watermark(self, watermark: int) -> None:
        w = watermark // self.win
        for key in [k for k, st in self.state.items() if st[0] < w - 1]:
            del self.state[key]

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        self.owners.rebuild(self.learned)

    def forget(self, tenants: Any) -> None:
        super().forget(tenants)
        self.owners.rebuild(self.learned)


def _pending(v: Any) -> list[Any]:
    """A new-domain window: [window, count, [[domain, first name, client, score], ...]]."""
    w, count, listed = v
    if type(w) is not int or type(count) is not int or type(listed) is not list:
        raise ValueError("new_domain pending is not [window, count, [domains]]")
    for row in listed:
        if len(row) != 4:
            raise ValueError("new_domain pending domain is not [domain, name, client, score]")
    return [w, count, [list(r) for r in listed]]


class NewDomainDetector(Detector):
    kind = "new_domain"
    order = 60
    config = NewDomainConfig
    rcode = "NOERROR"  # names that do not resolve are left to the DGA and NXDOMAIN detectors
    parts = (Part("known", per_tenant=True, dump=list, load=dict.fromkeys),
             Part("first", per_tenant=True), Part("pending", per_tenant=True, load=_pending))

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
        # tenant -> [window, new domains, [[domain, first name, client, score], ...]]
        self.pending: dict[str, list[Any]] = {}
        self.unreported = 0  # new domains counted but not listed

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
        known[reg] = None
        if len(known) > self.cfg.max_known:
            del known[next(iter(known))]
        if ts - self.first[tenant] < self.warmup:
            return
        w = ts // self.win
        p = self.pending.get(tenant)
        if p is not None and w > p[0]:  # a late event joins the open record
            self._publish(tenant, p)
            p = None
        if p is None:
            p = self.pending[tenant] = [w, 0, []]
        p[1] += 1
        if len(p[2]) < self.cfg.max_per_window:
            p[2].append([reg, ev["qname"], key[1], round(self.label_score(name[LABEL]), 3)])
        else:
            self.unreported += 1

    def on_watermark(self, watermark: int) -> None:
        """Windows the watermark passed: one record per tenant."""
        last = watermark // self.win  # windows before this one are complete
        done = [t for t, p in self.pending.items() if p[0] < last]
        for tenant in done:
            self._publish(tenant, self.pending.pop(tenant))

    def _publish(self, tenant: str, p: list[Any]) -> None:
        w, count, listed = p
        clients = sorted({r[2] for r in listed})
        score = max((r[3] for r in listed), default=0.0)
        self.report(Detection(
            ts=(w + 1) * self.win, kind=self.kind, tenant=tenant,
            client_ip=clients[0] if len(clients) == 1 else "",
            domain=listed[0][0] if count == 1 and listed else "",
            score=max(0.3, min(0.75, score)), key=(self.kind, tenant, str(w)),
            evidence={"window_s": self.cfg.window_s, "learning_s": self.cfg.warmup_s,
                      "new_domains": count, "listed": len(listed),
                      "domains": [{"domain": r[0], "first_name": r[1], "client_ip": r[2],
                                   "char_score": r[3]} for r in listed],
                      "clients": clients[:20]},
        ))
