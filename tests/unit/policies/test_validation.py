"""Every validation error path: each problem names the file, the document and the field."""

from __future__ import annotations

import textwrap

import pytest
from dnsflow.policies import policyset
from dnsflow.policies.loader import PolicySetError, load_paths


def _doc(spec: str, kind: str = "DNSPolicy", meta: str = "{name: p, namespace: shop}") -> str:
    return textwrap.dedent(f"""\
        apiVersion: dnsflow.io/v1
        kind: {kind}
        metadata: {meta}
        spec:
        """) + textwrap.indent(textwrap.dedent(spec), "  ") + "\n"


def _rule(rule: str) -> str:
    return _doc("rules:\n  - " + rule)


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicySetError) as exc:
        policyset.from_text(text, "p.yaml")
    return [str(p) for p in exc.value.problems]


CASES = [
    # (yaml, field path, message fragment)
    (_doc("tenant: acme\nfoo: 1"), "spec.foo", "unknown field"),
    (_rule("{match: {nmes: [a.com]}, action: deny}"), "spec.rules[0].match.nmes",
     "unknown field"),
    (_doc("tenant: acme").replace("kind: DNSPolicy", "kind: DNSPolicyy"), "kind",
     "unknown kind 'DNSPolicyy'"),
    (_doc("tenant: acme").replace("dnsflow.io/v1", "dnsflow.io/v2"), "apiVersion",
     "'dnsflow.io/v2'"),
    (_doc("tenant: acme", meta="{name: p}"), "", "metadata.namespace is required"),
    (_doc("rules: []", kind="ClusterDNSPolicy"), "", "cluster-scoped"),
    (_doc("tenant: acme", meta="{name: Bad_Name, namespace: shop}"), "metadata.name",
     "DNS-1123"),
    (_doc("tenant: ACME"), "spec.tenant", "DNS-1123"),
    (_doc("priority: 5000"), "spec.priority", "less than or equal to 1000"),
    (_rule("{match: {names: [ok.com, 'a..b.com']}, action: deny}"),
     "spec.rules[0].match.names[1]", "empty label"),
    (_rule("{match: {names: ['a.*.com']}, action: deny}"), "spec.rules[0].match.names[0]",
     "only allowed as the first label"),
    (_rule("{match: {suffixes: ['*.x.com']}, action: deny}"),
     "spec.rules[0].match.suffixes[0]", "wildcard not allowed"),
    (_rule("{match: {names: ['bad label.com']}, action: deny}"),
     "spec.rules[0].match.names[0]", "invalid label"),
    (_rule("{match: {names: ['" + "a." * 130 + "com']}, action: deny}"),
     "spec.rules[0].match.names[0]", "longer than 253"),
    (_rule("{match: {regex: ['(unclosed']}, action: deny}"), "spec.rules[0].match.regex[0]",
     "bad regex"),
    (_rule("{match: {regex: ['" + "a" * 600 + "']}, action: deny}"),
     "spec.rules[0].match.regex[0]", "longer than 512"),
    (_rule("{match: {regex: ['(.)\\1']}, action: deny}"), "spec.rules[0].match.regex[0]",
     "no backreferences"),
    (_rule("{match: {regex: ['x', '(?=a)b']}, action: deny}"), "spec.rules[0].match.regex[1]",
     "lookaround"),
    (_rule("{match: {names: ['" + "x" * 70 + "\u00e9.com']}, action: deny}"),
     "spec.rules[0].match.names[0]", "not a valid internationalised name"),
    (_rule("{match: {types: [A, BOGUS]}, action: deny}"), "spec.rules[0].match.types[1]",
     "unknown query type 'BOGUS'"),
    (_rule("{match: {response: {answerCIDRs: [10.0.0.1/8]}}, action: deny}"),
     "spec.rules[0].match.response.answerCIDRs[0]", "bad CIDR"),
    (_rule("{match: {response: {answerCIDRs: [10.0.0.0/33]}}, action: deny}"),
     "spec.rules[0].match.response.answerCIDRs[0]", "bad CIDR"),
    (_rule("{match: {response: {}}, action: deny}"), "spec.rules[0].match.response",
     "needs answerCIDRs or rcodes"),
    (_rule("{match: {response: {rcodes: [NXDOM]}}, action: deny}"),
     "spec.rules[0].match.response.rcodes[0]", "NXDOMAIN"),
    (_rule("{action: block}"), "spec.rules[0].action", "'allow', 'deny'"),
    (_rule("{action: rewrite}"), "spec.rules[0]", "'rewrite' is required"),
    (_rule("{action: deny, rewrite: {cname: a.com}}"), "spec.rules[0]", "'rewrite' is required"),
    (_rule("{action: redirect}"), "spec.rules[0]", "'redirect' is required"),
    (_rule("{action: allow, denyMode: REFUSED}"), "spec.rules[0]", "'denyMode' is only"),
    (_rule("{action: deny, denyMode: SILENT}"), "spec.rules[0].denyMode", "'NXDOMAIN'"),
    (_rule("{action: deny, rateLimit: {qps: 1}}"), "spec.rules[0]", "'rateLimit' makes no"),
    (_rule("{action: allow, rateLimit: {qps: 0}}"), "spec.rules[0].rateLimit.qps",
     "greater than 0"),
    (_rule("{match: {response: {rcodes: [NXDOMAIN]}}, action: redirect, "
           "redirect: {upstreams: ['udp://1.1.1.1']}}"), "spec.rules[0]", "cannot redirect"),
    (_rule("{action: rewrite, rewrite: {cname: a.com, records: [{type: A, value: 1.2.3.4}]}}"),
     "spec.rules[0].rewrite", "exactly one of"),
    (_rule("{action: rewrite, rewrite: {records: [{type: A, value: not-an-ip}]}}"),
     "spec.rules[0].rewrite.records[0]", "invalid A record data"),
    (_rule("{action: rewrite, rewrite: {records: [{type: AAAA, value: 1.2.3.4}]}}"),
     "spec.rules[0].rewrite.records[0]", "invalid AAAA record data"),
    (_rule("{action: redirect, redirect: {upstreams: ['ftp://x.com']}}"),
     "spec.rules[0].redirect.upstreams[0]", "unknown scheme 'ftp'"),
    (_rule("{action: redirect, redirect: {upstreams: ['1.1.1.1']}}"),
     "spec.rules[0].redirect.upstreams[0]", "expected udp://"),
    (_rule("{action: redirect, redirect: {upstreams: ['tls://1.1.1.1:853@']}}"),
     "spec.rules[0].redirect.upstreams[0]", "empty SNI"),
    (_rule("{action: redirect, redirect: {upstreams: ['udp://1.1.1.1/x']}}"),
     "spec.rules[0].redirect.upstreams[0]", "path is only allowed"),
    (_rule("{action: redirect, redirect: {upstreams: ['udp://1.1.1.1:99999']}}"),
     "spec.rules[0].redirect.upstreams[0]", "out of range"),
    (_rule("{action: redirect, redirect: {upstreams: []}}"), "spec.rules[0].redirect.upstreams",
     "at least 1"),
    (_rule("{id: 'bad id!', action: deny}"), "spec.rules[0].id", "rule id"),
    (_doc("clients: {labels: {'bad key!': x}}"), "spec.clients.labels", "bad label key"),
    (_doc("clients: {namespaces: [Bad]}"), "spec.clients.namespaces[0]", "DNS-1123"),
    (_doc("isolation: partial"), "spec.isolation", "'tenant'"),
    (_doc("exports: [{service: api, to: []}]"), "spec.exports[0].to", "at least 1"),
    (_doc("exports: [{service: api, to: [acme, Bad!]}]"), "spec.exports[0].to[1]",
     "tenant 'Bad!' is not a valid DNS-1123 name"),
    (_doc("clients: {tenants: [_global]}", kind="ClusterDNSPolicy", meta="{name: c}"),
     "spec.clients.tenants[0]", "DNS-1123"),
    (_doc("view: {records: [{name: x.com, type: MX, value: 'mail.x.com.'}]}"),
     "spec.view.records[0]", "invalid MX record data"),
    (_doc("view: {records: [{type: A, value: 1.2.3.4}]}"), "spec.view.records[0].name",
     "Field required"),
    (_doc("view: {searchDomains: ['-bad-.com']}"), "spec.view.searchDomains[0]",
     "invalid label"),
    (_doc("view: {upstreams: ['https://']}"), "spec.view.upstreams[0]", "missing host"),
    (_doc("tier: middle", kind="ClusterDNSPolicy", meta="{name: c}"), "spec.tier",
     "'guardrail'"),
    ("- just\n- a list\n", "", "expected a mapping"),
    ("kind: [unclosed\n", "", "invalid YAML"),
]


@pytest.mark.parametrize("text, path, fragment", CASES)
def test_document_errors(text, path, fragment):
    problems = _problems(text)
    want_prefix = "p.yaml: document 1: " + (path + ": " if path else "")
    if "invalid YAML" in fragment:
        want_prefix = "p.yaml: document 0: "
    assert any(p.startswith(want_prefix) and fragment in p for p in problems), problems


def test_every_problem_reported_with_document_index():
    text = (_doc("tenant: acme") + "---\n" + _rule("{action: nope}") + "---\n"
            + _doc("x: 1"))
    problems = _problems(text)
    assert problems[0].startswith("p.yaml: document 2: spec.rules[0].action: ")
    assert problems[1] == "p.yaml: document 3: spec.x: unknown field"
    assert len(problems) == 2


SET_CASES = [
    (_doc("tenant: acme") + "---\n" + _doc("tenant: acme"), 2, "metadata.name",
     "duplicate DNSPolicy 'shop/p' (first in p.yaml document 1)"),
    (_doc("rules: [{id: a, action: deny, match: {names: [x.com]}}, "
          "{id: a, action: deny, match: {names: [y.com]}}]"), 1, "spec.rules[1].id",
     "duplicate rule id 'a'"),
    (_doc("tenant: acme") + "---\n"
     + _doc("tenant: globex", meta="{name: q, namespace: shop}"), 2, "spec.tenant",
     "namespace 'shop' already belongs to tenant 'acme'"),
    (_doc("{tenant: acme, isolation: none}") + "---\n"
     + _doc("{tenant: acme, isolation: tenant}", meta="{name: q, namespace: shop}"), 2,
     "spec.isolation", "conflicts with isolation 'none'"),
    (_doc("{tenant: acme, view: {upstreams: ['udp://1.1.1.1']}}") + "---\n"
     + _doc("{tenant: acme, view: {upstreams: ['udp://8.8.8.8']}}",
            meta="{name: q, namespace: blog}"), 2, "spec.view.upstreams",
     "already has view upstreams"),
]


@pytest.mark.parametrize("text, doc, path, fragment", SET_CASES)
def test_set_errors(text, doc, path, fragment):
    problems = _problems(text)
    assert any(p.startswith(f"p.yaml: document {doc}: {path}: ") and fragment in p
               for p in problems), problems


def _rules(*rules: str, extra: str = "") -> str:
    return _doc("tenant: acme\n" + extra + "rules:\n" + "".join(f"  - {r}\n" for r in rules))


UNREACHABLE = [
    (["{match: {suffixes: [example.com]}, action: deny}",
      "{match: {names: [www.example.com]}, action: allow}"], 1, "shop/p#0"),
    (["{match: {suffixes: [example.com]}, action: deny}",
      "{match: {names: ['*.a.example.com']}, action: allow}"], 1, "shop/p#0"),
    (["{match: {names: ['*.example.com']}, action: deny}",
      "{match: {suffixes: [a.example.com]}, action: allow}"], 1, "shop/p#0"),
    (["{action: deny, match: {types: [TXT]}}",
      "{match: {names: [x.com], types: [TXT]}, action: allow}"], 1, "shop/p#0"),
    (["{id: first, match: {names: [x.com]}, action: deny}",
      "{match: {names: [X.COM.]}, action: allow}"], 1, "shop/p#first"),
    (["{match: {regex: ['.*\\.biz']}, action: deny}",
      "{match: {names: [a.biz]}, action: allow}"], 1, "shop/p#0"),
    (["{match: {regex: ['.*\\.biz']}, action: deny}",
      "{match: {regex: ['.*\\.biz']}, action: allow}"], 1, "shop/p#0"),
    (["{match: {names: [a.com]}, action: deny}", "{match: {names: [b.com]}, action: deny}",
      "{match: {names: [a.com, b.com]}, action: allow}"], 2, "shop/p#0, shop/p#1"),
    (["{match: {response: {answerCIDRs: [10.0.0.0/8]}}, action: deny}",
      "{match: {names: [x.com], response: {answerCIDRs: [10.1.0.0/16]}}, action: deny}"], 1,
     "shop/p#0"),
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
    narrow = _doc("tenant: acme\nclients: {labels: {app: web}}\n"
                  "rules: [{match: {suffixes: [x.com]}, action: deny}]")
    wide = _doc("tenant: acme\npriority: 200\nrules: [{match: {names: [a.x.com]}, "
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
    guard = _doc("rules: [{match: {suffixes: [x.com]}, action: deny}]", "ClusterDNSPolicy",
                 "{name: g}")
    base = _doc("tier: baseline\nrules: [{match: {names: [a.x.com]}, action: allow}]",
                "ClusterDNSPolicy", "{name: b}")
    tenant = _rules("{match: {names: [a.x.com]}, action: allow}")
    assert set(policyset.from_text(guard + "---\n" + base + "---\n" + tenant)) == \
        {"_global", "acme"}


def test_missing_path_and_whole_set_rejected(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(_doc("tenant: acme"))
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
    a = _doc("clients: {tenants: [acme]}\nrules: [{match: {suffixes: [x.com]}, action: deny}]",
             "ClusterDNSPolicy", "{name: a}")
    b = _doc("clients: {tenants: [globex]}\nrules: [{match: {names: [y.x.com]}, "
             "action: deny}]", "ClusterDNSPolicy", "{name: b}")
    assert set(policyset.from_text(a + "---\n" + b)) == {"_global"}
    every = _doc("rules: [{match: {suffixes: [x.com]}, action: deny}]", "ClusterDNSPolicy",
                 "{name: a}")
    problems = _problems(every + "---\n" + b)
    assert problems == ["p.yaml: document 2: spec.rules[0]: unreachable rule: every query it "
                        "matches is decided earlier by cluster:a#0"]


def test_readme_example_is_valid():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "policies" / "README.md").read_text()
    example = readme.split("## The documents\n\n```yaml\n", 1)[1].split("```", 1)[0]
    assert set(policyset.from_text(example, "README.md")) == {"acme"}


def test_configmap_volume_layout_read_once(tmp_path):
    """Kubernetes mounts a ConfigMap as ..<ts>/file, ..data -> ..<ts>, file -> ..data/file."""
    real = tmp_path / "..2026_11_26_20_00_00.123"
    real.mkdir()
    (real / "acme.yaml").write_text(_doc("tenant: acme"))
    (tmp_path / "..data").symlink_to(real.name)
    (tmp_path / "acme.yaml").symlink_to("..data/acme.yaml")
    docs, problems = load_paths([tmp_path])
    assert problems == []
    assert [loc.file for loc in docs] == [str(tmp_path / "acme.yaml")]
