"""The CRDs in deploy/crds are generated from the model and are structural schemas."""

from __future__ import annotations

from pathlib import Path

import yaml

from policies import crd

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_committed_crds_match_the_model():
    for folder in (DEPLOY / "crds", DEPLOY / "helm" / "dnsflow" / "crds"):
        for name, doc in crd.manifests().items():
            committed = (folder / name).read_text()
            assert committed == crd.render(doc), f"regenerate: python -m policies.crd ({name})"


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


def test_rbac_grants_only_reads_to_the_source():
    docs = list(yaml.safe_load_all((DEPLOY / "rbac" / "policies.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    assert verbs == {"get", "list", "watch"}
    resources = {x for r in role["rules"] for x in r["resources"]}
    assert resources == {"dnspolicies", "clusterdnspolicies", "namespaces"}
