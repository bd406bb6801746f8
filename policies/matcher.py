"""The query-time matcher: first matching rule wins, found without scanning the rule list.

Plain names live in one dict keyed by domain: each entry holds the rules matching the key
itself (exact names and suffix apexes) and the rules matching names strictly below it
(suffixes and ``*.`` wildcards), each tuple sorted by rule order. A lookup walks the query's
suffixes (one dict probe per label), so its cost depends on the name's depth, not on how
many plain-name rules exist. Regular expressions form a small ordered tier that is only
tried while it could still beat the best plain-name candidate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnsflow.policies.regex import NameRegex, compile_name_regex
from dnsflow.policies.types import ClientInfo, Verdict

_BIG = 1 << 62


@dataclass(frozen=True, slots=True)
class Selector:
    """Which clients a rule applies to; ``None`` fields mean 'any'."""

    namespaces: frozenset[str] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    service_accounts: frozenset[str] | None = None

    def matches(self, client: ClientInfo) -> bool:
        if self.namespaces is not None and client.namespace not in self.namespaces:
            return False
        if self.service_accounts is not None and client.service_account not in \
                self.service_accounts:
            return False
        if self.labels:
            got = client.labels
            for k, v in self.labels:
                if got.get(k) != v:
                    return False
        return True

    def covers(self, other: Selector) -> bool:
        """True if every client ``other`` selects is also selected by this one."""
        if self.namespaces is not None and (
            other.namespaces is None or not other.namespaces <= self.namespaces
        ):
            return False
        if self.service_accounts is not None and (
            other.service_accounts is None or not other.service_accounts <= self.service_accounts
        ):
            return False
        return set(self.labels) <= set(other.labels)

    @property
    def is_any(self) -> bool:
        return self.namespaces is None and not self.labels and self.service_accounts is None


ANY_CLIENT = Selector()


@dataclass(frozen=True, slots=True)
class ResponseCond:
    networks: tuple[Any, ...] = ()  # ipaddress networks
    rcodes: frozenset[str] | None = None

    def matches(self, rcode: str, answer_ips: Sequence[str]) -> bool:
        if self.rcodes is not None and rcode.upper() not in self.rcodes:
            return False
        if not self.networks:
            return True
        for raw in answer_ips:
            try:
                ip = ipaddress.ip_address(raw)
            except ValueError:
                continue
            for net in self.networks:
                if ip.version == net.version and ip in net:
                    return True
        return False

    def covers(self, other: ResponseCond) -> bool:
        if self.rcodes is not None and (other.rcodes is None or not other.rcodes <= self.rcodes):
            return False
        if not self.networks:
            return True
        if not other.networks:
            return False
        return all(any(o.version == n.version and o.subnet_of(n) for n in self.networks)
                   for o in other.networks)


@dataclass(slots=True, eq=False)
class CompiledRule:
    """One rule ready for matching; ``verdict`` is built once per version."""

    index: int
    rule_id: str
    qtypes: frozenset[str] | None
    selector: Selector | None  # None: every client of the tenant
    verdict: Verdict
    response: ResponseCond | None = None
    guardrail: bool = False
    cname: str = ""
    rewrite: tuple[tuple[str, int, str], ...] = ()  # (rtype, ttl, rdata) owned by the qname
    names: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _ordered(rules: list[CompiledRule]) -> tuple[CompiledRule, ...]:
    """Rules are appended in index order; only duplicates (a pattern listed twice) go."""
    if len(rules) <= 1:
        return tuple(rules)
    return tuple(sorted(dict.fromkeys(rules), key=lambda r: r.index))


def _packed(rules: list[CompiledRule]) -> CompiledRule | tuple[CompiledRule, ...]:
    ordered = _ordered(rules)
    return ordered[0] if len(ordered) == 1 else ordered


def _unpacked(e: CompiledRule | tuple[CompiledRule, ...] | None) -> tuple[CompiledRule, ...]:
    if e is None:
        return ()
    return (e,) if isinstance(e, CompiledRule) else e


def _earliest(rules: Iterable[CompiledRule], before: int, qtype: str,
              client: ClientInfo) -> CompiledRule | None:
    """The first of ``rules`` (in rule order) with an index below ``before`` whose query
    types and client selector take this query; None if there is none."""
    for r in rules:
        if r.index >= before:
            return None
        if (r.qtypes is None or qtype in r.qtypes) and (
                r.selector is None or r.selector.matches(client)):
            return r
    return None


class Matcher:
    """First-match lookup over an ordered rule list (compiled once per policy version).

    ``_exact`` maps a name to the rules matching exactly it (exact names, suffix apexes);
    ``_below`` maps a zone to the rules matching names strictly below it (suffixes,
    ``*.`` wildcards). A value is the rule itself when only one rule has that key (the
    common case: one pointer less to chase per probe), else a tuple in rule order.
    """

    __slots__ = ("_any", "_below", "_exact", "_min_depth", "_regex", "_rules", "_want",
                 "size")

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        exact: dict[str, list[CompiledRule]] = {}
        below: dict[str, list[CompiledRule]] = {}
        anyname: list[CompiledRule] = []
        regex: list[tuple[CompiledRule, NameRegex]] = []
        for r in rules:
            if not (r.names or r.suffixes or r.regexes):
                anyname.append(r)
                continue
            for n in r.names:
                if n.startswith("*."):
                    below.setdefault(n[2:], []).append(r)
                else:
                    exact.setdefault(n, []).append(r)
            for s in r.suffixes:
                exact.setdefault(s, []).append(r)
                below.setdefault(s, []).append(r)
            for rx in r.regexes:
                regex.append((r, compile_name_regex(rx)))  # RE2: linear time
        self._exact = {k: _packed(v) for k, v in exact.items()}
        self._below = {k: _packed(v) for k, v in below.items()}
        # Only suffixes with as many labels as some key can hit: skip the other probes.
        depths = {k.count(".") + 1 for k in exact.keys() | below.keys()}
        self._want = tuple(d in depths for d in range(130))
        self._min_depth = min(depths) if depths else 1 << 30
        self._any = _ordered(anyname)
        regex.sort(key=lambda t: t[0].index)
        self._regex = tuple(regex)
        self.size = len(rules)
        self._rules = tuple(rules)

    def all_rules(self) -> tuple[CompiledRule, ...]:
        return self._rules

    def first(self, name: str, qtype: str, client: ClientInfo) -> CompiledRule | None:
        """The first rule (in order) matching ``name`` (canonical), ``qtype`` and ``client``."""
        best: CompiledRule | None = None
        bi = _BIG
        want = self._want
        k = name.count(".") + 1  # labels in the name
        if k < 130 and want[k]:
            e = self._exact.get(name)
            if e is not None:
                best = _earliest((e,) if e.__class__ is CompiledRule else e, bi, qtype, client)
                if best is not None:
                    bi = best.index
        k -= 1  # labels in the suffix after the next dot
        min_depth = self._min_depth
        below = self._below
        i = name.find(".")
        while i >= 0 and k >= min_depth:
            if k < 130 and want[k]:
                e = below.get(name[i + 1:])
                if e is not None:
                    r = _earliest((e,) if e.__class__ is CompiledRule else e, bi, qtype, client)
                    if r is not None:
                        best, bi = r, r.index
            i = name.find(".", i + 1)
            k -= 1
        if self._any:
            r = _earliest(self._any, bi, qtype, client)
            if r is not None:
                best, bi = r, r.index
        for r, rx in self._regex:
            if r.index >= bi:
                break
            if rx.fullmatch(name) and (r.qtypes is None or qtype in r.qtypes) and (
                    r.selector is None or r.selector.matches(client)):
                best = r
                break
        return best

    def candidates(self, name: str) -> list[CompiledRule]:
        """Every rule whose name patterns match ``name``, in order (for explain/responses)."""
        found: dict[int, CompiledRule] = {}
        for r in _unpacked(self._exact.get(name)):
            found[r.index] = r
        i = name.find(".")
        while i >= 0:
            for r in _unpacked(self._below.get(name[i + 1:])):
                found[r.index] = r
            i = name.find(".", i + 1)
        for r in self._any:
            found[r.index] = r
        for r, rx in self._regex:
            if rx.fullmatch(name):
                found[r.index] = r
        return [found[k] for k in sorted(found)]
