"""The compiled matcher agrees with the obvious reference (scan the rules in order, first
match wins) on random rule sets and names, including case and trailing-dot variants."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dnsflow.policies import records
from dnsflow.policies.api import ClientInfo, PolicyStore

LABELS = ["a", "b", "c", "example", "com", "x-1"]
TYPES = ["A", "AAAA", "TXT"]
CLIENT = ClientInfo("10.0.0.1", "acme", "shop")

names = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)
pattern = st.one_of(
    st.tuples(st.just("names"), names),
    st.tuples(st.just("names"), names.map(lambda n: "*." + n)),
    st.tuples(st.just("suffixes"), names),
    st.tuples(st.just("regex"), st.sampled_from(["a\\..*", ".*\\.com", "(b|c)\\.example"])),
)
rule = st.tuples(st.lists(pattern, max_size=3),
                 st.lists(st.sampled_from(TYPES), max_size=2, unique=True))


def _matches(kind: str, p: str, name: str) -> bool:
    if kind == "regex":
        return re.fullmatch(p, name) is not None
    if kind == "suffixes":
        return name == p or name.endswith("." + p)
    if p.startswith("*."):
        return name.endswith(p[1:])
    return name == p


def reference(rules: list, name: str, qtype: str) -> str:
    for i, (patterns, types) in enumerate(rules):
        if types and qtype not in types:
            continue
        if not patterns or any(_matches(k, p, name) for k, p in patterns):
            return f"shop/p#{i}"
    return ""


def _store(rules: list) -> PolicyStore:
    body = []
    for patterns, types in rules:
        match: dict = {}
        for kind, p in patterns:
            match.setdefault(kind, []).append(p)
        if types:
            match["types"] = types
        body.append({"match": match, "action": "deny"})
    doc = records.tenant_document("acme", [])
    # straight to the store: unreachable rules are allowed here, the matcher must still agree
    doc["policies"] = [{"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
                        "metadata": {"name": "p", "namespace": "shop"},
                        "spec": {"tenant": "acme", "rules": body}}]
    store = PolicyStore()
    store.apply_record(*records.encode(doc, 1, 0, "t", "t"))
    return store


@settings(max_examples=300, deadline=None)
@given(st.lists(rule, max_size=8), st.lists(names, min_size=1, max_size=6),
       st.sampled_from(TYPES), st.booleans())
def test_matcher_equals_reference(rules, queries, qtype, shout):
    store = _store(rules)
    for q in queries:
        asked = (q.upper() + ".") if shout else q
        assert store.decide(CLIENT, asked, qtype).rule == reference(rules, q, qtype)
        assert store.decide(CLIENT, asked, qtype.lower()).rule == reference(rules, q, qtype)
