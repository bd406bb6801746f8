"""The Helm chart (deploy/helm/dnsflow) against a real kube-apiserver (scripts/kube-local):
`helm lint`, `helm template | kubectl apply --dry-run=server` (CRDs applied first), the
generated deploy/dnsflow.yaml is what the chart renders, and the edge's pod spec holds what
the node-local deployment needs."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "dnsflow"


def helm(kube, *args: str, input: str | None = None) -> str:
    out = subprocess.run([str(kube.tools / "helm"), *args], input=input, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"helm {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def render(kube, namespace: str = "dnsflow-system", *sets: str) -> str:
    flags = [x for s in sets for x in ("--set", s)]
    return helm(kube, "template", "dnsflow", str(CHART), "--namespace", namespace, *flags)


def crd_dir() -> Path:
    mine = CHART / "crds"
    return mine if mine.is_dir() and any(mine.glob("*.yaml")) else ROOT / "deploy" / "crds"


def test_helm_lint(kube) -> None:
    out = helm(kube, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("sets", [
    (),
    ("existingSecret=my-dnsflow", "edge.localIPs={169.254.20.10,10.96.0.10}",
     "edge.workers=4", "edge.notrack=false", "streams.enabled=false"),
], ids=["defaults", "existing-secret-two-ips"])
def test_rendered_chart_is_accepted_by_the_api_server(kube, sets: tuple[str, ...]) -> None:
    kube.kubectl("apply", "--server-side", "-f", str(crd_dir()))
    ns = f"dnsflow-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    try:
        manifest = render(kube, ns, *sets)
        out = kube.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=manifest)
        applied = out.stdout
        for kind_name in ("daemonset.apps/dnsflow-edge", "configmap/dnsflow-edge",
                          "deployment.apps/dnsflow-sink", "deployment.apps/dnsflow-policies",
                          "poddisruptionbudget.policy/dnsflow-edge"):
            assert kind_name in applied, applied
        assert ("secret/dnsflow " in applied) == (not sets)
        assert ("deployment.apps/dnsflow-streams" in applied) == (not sets)
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_generated_manifests_match_the_chart(kube) -> None:
    committed = (ROOT / "deploy" / "dnsflow.yaml").read_text()
    assert committed.startswith("# GENERATED from deploy/helm/dnsflow")
    body = committed[committed.index("---\n"):]  # after the header
    assert body.strip() == render(kube).strip(), (
        "deploy/dnsflow.yaml is stale: run scripts/render-manifests")


def test_edge_pod_spec_is_node_local_and_least_privilege(kube) -> None:
    docs = [d for d in yaml.safe_load_all(render(kube)) if d]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["dnsPolicy"] == "Default"
    assert pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    ann = ds["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9153"
    init = {c["name"]: c for c in pod["initContainers"]}
    assert init["node-local-setup"]["securityContext"]["capabilities"] == {
        "drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert init["data-dir"]["securityContext"]["capabilities"] == {
        "drop": ["ALL"], "add": ["CHOWN"]}
    (edge,) = pod["containers"]
    sc = edge["securityContext"]
    assert sc["runAsUser"] == 65534 and sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert "$(HOST_IP):9153" in edge["args"]  # scrapeable on the node's IP
    assert {p["path"] for k in ("livenessProbe", "readinessProbe")
            for p in [edge[k]["httpGet"]]} == {"/healthz", "/readyz"}
    env = {e["name"]: e for e in edge["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["DNSFLOW_HOME"]["value"] == "/var/lib/dnsflow"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["hostPath"]["type"] == "DirectoryOrCreate"
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
