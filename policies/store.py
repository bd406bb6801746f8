"""The edge's cache of compiled policies, fed from the compacted policies topic.

Evaluation order for one query (README.md, "Precedence"):
  1. tenant isolation (another tenant's ``<ns>.svc``/``<ns>.pod`` names, unless exported)
  2. ClusterDNSPolicy rules of tier ``guardrail``
  3. auto-denies of the client's tenant (streams' automatic response)
  4. the tenant's DNSPolicy rules
  5. ClusterDNSPolicy rules of tier ``baseline``
  6. default: allow
Within 2, 4 and 5 the first matching rule in precedence order wins. Steps 2, 4 and 5 are
compiled into one matcher per tenant, so a query costs one suffix walk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from pydantic import ValidationError

from dnsflow.gctune import gc_paused
from dnsflow.policies.autodeny import parse_denies
from dnsflow.policies.compiler import compile_policies, merge_view, rewrite_records
from dnsflow.policies.egress import CompiledEgress, EgressGrant, EgressIndex, compile_egress
from dnsflow.policies.loader import problems_from
from dnsflow.policies.matcher import CompiledRule, Matcher
from dnsflow.policies.model import ClusterDNSPolicy, DNSPolicy
from dnsflow.policies.records import (
    AUTO_PREFIX,
    GLOBAL,
    KIND_AUTO,
    KIND_CLUSTER,
    decode,
)
from dnsflow.policies.types import ClientInfo, CompiledView, PolicyRecordError, Verdict

# The rule of an isolation verdict (in events and explain): the same for every namespace.
ISOLATION_RULE = "isolation"
GC_PAUSE_BYTES = 64 * 1024


@dataclass(slots=True)
class _NsInfo:
    owner: str
    mode: str = "tenant"
    exports: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Tenant:
    """Everything in force for one tenant, replaced as a whole on change (atomic swap)."""

    version: int
    matcher: Matcher
    response: Matcher | None
    default: Verdict
    view: CompiledView
    auto: dict[str, tuple[int, Verdict]] | None = None
    isolation_verdicts: dict[str, Verdict] = field(default_factory=dict)
    egress: EgressIndex | None = None  # None: no egress rule for this tenant


def _normalize(qname: str) -> str:
    name = qname.lower()
    return name[:-1] if name.endswith(".") else name


class PolicyStore:
    """One writer, many readers: every change builds new objects and swaps them in with a
    single assignment, so ``apply_record`` may run in a worker thread (big policies take
    seconds to compile) while ``decide`` keeps answering from the previous version."""

    def __init__(self, cluster_domain: str = "cluster.local") -> None:
        self.cluster_domain = _normalize(cluster_domain)
        self._svc_zone = ".svc." + self.cluster_domain
        self._pod_zone = ".pod." + self.cluster_domain
        self._zones = (self._svc_zone, self._pod_zone)
        self._records: dict[str, dict[str, Any]] = {}
        self._policies: dict[str, list[DNSPolicy]] = {}
        self._cluster: list[ClusterDNSPolicy] = []
        self._cluster_version = 0
        self._auto: dict[str, tuple[int, dict[str, tuple[int, Verdict]]]] = {}
        self._ns_map: dict[str, str] = {}
        self._iso: dict[str, _NsInfo] = {}
        self._tenants: dict[str, _Tenant] = {}
        # any egress rule at all: the edge keeps its egress hook None (one check) otherwise
        self.has_egress = False

    # ------------------------------------------------------------------ records
    def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record from the policies topic; True if what is in force changed."""
        if value is None:
            if key is None:
                raise PolicyRecordError("policy record: tombstone without a key")
            return self._remove(key.decode("utf-8", "replace"))
        # Compiling a big policy allocates hundreds of thousands of objects, none of them
        # garbage: the cyclic GC would rescan them over and over (half the compile time).
        with gc_paused() if len(value) > GC_PAUSE_BYTES else contextlib.nullcontext():
            doc = decode(key, value)
            k = (AUTO_PREFIX + doc["tenant"]) if doc["kind"] == KIND_AUTO else doc["tenant"]
            current = self._records.get(k)
            if current is not None and doc["version"] <= current["version"]:
                return False
            if doc["kind"] == KIND_AUTO:
                self._set_auto(doc)
            elif doc["kind"] == KIND_CLUSTER:
                self._set_cluster(doc)
            else:
                self._set_tenant(doc)
            self._records[k] = doc
            return True

    def _parse(self, doc: dict[str, Any], model: type[DNSPolicy] | type[ClusterDNSPolicy]
               ) -> list[Any]:
        out = []
        for i, raw in enumerate(doc["policies"]):
            try:
                p = model.model_validate(raw)
            except ValidationError as exc:
                first = problems_from(exc, f"record {doc['tenant']!r} v{doc['version']}", i)
                raise PolicyRecordError("; ".join(str(x) for x in first[:3])) from None
            if isinstance(p, DNSPolicy) and p.tenant != doc["tenant"]:
                raise PolicyRecordError(f"record {doc['tenant']!r} v{doc['version']}: policy "
                                        f"{p.ref} belongs to tenant {p.tenant!r}")
            out.append(p)
        return out

    def _set_tenant(self, doc: dict[str, Any]) -> None:
        tenant = doc["tenant"]
        policies = self._parse(doc, DNSPolicy)
        state = self._build(tenant, policies, doc["version"])  # may raise: nothing changed yet
        self._policies[tenant] = policies
        self._tenants[tenant] = state
        self._reindex_isolation()
        self._reindex_egress()

    def _set_cluster(self, doc: dict[str, Any]) -> None:
        policies = self._parse(doc, ClusterDNSPolicy)
        old = (self._cluster, self._cluster_version)
        self._cluster, self._cluster_version = policies, doc["version"]
        try:
            rebuilt = {t: self._build(t, self._policies.get(t, []), self._version_of(t))
                       for t in self._policies}
        except Exception:
            self._cluster, self._cluster_version = old
            raise
        self._tenants = rebuilt  # tenants without a record are rebuilt lazily
        self._reindex_isolation()  # a cluster policy may set the default isolation
        self._reindex_egress()

    def _set_auto(self, doc: dict[str, Any]) -> None:
        tenant = doc["tenant"]
        version = doc["version"]
        table: dict[str, tuple[int, Verdict]] = {}
        for d in parse_denies(tenant, doc["denies"]):
            v = Verdict("deny", f"auto:{d.kind}:{d.domain}", version, deny_mode="NXDOMAIN",
                        log=True)
            prev = table.get(d.domain)
            if prev is None or prev[0] < d.expires_at_us:
                table[d.domain] = (d.expires_at_us, v)
        self._auto[tenant] = (version, table)
        st = self._tenants.get(tenant)
        if st is not None:
            st.auto = table or None

    def _remove(self, key: str) -> bool:
        if key not in self._records:
            return False
        del self._records[key]
        if key.startswith(AUTO_PREFIX):
            tenant = key[len(AUTO_PREFIX):]
            self._auto.pop(tenant, None)
            st = self._tenants.get(tenant)
            if st is not None:
                st.auto = None
        elif key == GLOBAL:
            self._cluster, self._cluster_version = [], 0
            self._tenants = {t: self._build(t, p, self._version_of(t))
                             for t, p in self._policies.items()}
        else:
            self._policies.pop(key, None)
            self._tenants.pop(key, None)
            self._reindex_isolation()
        self._reindex_egress()
        return True

    def _version_of(self, tenant: str) -> int:
        rec = self._records.get(tenant)
        return int(rec["version"]) if rec else 0

    # ------------------------------------------------------------------ compile
    def _build(self, tenant: str, policies: list[DNSPolicy], version: int) -> _Tenant:
        cluster = [p for p in self._cluster
                   if not p.spec.clients.tenants or tenant in p.spec.clients.tenants]
        guard = [p for p in cluster if p.spec.tier == "guardrail"]
        base = [p for p in cluster if p.spec.tier == "baseline"]
        g = compile_policies(guard, self._cluster_version, 0, guardrail=True)
        n = len(g.query) + len(g.response)
        t = compile_policies(policies, version, n)
        n += len(t.query) + len(t.response)
        b = compile_policies(base, self._cluster_version, n)
        query = g.query + t.query + b.query
        response = g.response + t.response + b.response
        auto = self._auto.get(tenant)
        egress = compile_egress(guard, self._cluster_version, tenant)
        egress += compile_egress(policies, version, tenant, len(egress))
        egress += compile_egress(base, self._cluster_version, tenant, len(egress))
        return _Tenant(
            version=version,
            matcher=Matcher(query),
            response=Matcher(response) if response else None,
            default=Verdict("allow", "", version),
            view=merge_view(tenant, policies, self.cluster_domain),
            auto=(auto[1] or None) if auto else None,
            egress=EgressIndex(egress) if egress else None,
        )

    def _state(self, tenant: str) -> _Tenant:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._build(tenant, [], 0)
            self._tenants[tenant] = st
        return st

    def _reindex_egress(self) -> None:
        self.has_egress = any(p.spec.egress for p in self._cluster) or any(
            p.spec.egress for ps in self._policies.values() for p in ps)

    def egress(self, client: ClientInfo, name: str, mode: str | None = None
               ) -> EgressGrant | None:
        """What an answer for ``name`` (canonical) allows ``client`` to connect to: the
        ports and mode of the egress rules selecting both, or None (``mode``: the client's
        :meth:`egress_mode`, when the caller has it)."""
        idx = self._state(client.tenant).egress
        return None if idx is None else idx.match(client, name, mode)

    def egress_rules(self, tenant: str) -> tuple[CompiledEgress, ...]:
        """The tenant's compiled egress rules (cluster ones included) in precedence order:
        what ``explain --connect`` and ``egress-export`` walk."""
        idx = self._state(tenant).egress
        return () if idx is None else idx.rules

    def egress_mode(self, client: ClientInfo) -> str | None:
        """``enforce`` / ``audit`` when an egress rule selects the client, else None."""
        idx = self._state(client.tenant).egress
        return None if idx is None else idx.mode(client)

    def _reindex_isolation(self) -> None:
        claims: dict[str, set[str]] = {}
        for tenant, policies in self._policies.items():
            for p in policies:
                claims.setdefault(str(p.metadata.namespace), set()).add(tenant)
        default = next((p.spec.isolation for p in sorted(self._cluster,
                                                          key=lambda p: p.spec.priority)
                        if p.spec.isolation is not None), "tenant")
        iso: dict[str, _NsInfo] = {}
        for ns, tenants in claims.items():
            if ns not in self._ns_map and len(tenants) == 1:
                iso[ns] = _NsInfo(next(iter(tenants)), default)
        for ns, tenant in self._ns_map.items():
            iso[ns] = _NsInfo(tenant, default)
        for ns, info in iso.items():
            for p in self._policies.get(info.owner, []):
                if p.metadata.namespace != ns:
                    continue
                if p.spec.isolation is not None:
                    info.mode = p.spec.isolation
                for e in p.spec.exports:
                    info.exports[e.service] = info.exports.get(e.service, frozenset()) | \
                        frozenset(e.to)
        self._iso = iso
        for st in list(self._tenants.values()):  # readers may add tenants meanwhile
            st.isolation_verdicts = {}

    def set_namespace_tenants(self, mapping: Mapping[str, str]) -> None:
        """namespace -> tenant (Kubernetes watch or static map); drives isolation."""
        self._ns_map = dict(mapping)
        self._reindex_isolation()

    # ------------------------------------------------------------------ queries
    def _hidden_namespace(self, client: ClientInfo, name: str) -> str | None:
        """The other tenant's namespace ``name`` belongs to, if the client must not see it."""
        if name.endswith(self._svc_zone):
            prefix = name[: -len(self._svc_zone)]
            svc = True
        elif name.endswith(self._pod_zone):
            prefix = name[: -len(self._pod_zone)]
            svc = False
        else:
            return None
        parts = prefix.rsplit(".", 2)
        ns = parts[-1]
        info = self._iso.get(ns)
        if info is None or info.mode == "none":
            return None
        if info.owner == client.tenant and (info.mode != "namespace" or client.namespace == ns):
            return None
        if svc and len(parts) >= 2:
            allowed = info.exports.get(parts[-2])
            if allowed is not None and (client.tenant in allowed or "*" in allowed):
                return None
        return ns

    def hides(self, client: ClientInfo, name: str) -> bool:
        """True if ``name`` belongs to a namespace the client's tenant may not see."""
        name = _normalize(name)
        if not name.endswith(self._zones):
            return False
        ns = self._hidden_namespace(client, name)
        return ns is not None and self._iso[ns].mode != "audit"  # audit hides nothing

    def decide(self, client: ClientInfo, qname: str, qtype: str) -> Verdict:
        """The verdict for one query (isolation, guardrails, auto-denies, tenant, baseline)."""
        name = qname.lower()
        if name[-1:] == ".":
            name = name[:-1]
        st = self._tenants.get(client.tenant)
        if st is None:
            st = self._state(client.tenant)
        if name.endswith(self._zones):
            ns = self._hidden_namespace(client, name)
            if ns is not None:
                v = st.isolation_verdicts.get(ns)
                if v is None:
                    # the rule never names the namespace: it lands in the asking tenant's
                    # events, and "isolation:<ns>" would tell it whose namespace that is
                    v = (Verdict("would_deny", ISOLATION_RULE, st.version)
                         if self._iso[ns].mode == "audit" else
                         Verdict("deny", ISOLATION_RULE, st.version, deny_mode="NXDOMAIN",
                                 isolated=True))
                    st.isolation_verdicts[ns] = v
                return v
        r = st.matcher.first(name, qtype, client)
        if st.auto is not None and (r is None or not r.guardrail):
            v = self._auto_verdict(st.auto, name)
            if v is not None:
                return v
        if r is None:
            return st.default
        if r.rewrite:
            return replace(r.verdict, records=rewrite_records(r, name, qtype))
        return r.verdict

    @staticmethod
    def _auto_verdict(table: dict[str, tuple[int, Verdict]], name: str) -> Verdict | None:
        hit = table.get(name)
        i = name.find(".")
        while hit is None and i >= 0:
            hit = table.get(name[i + 1:])
            i = name.find(".", i + 1)
        if hit is None or hit[0] <= time.time_ns() // 1000:
            return None
        return hit[1]

    def check_response(self, client: ClientInfo, qname: str, qtype: str, rcode: str,
                       answer_ips: Sequence[str]) -> Verdict | None:
        """Response-side rules (answer IP in CIDR, rcode); None when none applies."""
        st = self._tenants.get(client.tenant) or self._state(client.tenant)
        if st.response is None:
            return None
        name = _normalize(qname)
        for r in st.response.candidates(name):
            if (r.qtypes is None or qtype in r.qtypes) and (
                    r.selector is None or r.selector.matches(client)) and (
                    r.response is not None and r.response.matches(rcode, answer_ips)):
                if r.rewrite:
                    return replace(r.verdict, records=rewrite_records(r, name, qtype))
                return r.verdict
        return None

    def view(self, tenant: str) -> CompiledView:
        return self._state(tenant).view

    def version(self, tenant: str) -> int:
        return self._version_of(tenant)

    # ------------------------------------------------------------------ introspection
    def keys(self) -> list[str]:
        return sorted(self._records)

    def record(self, key: str) -> dict[str, Any] | None:
        """The decoded record in force under ``key`` (tenant, ``_global``, ``auto:<t>``)."""
        return self._records.get(key)

    def rules_for(self, tenant: str) -> tuple[Matcher, Matcher | None]:
        st = self._state(tenant)
        return st.matcher, st.response

    def auto_denies(self, tenant: str) -> dict[str, tuple[int, Verdict]]:
        return dict(self._auto.get(tenant, (0, {}))[1])

    def namespace_owner(self, ns: str) -> str | None:
        info = self._iso.get(ns)
        return info.owner if info else None

    def namespace_info(self, ns: str) -> tuple[str, str, dict[str, frozenset[str]]] | None:
        """(owner tenant, isolation mode, exports service -> tenants) of a namespace."""
        info = self._iso.get(ns)
        return (info.owner, info.mode, dict(info.exports)) if info else None

    def cluster_zone(self, name: str) -> tuple[str, str, str] | None:
        """For a name in the cluster zones: (namespace, service or '', 'svc' | 'pod')."""
        name = _normalize(name)
        for zone, kind in ((self._svc_zone, "svc"), (self._pod_zone, "pod")):
            if name.endswith(zone):
                parts = name[: -len(zone)].rsplit(".", 2)
                svc = parts[-2] if kind == "svc" and len(parts) >= 2 else ""
                return parts[-1], svc, kind
        return None

    def rule(self, tenant: str, rule_id: str) -> CompiledRule | None:
        m, resp = self.rules_for(tenant)
        for matcher in (m, resp):
            if matcher is None:
                continue
            for r in matcher.all_rules():
                if r.rule_id == rule_id:
                    return r
        return None

    # ------------------------------------------------------------------ fail-static
    def snapshot(self) -> bytes:
        """Everything in force, for the edge to write to disk and restore from."""
        return orjson.dumps({"format": 1, "cluster_domain": self.cluster_domain,
                             "namespaces": self._ns_map, "records": self._records},
                            option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_snapshot(cls, data: bytes, cluster_domain: str = "cluster.local") -> PolicyStore:
        try:
            obj = orjson.loads(data)
            records = obj["records"]
            namespaces = obj.get("namespaces", {})
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise PolicyRecordError(f"policy snapshot: unreadable ({exc})") from None
        store = cls(cluster_domain)
        store.set_namespace_tenants(namespaces)
        # cluster first so tenants compile once against it
        for key in sorted(records, key=lambda k: (k != GLOBAL, k)):
            store.apply_record(key.encode(), orjson.dumps(records[key]))
        return store
