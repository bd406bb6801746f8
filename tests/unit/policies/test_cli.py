"""`dnsflow policy validate|explain|apply --dry-run` without Kafka, through the real CLI."""

from __future__ import annotations

import pytest

from dnsflow.cli import main
from tests.helpers.policy_yaml import dns_policy, documents

GOOD = documents(dns_policy("base", "shop", "acme", """
  clients: {namespaces: ["*"]}
  view: {records: [{name: db.acme.internal, type: A, value: 10.0.0.7}]}
  rules:
    - {id: ads, match: {names: ["*.tracker.net"], types: [A]}, action: deny, denyMode: DROP}
    - {id: corp, match: {suffixes: [corp.internal]}, action: redirect,
       redirect: {upstreams: ["udp://127.0.0.1:5353"]}}
    - {id: pin, match: {names: [api.example.com]}, action: rewrite,
       rewrite: {records: [{type: A, value: 10.9.9.9, ttl: 30}]}}
"""), dns_policy("bank", "bank", "globex", "exports: [{service: api, to: [acme]}]"))
BAD = GOOD.replace("denyMode: DROP", "denyMode: SILENT").replace("namespace: bank}",
                                                                 "namespace: bank, x: 1}")
MAP = """
clients:
  - {cidr: 10.1.0.0/16, tenant: acme, namespace: shop}
10.2.0.0/16: globex/bank
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "map.yaml").write_text(MAP)
    return tmp_path


def test_validate_ok_and_errors_one_per_line(files, capsys):
    assert main(["policy", "validate", str(files / "good.yaml")]) == 0
    assert "ok: 2 document(s) valid; keys: acme, globex" in capsys.readouterr().out
    assert main(["policy", "validate", str(files / "bad.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    bad = str(files / "bad.yaml")
    assert out[0].startswith(f"{bad}: document 1: spec.rules[0].denyMode: ")
    assert out[1] == f"{bad}: document 2: metadata.x: unknown field"
    assert len(out) == 2


def test_validate_missing_file(files, capsys):
    assert main(["policy", "validate", str(files / "nope.yaml")]) == 1
    assert "nope.yaml: document 0: no such file or directory" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expect", [
    (["--client", "10.1.2.3", "--name", "X.Tracker.NET.", "--type", "a"],
     ["decision: deny DROP", "rule:     shop/base#ads",
      "client gets: no response at all"]),
    (["--client", "10.1.2.3", "--name", "db.bank.svc.cluster.local"],
     ["decision: deny NXDOMAIN", "rule:     isolation\n", "service 'db' not exported"]),
    (["--client", "10.1.2.3", "--name", "api.bank.svc.cluster.local"],
     ["decision: allow", "default allow"]),
    (["--client", "10.2.0.9", "--name", "x.tracker.net"],
     ["decision: allow", "tenant globex"]),
    (["--tenant", "acme", "--namespace", "blog", "--name", "git.corp.internal", "--type", "MX"],
     ["decision: redirect", "client gets: the answer of udp://127.0.0.1:5353"]),
    (["--tenant", "acme", "--name", "api.example.com"],
     ["decision: rewrite", "client gets: local answer: api.example.com 30 A 10.9.9.9"]),
    (["--tenant", "acme", "--name", "db.acme.internal"],
     ["decision: allow", "the tenant view's local records: db.acme.internal 60 A 10.0.0.7"]),
    (["--tenant", "acme", "--name", "x.tracker.net", "--type", "AAAA"],
     ["skip    shop/base#ads", "type AAAA not in ['A']", "default allow"]),
])
def test_explain(files, capsys, argv, expect):
    args = ["policy", "explain", *argv, "--tenant-map", str(files / "map.yaml"),
            str(files / "good.yaml")]
    assert main(args) == 0
    out = capsys.readouterr().out
    for fragment in expect:
        assert fragment in out, out


def test_explain_usage_errors(files, capsys):
    assert main(["policy", "explain", "--client", "10.1.2.3", "--name", "a.com",
                 str(files / "good.yaml")]) == 2
    assert "--client needs --tenant-map" in capsys.readouterr().err
    assert main(["policy", "explain", "--client", "192.0.2.1", "--tenant-map",
                 str(files / "map.yaml"), "--name", "a.com", str(files / "good.yaml")]) == 2
    assert "client 192.0.2.1 is in no tenant map entry" in capsys.readouterr().err
    assert main(["policy", "explain", "--tenant", "acme", "--name", "a.com",
                 str(files / "bad.yaml")]) == 1


def test_apply_needs_kafka_but_dry_run_does_not(files, capsys, monkeypatch):
    monkeypatch.delenv("DNSFLOW_KAFKA", raising=False)
    assert main(["policy", "apply", str(files / "good.yaml")]) == 2
    assert "needs --kafka" in capsys.readouterr().err
    assert main(["policy", "apply", "--dry-run", str(files / "good.yaml")]) == 0
    out = capsys.readouterr().out
    assert "would publish acme: new -> v1" in out and "would publish globex: new -> v1" in out
    assert main(["policy", "apply", "--dry-run", str(files / "bad.yaml")]) == 1


def test_explain_mentions_response_rules(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(dns_policy("p", "shop", "acme", """
  rules:
    - id: rebind
      match: {suffixes: [example.com], response: {answerCIDRs: [10.0.0.0/8]}}
      action: deny
"""))
    assert main(["policy", "explain", "--tenant", "acme", "--namespace", "shop", "--name",
                 "www.example.com", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert "decision: allow" in out
    assert "answer  shop/p#rebind [tenant policy, deny] applies after the upstream answers " \
           "if it has an answer IP in 10.0.0.0/8" in out


def test_explain_json(files, capsys):
    import json

    assert main(["policy", "explain", "--tenant", "acme", "--namespace", "shop", "--name",
                 "api.example.com", "--json", str(files / "good.yaml")]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["decision"], got["rule"], got["records"]) == \
        ("rewrite", "shop/base#pin", [["api.example.com", 30, "A", "10.9.9.9"]])
    assert got["client"]["tenant"] == "acme" and got["trace"]
