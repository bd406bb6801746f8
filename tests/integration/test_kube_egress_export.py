"""``dnsflow policy egress-export`` against a real kube-apiserver (scripts/kube-local, #17):
every exported NetworkPolicy is accepted by the API server's own validation (server-side
dry-run create), the same way other kube tests reach it (skipped when it cannot start)."""

from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import client, config

from dnsflow.cli import main
from tests.helpers.egress_seed import MAP, POLICY, seed


@pytest.fixture
def ns(kube):
    name = f"egress-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false")


def test_exported_network_policies_pass_the_api_server(kube, ns, tmp_path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(POLICY.format(ns=ns))
    (tmp_path / "map.yaml").write_text(MAP.format(ns=ns))
    dsn = f"chdb://{tmp_path / 'chdb'}"
    seed(dsn, ns)
    out = tmp_path / "np.yaml"
    assert main(["policy", "egress-export", "--clickhouse", dsn, "--home", str(tmp_path),
                 "-o", str(out), str(tmp_path / "p.yaml")]) == 0, capsys.readouterr().err
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert docs and all(d["kind"] == "NetworkPolicy" for d in docs)
    api = client.NetworkingV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig)))
    for doc in docs:
        got = api.create_namespaced_network_policy(ns, doc, dry_run="All")
        assert got.metadata.name == doc["metadata"]["name"]
        cidrs = [t.ip_block.cidr for rule in got.spec.egress for t in rule.to if t.ip_block]
        assert "203.0.113.7/32" in cidrs
    # and really created: kubectl reads it back
    api.create_namespaced_network_policy(ns, docs[0])
    shown = kube.kubectl("get", "networkpolicy", "-n", ns, docs[0]["metadata"]["name"],
                         "-o", "yaml").stdout
    assert "203.0.113.7/32" in shown
