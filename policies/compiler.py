"""Turn validated documents into ordered, ready-to-match rules (once per version).

Order is the precedence contract (README.md): within one group of documents, by
``spec.priority`` ascending, then namespace, then name; rules in document order.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

from dnsflow.policies.matcher import CompiledRule, ResponseCond, Selector
from dnsflow.policies.model import ClusterDNSPolicy, DNSPolicy, Rule
from dnsflow.policies.types import CompiledView, LocalRecord, Verdict


def policy_order(p: DNSPolicy | ClusterDNSPolicy) -> tuple[int, int, str, str]:
    tier = 0
    if isinstance(p, ClusterDNSPolicy) and p.spec.tier == "baseline":
        tier = 1
    return (tier, p.spec.priority, p.metadata.namespace or "", p.metadata.name)


def rule_id(p: DNSPolicy | ClusterDNSPolicy, i: int, rule: Rule) -> str:
    prefix = p.ref if isinstance(p, DNSPolicy) else f"cluster:{p.metadata.name}"
    return f"{prefix}#{rule.id if rule.id is not None else i}"


def selector_of(p: DNSPolicy | ClusterDNSPolicy) -> Selector | None:
    c = p.spec.clients
    if isinstance(p, DNSPolicy):
        ns: frozenset[str] | None = (frozenset([str(p.metadata.namespace)])
                                     if not c.namespaces else frozenset(c.namespaces))
    else:
        ns = frozenset(c.namespaces) if c.namespaces else None
    if ns is not None and "*" in ns:
        ns = None
    sel = Selector(
        namespaces=ns,
        labels=tuple(sorted(c.labels.items())),
        service_accounts=frozenset(c.service_accounts) if c.service_accounts else None,
    )
    return None if sel.is_any else sel


def response_cond(rule: Rule) -> ResponseCond | None:
    r = rule.match.response
    if r is None:
        return None
    return ResponseCond(
        networks=tuple(ipaddress.ip_network(c) for c in r.answer_cidrs),
        rcodes=frozenset(r.rcodes) if r.rcodes else None,
    )


def _verdict(rule: Rule, rid: str, version: int) -> Verdict:
    rl = None
    if rule.rate_limit is not None:
        burst = rule.rate_limit.burst or max(1, math.ceil(rule.rate_limit.qps))
        rl = (float(rule.rate_limit.qps), int(burst))
    if rule.action == "deny":
        if rule.audit:  # answered as if allowed; the event says what enforcing would do
            return Verdict("would_deny", rid, version, log=rule.log)
        return Verdict("deny", rid, version, deny_mode=rule.deny_mode or "NXDOMAIN",
                       log=rule.log)
    if rule.action == "redirect":
        assert rule.redirect is not None
        return Verdict("redirect", rid, version, upstreams=tuple(rule.redirect.upstreams),
                       rate_limit=rl, log=rule.log)
    return Verdict(rule.action, rid, version, rate_limit=rl, log=rule.log)


@dataclass(slots=True)
class CompiledGroup:
    query: list[CompiledRule]
    response: list[CompiledRule]


def compile_policies(
    policies: Sequence[DNSPolicy | ClusterDNSPolicy], version: int, start: int,
    *, guardrail: bool = False,
) -> CompiledGroup:
    """Compile documents (already in precedence order) into rules numbered from ``start``."""
    query: list[CompiledRule] = []
    response: list[CompiledRule] = []
    index = start
    for p in policies:
        sel = selector_of(p)
        for i, rule in enumerate(p.spec.rules):
            rid = rule_id(p, i, rule)
            m = rule.match
            cr = CompiledRule(
                index=index,
                rule_id=rid,
                # both cases: a caller passing "a" must not slip past a rule for "A"
                qtypes=frozenset(t for x in m.types for t in (x, x.lower())) if m.types
                else None,
                selector=sel,
                verdict=_verdict(rule, rid, version),
                response=response_cond(rule),
                guardrail=guardrail,
                names=tuple(m.names),
                suffixes=tuple(m.suffixes),
                regexes=tuple(m.regex),
            )
            if rule.rewrite is not None:
                if rule.rewrite.cname:
                    cr.cname = rule.rewrite.cname
                    cr.rewrite = (("CNAME", 60, rule.rewrite.cname + "."),)
                else:
                    cr.rewrite = tuple((r.type, r.ttl, r.value) for r in rule.rewrite.records)
            index += 1
            (response if cr.response is not None else query).append(cr)
    return CompiledGroup(query, response)


def rewrite_records(rule: CompiledRule, name: str, qtype: str) -> tuple[LocalRecord, ...]:
    """The local answer of a rewrite rule for one query name.

    A CNAME rewrite always answers the CNAME; record rewrites answer the records of the
    asked type (none: NODATA for that type, which is what a zone with those records does).
    """
    if rule.cname:
        return (LocalRecord(name, "CNAME", 60, rule.cname + "."),)
    return tuple(LocalRecord(name, t, ttl, data) for t, ttl, data in rule.rewrite
                 if qtype in (t, "ANY"))


def merge_view(tenant: str, policies: Sequence[DNSPolicy], cluster_domain: str) -> CompiledView:
    """One view per tenant: records and search domains unioned, first upstream list wins."""
    records: dict[tuple[str, str, str], LocalRecord] = {}
    search: dict[str, None] = {}
    upstreams: tuple[str, ...] = ()
    for p in policies:
        v = p.spec.view
        if v is None:
            continue
        for r in v.records:
            records.setdefault((r.name, r.type, r.value), LocalRecord(r.name, r.type, r.ttl,
                                                                      r.value))
        for s in v.search_domains:
            search.setdefault(s, None)
        if v.upstreams and not upstreams:
            upstreams = tuple(v.upstreams)
    return CompiledView(tenant, tuple(records.values()), tuple(search), upstreams, cluster_domain)
