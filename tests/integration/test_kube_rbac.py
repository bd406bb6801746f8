"""Least-privilege RBAC of the Helm chart against a real kube-apiserver (scripts/kube-local):
templates/rbac.yaml rendered by helm, applied, and every ServiceAccount it creates asked
through SubjectAccessReview (`kubectl auth can-i --as=system:serviceaccount:...`) for what it
needs (yes) and for what it must not do (no)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "dnsflow"
ACCOUNTS = ("dnsflow-edge", "dnsflow-policies", "dnsflow-streams", "dnsflow-sink")

# (verb, resource[, subresource]) asked cluster-wide (-A)
NEEDS = {
    "dnsflow-edge": [("get", "pods"), ("list", "pods"), ("watch", "pods"),
                     ("get", "namespaces"), ("list", "namespaces"), ("watch", "namespaces")],
    "dnsflow-policies": [
        ("get", "dnspolicies.dnsflow.io"), ("list", "dnspolicies.dnsflow.io"),
        ("watch", "dnspolicies.dnsflow.io"), ("list", "clusterdnspolicies.dnsflow.io"),
        ("watch", "clusterdnspolicies.dnsflow.io"), ("get", "clusterdnspolicies.dnsflow.io"),
        ("patch", "dnspolicies.dnsflow.io", "status"),
        ("patch", "clusterdnspolicies.dnsflow.io", "status"),
        ("list", "namespaces"), ("watch", "namespaces"), ("get", "namespaces")],
    "dnsflow-streams": [],
    "dnsflow-sink": [],
}
ALL_NEEDS = {n for needs in NEEDS.values() for n in needs}
MUST_NOT = [
    ("get", "secrets"), ("list", "secrets"), ("list", "services"), ("watch", "services"),
    ("list", "endpointslices.discovery.k8s.io"), ("list", "configmaps"),
    ("create", "pods"), ("delete", "pods"), ("patch", "pods"), ("create", "pods", "exec"),
    ("patch", "pods", "status"), ("update", "namespaces"), ("patch", "namespaces"),
    ("create", "dnspolicies.dnsflow.io"), ("update", "dnspolicies.dnsflow.io"),
    ("patch", "dnspolicies.dnsflow.io"), ("delete", "dnspolicies.dnsflow.io"),
    ("create", "clusterdnspolicies.dnsflow.io"), ("patch", "clusterdnspolicies.dnsflow.io"),
    ("update", "dnspolicies.dnsflow.io", "status"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"), ("create", "serviceaccounts", "token"),
    ("list", "nodes"), ("create", "subjectaccessreviews.authorization.k8s.io"),
    ("*", "*"),
]


def _render(kube, namespace: str) -> str:
    out = subprocess.run([str(kube.tools / "helm"), "template", "dnsflow", str(CHART),
                          "--namespace", namespace, "--show-only", "templates/rbac.yaml"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def release(kube):
    kube.apply_crds()
    ns = f"dnsflow-rbac-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("apply", "-f", "-", input=_render(kube, ns))
    yield ns
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def _can(kube, sa: str, ns: str, verb: str, resource: str, sub: str = "",
         where: tuple[str, ...] = ("-A",)) -> bool:
    args = ["auth", "can-i", verb, resource, *where]
    if sub:
        args.append(f"--subresource={sub}")
    out = kube.kubectl(*args, as_user=f"system:serviceaccount:{ns}:{sa}", check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), out.stderr
    return answer == "yes"


def test_chart_creates_exactly_the_four_service_accounts(kube, release) -> None:
    docs = [d for d in yaml.safe_load_all(_render(kube, release)) if d]
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(sas) == set(ACCOUNTS)
    assert all(d["metadata"]["namespace"] == release for d in sas.values())
    # no token where no API access is needed
    assert {n for n, d in sas.items() if d.get("automountServiceAccountToken")} == \
        {"dnsflow-edge", "dnsflow-policies"}
    # nothing namespaced is granted: Roles, or bindings of anything but the two ClusterRoles
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "RoleBinding"}
    bound = {s["name"] for d in docs if d["kind"] == "ClusterRoleBinding"
             for s in d["subjects"]}
    assert bound == {"dnsflow-edge", "dnsflow-policies"}


@pytest.mark.parametrize("sa", ACCOUNTS)
def test_each_account_can_do_what_it_needs_and_nothing_else(kube, release, sa) -> None:
    for need in NEEDS[sa]:
        assert _can(kube, sa, release, *need), f"{sa} cannot {need}"
    # what the other components need is not granted to this one
    for other in sorted(ALL_NEEDS - set(NEEDS[sa])):
        assert not _can(kube, sa, release, *other), f"{sa} can {other}"
    for forbidden in MUST_NOT:
        assert not _can(kube, sa, release, *forbidden), f"{sa} can {forbidden}"
        assert not _can(kube, sa, release, *forbidden, where=("-n", release)), \
            f"{sa} can {forbidden} in its own namespace"


def test_tenant_roles_write_policy_but_not_its_status(kube, release) -> None:
    """A tenant bound to the aggregated edit role in its namespace writes DNSPolicies there,
    not their status (the source's verdict), not ClusterDNSPolicies, not elsewhere."""
    ns = f"tenant-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    try:
        kube.kubectl("create", "rolebinding", "t-edit", "-n", ns,
                     "--clusterrole=dnsflow-dnspolicy-edit", "--user=tenant-alice")
        kube.kubectl("create", "rolebinding", "t-view", "-n", ns,
                     "--clusterrole=dnsflow-dnspolicy-view", "--user=tenant-bob")

        def can(user: str, *args: str) -> bool:
            return kube.kubectl("auth", "can-i", *args, as_user=user,
                                check=False).stdout.strip() == "yes"

        assert can("tenant-alice", "create", "dnspolicies.dnsflow.io", "-n", ns)
        assert can("tenant-alice", "delete", "dnspolicies.dnsflow.io", "-n", ns)
        assert not can("tenant-alice", "patch", "dnspolicies.dnsflow.io", "-n", ns,
                       "--subresource=status")
        assert not can("tenant-alice", "create", "dnspolicies.dnsflow.io", "-n", release)
        assert not can("tenant-alice", "create", "clusterdnspolicies.dnsflow.io")
        assert not can("tenant-alice", "patch", "namespaces", ns)  # its tenant label
        assert can("tenant-bob", "list", "dnspolicies.dnsflow.io", "-n", ns)
        assert not can("tenant-bob", "create", "dnspolicies.dnsflow.io", "-n", ns)
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")
