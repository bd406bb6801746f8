"""Whole-set checks that single documents cannot do on their own.

A set is accepted only if every document is valid *and* these hold: no duplicate policy,
no duplicate rule id within a policy, one isolation mode per namespace, a namespace belongs
to one tenant, at most one upstream list per tenant view, and no unreachable rule (one that
an earlier rule of the same group always decides first). The shadow check is indexed like
the matcher, so it stays linear in the number of rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dnsflow.policies.compiler import policy_order, response_cond, rule_id, selector_of
from dnsflow.policies.loader import Located, Problem
from dnsflow.policies.matcher import ANY_CLIENT, ResponseCond, Selector
from dnsflow.policies.model import ClusterDNSPolicy, DNSPolicy, Match
from dnsflow.policies.regex import NameRegex, compile_name_regex


@dataclass(slots=True)
class _Entry:
    rid: str
    types: frozenset[str] | None
    selector: Selector
    response: ResponseCond | None
    tenants: frozenset[str] | None = None  # ClusterDNSPolicy clients.tenants

    def covers(self, other: _Entry) -> bool:
        if self.types is not None and (other.types is None or not other.types <= self.types):
            return False
        if self.tenants is not None and (
                other.tenants is None or not other.tenants <= self.tenants):
            return False
        if not self.selector.covers(other.selector):
            return False
        if (self.response is None) != (other.response is None):
            return False
        return self.response is None or self.response.covers(other.response)  # type: ignore[arg-type]


def _ancestors(name: str, include_self: bool) -> Iterable[str]:
    if include_self:
        yield name
    i = name.find(".")
    while i >= 0:
        yield name[i + 1:]
        i = name.find(".", i + 1)


class _Coverage:
    """Earlier rules indexed by pattern, to ask 'is this pattern always decided before?'."""

    def __init__(self) -> None:
        self.exact: dict[str, list[_Entry]] = defaultdict(list)
        self.suffix: dict[str, list[_Entry]] = defaultdict(list)
        self.wild: dict[str, list[_Entry]] = defaultdict(list)
        self.regex_src: dict[str, list[_Entry]] = defaultdict(list)
        self.regex: list[tuple[NameRegex, _Entry]] = []
        self.all: list[_Entry] = []

    def add(self, e: _Entry, m: Match) -> None:
        if m.all_names:
            self.all.append(e)
        for n in m.names:
            (self.wild[n[2:]] if n.startswith("*.") else self.exact[n]).append(e)
        for s in m.suffixes:
            self.suffix[s].append(e)
        for rx in m.regex:
            self.regex_src[rx].append(e)
            self.regex.append((compile_name_regex(rx), e))

    def _first(self, e: _Entry, pools: Iterable[list[_Entry]]) -> _Entry | None:
        for pool in pools:
            for c in pool:
                if c.covers(e):
                    return c
        return None

    def coverer(self, e: _Entry, m: Match) -> list[str] | None:
        """Ids of earlier rules that together decide every query ``m`` matches, or None."""
        by: dict[str, None] = {}
        c = self._first(e, [self.all])
        if c is not None:
            return [c.rid]
        if m.all_names:
            return None
        for n in m.names:
            if n.startswith("*."):
                zone = n[2:]
                pools = [self.suffix.get(a, []) for a in _ancestors(zone, True)]
                pools += [self.wild.get(a, []) for a in _ancestors(zone, True)]
            else:
                pools = [self.exact.get(n, [])]
                pools += [self.suffix.get(a, []) for a in _ancestors(n, True)]
                pools += [self.wild.get(a, []) for a in _ancestors(n, False)]
                pools += [[r for rx, r in self.regex if rx.fullmatch(n)]]
            c = self._first(e, pools)
            if c is None:
                return None
            by[c.rid] = None
        for s in m.suffixes:
            pools = [self.suffix.get(a, []) for a in _ancestors(s, True)]
            pools += [self.wild.get(a, []) for a in _ancestors(s, False)]
            c = self._first(e, pools)
            if c is None:
                return None
            by[c.rid] = None
        for rx in m.regex:
            c = self._first(e, [self.regex_src.get(rx, [])])
            if c is None:
                return None
            by[c.rid] = None
        return list(by)


def unreachable(group: Sequence[Located]) -> list[Problem]:
    """Rules of ``group`` (documents in precedence order) that can never decide."""
    cov = _Coverage()
    problems: list[Problem] = []
    for loc in group:
        p = loc.policy
        sel = selector_of(p) or ANY_CLIENT
        tenants = (frozenset(p.spec.clients.tenants)
                   if isinstance(p, ClusterDNSPolicy) and p.spec.clients.tenants else None)
        for i, rule in enumerate(p.spec.rules):
            m = rule.match
            e = _Entry(rule_id(p, i, rule), frozenset(m.types) if m.types else None, sel,
                       response_cond(rule), tenants)
            by = cov.coverer(e, m)
            if by is not None:
                problems.append(Problem(
                    loc.file, loc.doc, f"spec.rules[{i}]",
                    f"unreachable rule: every query it matches is decided earlier by "
                    f"{', '.join(by)}"))
            cov.add(e, m)
    return problems


def _tenant_of(loc: Located) -> str:
    assert isinstance(loc.policy, DNSPolicy)
    return loc.policy.tenant


def check_set(docs: Sequence[Located]) -> list[Problem]:
    """Every cross-document problem of a set (empty list: the set is acceptable)."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], Located] = {}
    ns_owner: dict[str, Located] = {}
    isolation: dict[tuple[str, str], Located] = {}
    upstreams: dict[str, Located] = {}
    for loc in docs:
        p = loc.policy
        key = (p.kind, p.metadata.namespace or "", p.metadata.name)
        if key in seen:
            first = seen[key]
            problems.append(Problem(loc.file, loc.doc, "metadata.name",
                                    f"duplicate {p.kind} {p.ref!r} (first in {first.file} "
                                    f"document {first.doc})"))
            continue
        seen[key] = loc
        ids: dict[str, int] = {}
        for i, rule in enumerate(p.spec.rules):
            if rule.id is None:
                continue
            if rule.id in ids:
                problems.append(Problem(loc.file, loc.doc, f"spec.rules[{i}].id",
                                        f"duplicate rule id {rule.id!r} (also "
                                        f"spec.rules[{ids[rule.id]}])"))
            ids.setdefault(rule.id, i)
        egress_ids: dict[str, int] = {}
        for i, erule in enumerate(p.spec.egress):
            if erule.id is None:
                continue
            if erule.id in egress_ids or erule.id in ids:
                also = (f"spec.egress[{egress_ids[erule.id]}]" if erule.id in egress_ids
                        else f"spec.rules[{ids[erule.id]}]")
                problems.append(Problem(loc.file, loc.doc, f"spec.egress[{i}].id",
                                        f"duplicate rule id {erule.id!r} (also {also})"))
            egress_ids.setdefault(erule.id, i)
        if not isinstance(p, DNSPolicy):
            continue
        ns = str(p.metadata.namespace)
        owner = ns_owner.setdefault(ns, loc)
        if _tenant_of(owner) != p.tenant:
            problems.append(Problem(loc.file, loc.doc, "spec.tenant",
                                    f"namespace {ns!r} already belongs to tenant "
                                    f"{_tenant_of(owner)!r} ({owner.file} document "
                                    f"{owner.doc})"))
        if p.spec.isolation is not None:
            prev = isolation.setdefault((p.tenant, ns), loc)
            prev_mode = prev.policy.spec.isolation  # type: ignore[union-attr]
            if prev is not loc and prev_mode != p.spec.isolation:
                problems.append(Problem(loc.file, loc.doc, "spec.isolation",
                                        f"conflicts with isolation {prev_mode!r} for namespace "
                                        f"{ns!r} ({prev.file} document {prev.doc})"))
        if p.spec.view is not None and p.spec.view.upstreams:
            prev = upstreams.setdefault(p.tenant, loc)
            prev_up = prev.policy.spec.view.upstreams  # type: ignore[union-attr]
            if prev is not loc and prev_up != p.spec.view.upstreams:
                problems.append(Problem(loc.file, loc.doc, "spec.view.upstreams",
                                        f"tenant {p.tenant!r} already has view upstreams "
                                        f"{prev_up} ({prev.file} document {prev.doc})"))
    for group in groups(docs).values():
        problems.extend(unreachable(group))
    return problems


def groups(docs: Sequence[Located]) -> dict[str, list[Located]]:
    """Documents per evaluation group, each in precedence order.

    Keys: a tenant name, ``_global/guardrail`` and ``_global/baseline``.
    """
    out: dict[str, list[Located]] = defaultdict(list)
    for loc in docs:
        p = loc.policy
        if isinstance(p, ClusterDNSPolicy):
            out[f"_global/{p.spec.tier}"].append(loc)
        else:
            out[p.tenant].append(loc)
    for items in out.values():
        items.sort(key=lambda loc: policy_order(loc.policy))
    return dict(out)
