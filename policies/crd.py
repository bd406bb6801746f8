"""Generate the CustomResourceDefinitions from the pydantic model, so the API server's
OpenAPI schema and dnsflow's validation cannot drift apart.

    python -m policies.crd deploy/crds      # writes dnspolicies.yaml, clusterdnspolicies.yaml

The output is a Kubernetes *structural* schema: references inlined, ``anyOf null`` turned
into ``nullable``, OpenAPI v3.0 ``exclusiveMinimum``, no defaults (objects stay as written;
dnsflow applies its defaults). Semantic checks (names, regexes, CIDRs, unreachable rules)
stay in dnsflow, which rejects and reports them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from policies.model import API_VERSION, ClusterDNSPolicySpec, DNSPolicySpec

GROUP, VERSION = API_VERSION.split("/")
_DROP = {"title", "default"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [n for n in any_of if n.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = _structural({**non_null[0], **rest}, defs)
            merged["nullable"] = True
            return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields; dnsflow rejects them
        out[key] = _structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def spec_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))


def crd(kind: str, plural: str, short: str, scope: str, model: type[BaseModel],
        columns: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "dnsflow"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": [short],
                      "categories": ["dnsflow"]},
            "scope": scope,
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "additionalPrinterColumns": [
                    *columns,
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": f"dnsflow {kind}; semantics in policies/README.md",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(model),
                    },
                }},
            }],
        },
    }


def manifests() -> dict[str, dict[str, Any]]:
    return {
        "dnspolicies.yaml": crd("DNSPolicy", "dnspolicies", "dnsp", "Namespaced",
                                DNSPolicySpec, [
                                    {"name": "Tenant", "type": "string",
                                     "jsonPath": ".spec.tenant"},
                                    {"name": "Priority", "type": "integer",
                                     "jsonPath": ".spec.priority"},
                                    {"name": "Isolation", "type": "string",
                                     "jsonPath": ".spec.isolation"}]),
        "clusterdnspolicies.yaml": crd("ClusterDNSPolicy", "clusterdnspolicies", "cdnsp",
                                       "Cluster", ClusterDNSPolicySpec, [
                                           {"name": "Tier", "type": "string",
                                            "jsonPath": ".spec.tier"},
                                           {"name": "Priority", "type": "integer",
                                            "jsonPath": ".spec.priority"}]),
    }


def render(doc: dict[str, Any]) -> str:
    head = ("# Generated by `python -m policies.crd deploy/crds` from policies/model.py: "
            "do not edit.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("deploy/crds")
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in manifests().items():
        (out / name).write_text(render(doc))
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
