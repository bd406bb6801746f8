"""Registered-domain split, allowlist, top names and incident expiry: the cheap paths give
the answers of the straightforward ones."""

import random

import pytest
from streams_helpers import T0

from dnsflow.streams.config import DEFAULT_ALLOWLIST, IncidentConfig
from dnsflow.streams.domains import _EXTRACT, ALLOWLISTED, INTERNAL, NORMAL, DomainIndex, NameInfo
from dnsflow.streams.incidents import Detection, Incidents
from dnsflow.streams.telemetry import top_names


def reference(qname: str, allow: list[str]) -> NameInfo:
    """tldextract on every name, the allowlist by string suffix."""
    entries = {a.lower().strip(".") for a in allow if a.strip(".")}
    if not qname or qname.endswith(".arpa") or "." not in qname:
        return NameInfo("", "", "", INTERNAL)
    r = _EXTRACT.extract_str(qname)
    if not r.suffix or not r.domain:
        return NameInfo("", "", "", INTERNAL)
    reg = f"{r.domain}.{r.suffix}"
    allowed = (reg in entries or qname in entries
               or qname.endswith(tuple("." + a for a in entries)))
    return NameInfo(reg, r.domain, r.subdomain, ALLOWLISTED if allowed else NORMAL)


def names_around_every_suffix() -> list[str]:
    """Each public suffix rule (wildcards and exceptions too) bare and under 1-3 labels;
    in name order a parent comes first, so later names take the known-parent path."""
    names = set()
    for rule in _EXTRACT.tlds:
        for base in {rule.lstrip("!"), rule.replace("*.", ""), rule.replace("*", "w1")}:
            names.update((base, "a." + base, "x-1.b_c." + base, "city.q." + base,
                          "w.a." + base, "v.x-1.b_c." + base, "xn--p1ai.a." + base,
                          "a..a." + base, ".a." + base, "w.www." + base))
    names.update(("a..com", ".com", "com", "a.com.", "1.2.3.4", "1.2.3.com", "www.ck",
                  "a.www.ck", "b.ck", "a.b.ck", "-a.com", "_srv._tcp.example.com",
                  "xn--bcher-kva.example", "a.xn--p1ai", "Host.Example.COM", "a:80.com",
                  "a/b.com", "a@b.com", "x.elb.amazonaws.com", "x.cdn.jsdelivr.net",
                  "a.example.com", "deep.example.com", "x.deep.example.com",
                  "x.y.deep.example.com", "a.b.co.uk", "x.y.b.co.uk"))
    return sorted(names)


@pytest.mark.parametrize("allow", [[], list(DEFAULT_ALLOWLIST), ["co.uk", "x..y", "b.ck."],
                                   ["deep.example.com", "y.b.co.uk"]])
def test_split_and_allowlist_match_tldextract(allow):
    index = DomainIndex(allow)
    names = names_around_every_suffix()
    assert len(names) > 20_000
    wrong = [(q, index.info(q), reference(q, allow)) for q in names
             if index.info(q) != reference(q, allow)]
    assert wrong == []


def test_top_names_counts_then_names_at_the_cut():
    rng = random.Random(5)
    for _ in range(3000):
        names = {f"n{rng.randint(0, 99)}.example": rng.choice([1, 1, 2, rng.randint(1, 9)])
                 for _ in range(rng.randint(0, 40))}
        for n in (0, 1, 5, 10):
            expect = sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
            assert top_names(names, n) == expect


def test_incidents_forgotten_after_idle_even_when_state_restored():
    out = []
    inc = Incidents(IncidentConfig(idle_s=60, min_update_s=0), out.append)
    for i in range(5):
        inc.report(Detection(ts=T0 + i * 1_000_000, kind="dga", tenant="t", score=0.9,
                             client_ip=f"10.0.0.{i}"))
    inc.report(Detection(ts=T0 + 50_000_000, kind="dga", tenant="t", score=0.9,
                         client_ip="10.0.0.4"))  # keeps client .4 open longer
    inc.expire(T0 + 62_500_000)
    assert sorted(k[2] for k in inc.open) == ["10.0.0.3", "10.0.0.4"]
    restored = Incidents(IncidentConfig(idle_s=60), out.append)
    restored.open.update(inc.open)  # as checkpoint.restore does
    restored.expire(T0 + 64_000_001)
    assert [k[2] for k in restored.open] == ["10.0.0.4"]
    restored.expire(T0 + 110_000_001)
    assert restored.open == {}
