"""Egress rules compiled for the edge: "does a rule select this client and this name, on
which ports, in which mode" in a few dict probes per answer.

Exact names are one dict probe; ``*.zone`` patterns (the common form) one probe on the name
without its first label; other patterns (``api-*.example.com``) are a short list of compiled
expressions; a lone ``*`` matches every name. Several rules matching one answer add up: the
ports are their union (a rule without ports allows every port) and the answer is enforced if
any of them enforces. Rules keep precedence order, so the first one names the allowance.
A client selected by an enforcing rule is judged by the enforcing rules only (an audit rule
cannot widen what is enforced); a client selected only by audit rules, by those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dnsflow.policies.matcher import Selector
from dnsflow.policies.model import (
    ClientSelector,
    ClusterClientSelector,
    ClusterDNSPolicy,
    DNSPolicy,
    EgressRule,
)
from dnsflow.policies.types import ClientInfo

Port = tuple[str, int]  # (protocol lower case: tcp | udp | sctp, port)
ALL_PORTS: tuple[Port, ...] = ()


@dataclass(frozen=True, slots=True)
class EgressGrant:
    """What one answer allows a client: ``ports`` empty means every port."""

    rule: str
    ports: tuple[Port, ...]
    mode: str  # enforce | audit
    version: int


@dataclass(frozen=True, slots=True)
class CompiledEgress:
    index: int
    rule_id: str
    selector: Selector | None
    ports: tuple[Port, ...]
    mode: str
    version: int
    names: tuple[str, ...]     # matchName, and matchPattern without '*'
    patterns: tuple[str, ...]  # matchPattern with '*'


def egress_rule_id(p: DNSPolicy | ClusterDNSPolicy, i: int, rule: EgressRule) -> str:
    prefix = p.ref if isinstance(p, DNSPolicy) else f"cluster:{p.metadata.name}"
    return f"{prefix}#{rule.id if rule.id is not None else f'egress{i}'}"


def _selector(p: DNSPolicy | ClusterDNSPolicy, c: ClientSelector) -> Selector | None:
    """As compiler.selector_of, for a rule's own ``clients`` (default: the policy's)."""
    ns: frozenset[str] | None
    if isinstance(p, DNSPolicy):
        ns = frozenset([str(p.metadata.namespace)]) if not c.namespaces else frozenset(
            c.namespaces)
    else:
        ns = frozenset(c.namespaces) if c.namespaces else None
    if ns is not None and "*" in ns:
        ns = None
    sel = Selector(namespaces=ns, labels=tuple(sorted(c.labels.items())),
                   service_accounts=frozenset(c.service_accounts) if c.service_accounts
                   else None)
    return None if sel.is_any else sel


def compile_egress(policies: Sequence[DNSPolicy | ClusterDNSPolicy], version: int,
                   tenant: str, start: int = 0) -> list[CompiledEgress]:
    """The egress rules of documents already in precedence order that apply to ``tenant``
    (a cluster rule's ``clients.tenants`` may leave it out), numbered from ``start``."""
    out: list[CompiledEgress] = []
    for p in policies:
        for i, rule in enumerate(p.spec.egress):
            c = rule.clients or p.spec.clients
            if isinstance(c, ClusterClientSelector) and c.tenants and tenant not in c.tenants:
                continue
            names = tuple(f.match_name or str(f.match_pattern) for f in rule.to_fqdns
                          if f.match_name or "*" not in str(f.match_pattern))
            patterns = tuple(str(f.match_pattern) for f in rule.to_fqdns
                             if f.match_pattern and "*" in f.match_pattern)
            ports = tuple(sorted({(pt.protocol.lower(), pt.port) for pt in rule.ports}))
            out.append(CompiledEgress(start + len(out), egress_rule_id(p, i, rule),
                                      _selector(p, c), ports, rule.mode, version, names,
                                      patterns))
    return out


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("[-a-z0-9_]*".join(re.escape(part) for part in pattern.split("*")))


class EgressIndex:
    """The egress rules of one tenant (cluster rules included), indexed by name."""

    __slots__ = ("_any", "_exact", "_globs", "_parent", "rules")

    def __init__(self, rules: Iterable[CompiledEgress]) -> None:
        self.rules = tuple(rules)
        self._exact: dict[str, tuple[int, ...]] = {}
        self._parent: dict[str, tuple[int, ...]] = {}
        self._any: tuple[int, ...] = ()
        globs: list[tuple[re.Pattern[str], int]] = []
        for r in self.rules:
            for n in r.names:
                self._exact[n] = (*self._exact.get(n, ()), r.index)
            for pat in r.patterns:
                if pat == "*":
                    self._any = (*self._any, r.index)
                elif pat.startswith("*.") and "*" not in pat[2:]:
                    self._parent[pat[2:]] = (*self._parent.get(pat[2:], ()), r.index)
                else:
                    globs.append((_glob(pat), r.index))
        self._globs = tuple(globs)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _candidates(self, name: str) -> list[int]:
        hits = [*self._exact.get(name, ()), *self._any]
        dot = name.find(".")
        if dot > 0 and self._parent:
            hits += self._parent.get(name[dot + 1:], ())
        hits += [i for rx, i in self._globs if rx.fullmatch(name)]
        return hits

    def match(self, client: ClientInfo, name: str, mode: str | None = None
              ) -> EgressGrant | None:
        """What an answer for ``name`` (canonical: lower case, no trailing dot) allows
        (``mode``: the client's :meth:`mode` when the caller already knows it)."""
        hits = self._candidates(name)
        if not hits:
            return None
        only_enforce = (mode or self.mode(client)) == "enforce"
        first: CompiledEgress | None = None
        ports: set[Port] = set()
        every = False
        enforce = False
        for i in sorted(set(hits)):
            r = self.rules[i - self.rules[0].index]
            if r.selector is not None and not r.selector.matches(client):
                continue
            if only_enforce and r.mode != "enforce":
                continue
            first = first or r
            every = every or not r.ports
            ports.update(r.ports)
            enforce = enforce or r.mode == "enforce"
        if first is None:
            return None
        return EgressGrant(first.rule_id, ALL_PORTS if every else tuple(sorted(ports)),
                           "enforce" if enforce else "audit", first.version)

    def mode(self, client: ClientInfo) -> str | None:
        """``enforce`` if a rule that enforces selects the client, ``audit`` if only audit
        rules do, None if none: the client's egress is not the edge's business."""
        found = None
        for r in self.rules:
            if r.selector is None or r.selector.matches(client):
                if r.mode == "enforce":
                    return "enforce"
                found = "audit"
        return found
