"""Every validation error path: each problem names the file, the document and the field."""

from __future__ import annotations

import pytest

from dnsflow.policies import policyset
from dnsflow.policies.loader import PolicySetError, load_paths
from tests.helpers.policy_yaml import document


def _rule(rule: str) -> str:
    return document("rules:\n  - " + rule)


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicySetError) as exc:
        policyset.from_text(text, "p.yaml")
    return [str(p) for p in exc.value.problems]


CASES = [
    # (yaml, field path, message fragment)
    (document("tenant: acme\nfoo: 1"), "spec.foo", "unknown field"),
    (document("tenant: acme").replace("kind: DNSPolicy", "kind: DNSPolicyy"), "kind",
     "unknown kind 'DNSPolicyy'"),
    (document("tenant: acme").replace("dnsflow.io/v1", "dnsflow.io/v2"), "apiVersion",
     "'dnsflow.io/v2'"),
    (document("tenant: acme", meta="{name: p}"), "", "metadata.namespace is required"),
    (document("rules: []", kind="ClusterDNSPolicy"), "", "cluster-scoped"),
    (document("tenant: acme", meta="{name: Bad_Name, namespace: shop}"), "metadata.name",
     "DNS-1123"),
    (document("tenant: ACME"), "spec.tenant", "DNS-1123"),
    (document("priority: 5000"), "spec.priority", "less than or equal to 1000"),
    (document("clients: {labels: {'bad key!': x}}"), "spec.clients.labels", "bad label key"),
    (document("clients: {namespaces: [Bad]}"), "spec.clients.namespaces[0]", "DNS-1123"),
    (document("isolation: partial"), "spec.isolation", "'tenant'"),
    (document("exports: [{service: api, to: []}]"), "spec.exports[0].to", "at least 1"),
    (document("exports: [{service: api, to: [acme, Bad!]}]"), "spec.exports[0].to[1]",
     "tenant 'Bad!' is not a valid DNS-1123 name"),
    (document("clients: {tenants: [_global]}", kind="ClusterDNSPolicy", meta="{name: c}"),
     "spec.clients.tenants[0]", "DNS-1123"),
    (document("view: {records: [{name: x.com, type: MX, value: 'mail.x.com.'}]}"),
     "spec.view.records[0]", "invalid MX record data"),
    (document("view: {records: [{type: A, value: 1.2.3.4}]}"), "spec.view.records[0].name",
     "Field required"),
    (document("view: {searchDomains: ['-bad-.com']}"), "spec.view.searchDomains[0]",
     "invalid label"),
    (document("view: {upstreams: ['https://']}"), "spec.view.upstreams[0]", "missing host"),
    (document("tier: middle", kind="ClusterDNSPolicy", meta="{name: c}"), "spec.tier",
     "'guardrail'"),
    ("- just\n- a list\n", "", "expected a mapping"),
    ("kind: [unclosed\n", "", "invalid YAML"),
]
# Problems in one rule (spec.rules[0]): the field path inside the rule -> the rules that have a
# problem there, each with a fragment of its message.
RULE_CASES = {
    "": [("{action: rewrite}", "'rewrite' is required"),
         ("{action: deny, rewrite: {cname: a.com}}", "'rewrite' is required"),
         ("{action: redirect}", "'redirect' is required"),
         ("{action: allow, denyMode: REFUSED}", "'denyMode' is only"),
         ("{action: deny, rateLimit: {qps: 1}}", "'rateLimit' makes no"),
         ("{match: {response: {rcodes: [NXDOMAIN]}}, action: redirect, "
          "redirect: {upstreams: ['udp://1.1.1.1']}}", "cannot redirect")],
    ".id": [("{id: 'bad id!', action: deny}", "rule id")],
    ".action": [("{action: block}", "'allow', 'deny'")],
    ".denyMode": [("{action: deny, denyMode: SILENT}", "'NXDOMAIN'")],
    ".rateLimit.qps": [("{action: allow, rateLimit: {qps: 0}}", "greater than 0")],
    ".rewrite": [("{action: rewrite, rewrite: {cname: a.com, records: "
                  "[{type: A, value: 1.2.3.4}]}}", "exactly one of")],
    ".rewrite.records[0]": [
        ("{action: rewrite, rewrite: {records: [{type: A, value: not-an-ip}]}}",
         "invalid A record data"),
        ("{action: rewrite, rewrite: {records: [{type: AAAA, value: 1.2.3.4}]}}",
         "invalid AAAA record data")],
}
# The same for the match of a deny rule: the field path inside the match -> (match, fragment).
MATCH_CASES = {
    ".nmes": [("{nmes: [a.com]}", "unknown field")],
    ".names[0]": [("{names: ['a.*.com']}", "only allowed as the first label"),
                  ("{names: ['bad label.com']}", "invalid label"),
                  ("{names: ['" + "a." * 130 + "com']}", "longer than 253"),
                  ("{names: ['" + "x" * 70 + "\u00e9.com']}",
                   "not a valid internationalised name")],
    ".names[1]": [("{names: [ok.com, 'a..b.com']}", "empty label")],
    ".suffixes[0]": [("{suffixes: ['*.x.com']}", "wildcard not allowed")],
    ".regex[0]": [("{regex: ['(unclosed']}", "bad regex"),
                  ("{regex: ['" + "a" * 600 + "']}", "longer than 512"),
                  ("{regex: ['(.)\\1']}", "no backreferences")],
    ".regex[1]": [("{regex: ['x', '(?=a)b']}", "lookaround")],
    ".types[1]": [("{types: [A, BOGUS]}", "unknown query type 'BOGUS'")],
    ".response": [("{response: {}}", "needs answerCIDRs or rcodes")],
    ".response.answerCIDRs[0]": [("{response: {answerCIDRs: [10.0.0.1/8]}}", "bad CIDR"),
                                 ("{response: {answerCIDRs: [10.0.0.0/33]}}", "bad CIDR")],
    ".response.rcodes[0]": [("{response: {rcodes: [NXDOM]}}", "NXDOMAIN")],
}
# ... and for the upstreams of a redirect rule: the field path inside them -> (upstreams, fragment).
UPSTREAM_CASES = {
    "[0]": [("['ftp://x.com']", "unknown scheme 'ftp'"),
            ("['1.1.1.1']", "expected udp://"),
            ("['tls://1.1.1.1:853@']", "empty SNI"),
            ("['udp://1.1.1.1/x']", "path is only allowed"),
            ("['udp://1.1.1.1:99999']", "out of range")],
    "": [("[]", "at least 1")],
}
RULE_PROBLEMS = [
    *((rule, path, fragment) for path, cases in RULE_CASES.items() for rule, fragment in cases),
    *((f"{{match: {match}, action: deny}}", ".match" + path, fragment)
      for path, cases in MATCH_CASES.items() for match, fragment in cases),
    *((f"{{action: redirect, redirect: {{upstreams: {upstreams}}}}}", ".redirect.upstreams" + path,
       fragment) for path, cases in UPSTREAM_CASES.items() for upstreams, fragment in cases),
]


def _assert_problem(text: str, path: str, fragment: str) -> None:
    """Refused, with a problem in document 1 at ``path`` that says ``fragment``."""
    problems = _problems(text)
    want_prefix = "p.yaml: document 1: " + (path + ": " if path else "")
    if "invalid YAML" in fragment:
        want_prefix = "p.yaml: document 0: "
    assert any(p.startswith(want_prefix) and fragment in p for p in problems), problems


@pytest.mark.parametrize("text, path, fragment", CASES)
def test_document_errors(text, path, fragment):
    _assert_problem(text, path, fragment)


@pytest.mark.parametrize("rule, path, fragment", RULE_PROBLEMS)
def test_rule_errors(rule, path, fragment):
    _assert_problem(_rule(rule), "spec.rules[0]" + path, fragment)


def test_every_problem_reported_with_document_index():
    text = (document("tenant: acme") + "---\n" + _rule("{action: nope}") + "---\n"
            + document("x: 1"))
    problems = _problems(text)
    assert problems[0].startswith("p.yaml: document 2: spec.rules[0].action: ")
    assert problems[1] == "p.yaml: document 3: spec.x: unknown field"
    assert len(problems) == 2


SET_CASES = [
    (document("tenant: acme") + "---\n" + document("tenant: acme"), 2, "metadata.name",
     "duplicate DNSPolicy 'shop/p' (first in p.yaml document 1)"),
    (document("rules: [{id: a, action: deny, match: {names: [x.com]}}, "
          "{id: a, action: deny, match: {names: [y.com]}}]"), 1, "spec.rules[1].id",
     "duplicate rule id 'a'"),
    (document("tenant: acme") + "---\n"
     + document("tenant: globex", meta="{name: q, namespace: shop}"), 2, "spec.tenant",
     "namespace 'shop' already belongs to tenant 'acme'"),
    (document("{tenant: acme, isolation: none}") + "---\n"
     + document("{tenant: acme, isolation: tenant}", meta="{name: q, namespace: shop}"), 2,
     "spec.isolation", "conflicts with isolation 'none'"),
    (document("{tenant: acme, view: {upstreams: ['udp://1.1.1.1']}}") + "---\n"
     + document("{tenant: acme, view: {upstreams: ['udp://8.8.8.8']}}",
            meta="{name: q, namespace: blog}"), 2, "spec.view.upstreams",
     "already has view upstreams"),
]


@pytest.mark.parametrize("text, doc, path, fragment", SET_CASES)
def test_set_errors(text, doc, path, fragment):
    problems = _problems(text)
    assert any(p.startswith(f"p.yaml: document {doc}: {path}: ") and fragment in p
               for p in problems), problems


def _rules(*rules: str, extra: str = "") -> str:
    return document("tenant: acme\n" + extra + "rules:\n" + "".join(f"  - {r}\n" for r in rules))


# a first rule -> second rules it leaves unreachable (every query they match, it decides)
SHADOWED_BY_THE_FIRST = {
    "{match: {suffixes: [example.com]}, action: deny}": [
        "{match: {names: [www.example.com]}, action: allow}",
        "{match: {names: ['*.a.example.com']}, action: allow}"],
    "{match: {names: ['*.example.com']}, action: deny}": [
        "{match: {suffixes: [a.example.com]}, action: allow}"],
    "{action: deny, match: {types: [TXT]}}": [
        "{match: {names: [x.com], types: [TXT]}, action: allow}"],
    "{match: {regex: ['.*\\.biz']}, action: deny}": [
        "{match: {names: [a.biz]}, action: allow}",
        "{match: {regex: ['.*\\.biz']}, action: allow}"],
    "{match: {response: {answerCIDRs: [10.0.0.0/8]}}, action: deny}": [
        "{match: {names: [x.com], response: {answerCIDRs: [10.1.0.0/16]}}, action: deny}"],
}
UNREACHABLE = [
    *(([first, second], 1, "shop/p#0")
      for first, seconds in SHADOWED_BY_THE_FIRST.items() for second in seconds),
    # named by its id; shadowed by the union of two earlier rules
    (["{id: first, match: {names: [x.com]}, action: deny}",
      "{match: {names: [X.COM.]}, action: allow}"], 1, "shop/p#first"),
    (["{match: {names: [a.com]}, action: deny}", "{match: {names: [b.com]}, action: deny}",
      "{match: {names: [a.com, b.com]}, action: allow}"], 2, "shop/p#0, shop/p#1"),
]


@pytest.mark.parametrize("rules, index, by", UNREACHABLE)
def test_unreachable_rules(rules, index, by):
    problems = _problems(_rules(*rules))
    assert problems == [f"p.yaml: document 1: spec.rules[{index}]: unreachable rule: every "
                        f"query it matches is decided earlier by {by}"]


REACHABLE = [
    ["{match: {names: [www.example.com]}, action: allow}",
     "{match: {suffixes: [example.com]}, action: deny}"],
    ["{match: {names: ['*.example.com']}, action: deny}",
     "{match: {names: [example.com]}, action: allow}"],
    ["{match: {suffixes: [example.com], types: [A]}, action: deny}",
     "{match: {names: [www.example.com]}, action: allow}"],
    ["{match: {regex: ['a.*']}, action: deny}", "{match: {regex: ['b.*']}, action: deny}"],
    ["{match: {response: {answerCIDRs: [10.1.0.0/16]}}, action: deny}",
     "{match: {response: {answerCIDRs: [10.0.0.0/8]}}, action: deny}"],
    ["{match: {names: [x.com], response: {rcodes: [NXDOMAIN]}}, action: deny}",
     "{match: {names: [x.com]}, action: allow}"],
]


@pytest.mark.parametrize("rules", REACHABLE)
def test_reachable_rules_accepted(rules):
    assert set(policyset.from_text(_rules(*rules))) == {"acme"}


def test_narrower_selector_does_not_shadow():
    narrow = document("tenant: acme\nclients: {labels: {app: web}}\n"
                  "rules: [{match: {suffixes: [x.com]}, action: deny}]")
    wide = document("tenant: acme\npriority: 200\nrules: [{match: {names: [a.x.com]}, "
                "action: allow}]", meta="{name: q, namespace: shop}")
    assert set(policyset.from_text(narrow + "---\n" + wide)) == {"acme"}
    # the other way round the later rule can never decide
    wide_first = wide.replace("priority: 200", "priority: 1").replace("names: [a.x.com]",
                                                                       "suffixes: [x.com]")
    narrow_later = narrow.replace("suffixes: [x.com]", "names: [a.x.com]")
    problems = _problems(wide_first + "---\n" + narrow_later)
    assert problems == ["p.yaml: document 2: spec.rules[0]: unreachable rule: every query it "
                        "matches is decided earlier by shop/q#0"]


def test_cluster_tiers_are_separate_groups():
    guard = document("rules: [{match: {suffixes: [x.com]}, action: deny}]", "ClusterDNSPolicy",
                 "{name: g}")
    base = document("tier: baseline\nrules: [{match: {names: [a.x.com]}, action: allow}]",
                "ClusterDNSPolicy", "{name: b}")
    tenant = _rules("{match: {names: [a.x.com]}, action: allow}")
    assert set(policyset.from_text(guard + "---\n" + base + "---\n" + tenant)) == \
        {"_global", "acme"}


def test_missing_path_and_whole_set_rejected(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(document("tenant: acme"))
    bad = tmp_path / "bad.yml"
    bad.write_text(_rule("{action: nope}"))
    docs, problems = load_paths([tmp_path, tmp_path / "missing.yaml"])
    assert [loc.file for loc in docs] == [str(good)]
    assert [str(p).split(": ")[0] for p in problems] == [str(tmp_path / "missing.yaml"), str(bad)]
    assert "no such file or directory" in str(problems[0])
    with pytest.raises(PolicySetError):
        policyset.from_paths([tmp_path])


def test_unicode_names_become_punycode(make_store, mk_client):
    store = make_store(_rules("{match: {names: ['B\u00fccher.example']}, action: deny}"))
    assert store.decide(mk_client(), "xn--bcher-kva.example.", "A").action == "deny"


def test_cluster_rules_for_different_tenants_do_not_shadow():
    a = document("clients: {tenants: [acme]}\nrules: [{match: {suffixes: [x.com]}, action: deny}]",
             "ClusterDNSPolicy", "{name: a}")
    b = document("clients: {tenants: [globex]}\nrules: [{match: {names: [y.x.com]}, "
             "action: deny}]", "ClusterDNSPolicy", "{name: b}")
    assert set(policyset.from_text(a + "---\n" + b)) == {"_global"}
    every = document("rules: [{match: {suffixes: [x.com]}, action: deny}]", "ClusterDNSPolicy",
                 "{name: a}")
    problems = _problems(every + "---\n" + b)
    assert problems == ["p.yaml: document 2: spec.rules[0]: unreachable rule: every query it "
                        "matches is decided earlier by cluster:a#0"]


def test_readme_example_is_valid():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "policies" / "README.md").read_text()
    after = readme.split("### The documents", 1)[1]  # the first YAML block of that section
    example = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert set(policyset.from_text(example, "README.md")) == {"acme"}


def test_configmap_volume_layout_read_once(tmp_path):
    """Kubernetes mounts a ConfigMap as ..<ts>/file, ..data -> ..<ts>, file -> ..data/file."""
    real = tmp_path / "..2026_11_26_20_00_00.123"
    real.mkdir()
    (real / "acme.yaml").write_text(document("tenant: acme"))
    (tmp_path / "..data").symlink_to(real.name)
    (tmp_path / "acme.yaml").symlink_to("..data/acme.yaml")
    docs, problems = load_paths([tmp_path])
    assert problems == []
    assert [loc.file for loc in docs] == [str(tmp_path / "acme.yaml")]
