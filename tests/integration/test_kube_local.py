"""scripts/kube-local gives a real kube-apiserver (built from its Go module, etcd from Debian)
that speaks for Kubernetes in the suite: it is ready, enforces RBAC for non-admin users, and
accepts the project's CRDs as served resources."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_api_server_is_ready_and_enforces_rbac(kube) -> None:
    assert kube.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    # a user without bindings is denied by RBAC (not allowed by a permissive authorizer)
    denied = kube.kubectl("auth", "can-i", "list", "pods", as_user="nobody", check=False)
    assert denied.stdout.strip() == "no"


def test_project_crds_are_established_and_served(kube) -> None:
    kube.apply_crds()
    ns = "kube-local-smoke"
    kube.kubectl("create", "namespace", ns)
    try:
        policy = {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
                  "metadata": {"name": "base", "namespace": ns},
                  "spec": {"rules": [{"id": "ads", "match": {"names": ["ads.example.com"]},
                                      "action": "deny"}]}}
        kube.kubectl("apply", "-f", "-", input=json.dumps(policy))
        got = json.loads(kube.kubectl("get", "dnsp", "base", "-n", ns, "-o", "json").stdout)
        assert got["spec"]["rules"][0]["match"]["names"] == ["ads.example.com"]
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")
