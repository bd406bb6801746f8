"""The CRDs in deploy/crds are generated from the model and are structural schemas."""

from __future__ import annotations

from pathlib import Path

import yaml

from dnsflow.policies import crd

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_committed_crds_match_the_model():
    for folder in (DEPLOY / "crds", DEPLOY / "helm" / "dnsflow" / "crds"):
        for name, doc in crd.manifests().items():
            committed = (folder / name).read_text()
            assert committed == crd.render(doc), (
                f"regenerate: python -m dnsflow.policies.crd ({name})")


def test_status_subresource_and_columns():
    for doc in crd.manifests().values():
        version = doc["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert {"conditions", "observedGeneration", "publishedVersion", "contentHash"} <= \
            set(status)
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[-1] == "Age" and {"Accepted", "Version"} <= set(columns)


def _walk(node, path="spec"):
    assert "$ref" not in node and "anyOf" not in node and "$defs" not in node, path
    assert "type" in node, f"{path}: every node needs a type in a structural schema"
    if node["type"] == "object" and "properties" in node:
        assert "additionalProperties" not in node, path
        for k, v in node["properties"].items():
            _walk(v, f"{path}.{k}")
    if node["type"] == "array":
        _walk(node["items"], f"{path}[]")


def test_structural_schema():
    for doc in crd.manifests().values():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        _walk(schema["properties"]["spec"])
    spec = crd.manifests()["dnspolicies.yaml"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]["properties"]
    rule = spec["rules"]["items"]["properties"]
    assert rule["action"]["enum"] == ["allow", "deny", "rewrite", "redirect"]
    assert rule["denyMode"]["nullable"] is True
    assert rule["rateLimit"]["properties"]["qps"] == {
        "minimum": 0, "exclusiveMinimum": True, "type": "number"}
    assert set(rule["match"]["properties"]) == {"names", "suffixes", "regex", "types", "response"}


def test_rbac_grants_the_source_reads_and_status_patches_only():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "dnsflow.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == "dnsflow-policies")
    grants = {(res, verb) for r in role["rules"] for res in r["resources"] for verb in r["verbs"]}
    assert {v for res, v in grants if "/" not in res} == {"get", "list", "watch"}
    assert {(res, v) for res, v in grants if "/" in res} == {
        ("dnspolicies/status", "patch"), ("clusterdnspolicies/status", "patch")}
    assert {res for res, _ in grants} == {"dnspolicies", "clusterdnspolicies", "namespaces",
                                          "dnspolicies/status", "clusterdnspolicies/status"}
