"""Generate the CustomResourceDefinitions from the pydantic model, so the API server's
OpenAPI schema and dnsflow's validation cannot drift apart.

    python -m dnsflow.policies.crd deploy/crds   # dnspolicies.yaml, clusterdnspolicies.yaml

The output is a Kubernetes *structural* schema: references inlined, ``anyOf null`` turned
into ``nullable``, OpenAPI v3.0 ``exclusiveMinimum``, no defaults (objects stay as written;
dnsflow applies its defaults).

On top of what the JSON schema of the model says, :data:`CONSTRAINTS` adds what the API
server can judge at ``kubectl apply``, mirroring the model's validators: ``pattern``s for
names and ids, CEL ``x-kubernetes-validations`` with the model's messages for upstream URLs,
record types, CIDRs and the rule's action/field consistency. CEL rules have a cost budget
that the API server estimates from the largest lists and strings, so lists and strings get
``maxItems``/``maxLength`` bounds (generous next to the 1.5 MiB object limit). What CEL
cannot judge -- RE2 regex compilation, record data, conflicts and unreachable rules across
documents, tenancy -- is judged by the policy source, which reports it in the resource's
``status`` (``Accepted`` condition, see policies/sources/kubernetes.py).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import dns.rdatatype
import yaml
from pydantic import BaseModel

from dnsflow.policies.model import (
    API_VERSION,
    MAX_REGEX_LEN,
    UPSTREAM_SCHEMES,
    ClusterDNSPolicySpec,
    DNSPolicySpec,
)

GROUP, VERSION = API_VERSION.split("/")
HELM_CRDS = "deploy/helm/dnsflow/crds"
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


# ---------------------------------------------------------------- what the API server judges
# Labels of letters (any case: names are lower-cased), digits, '-', '_' or non-ASCII (IDNs
# are stored as punycode), none empty, '*.' only first; the finer label rules (no leading or
# trailing '-', 63 octets) are dnsflow's. Kept short: the API server prints it on a mismatch.
NAME_PATTERN = r"^([-\w[:^ascii:]]+\.)*[-\w[:^ascii:]]+\.?$"
WILDCARD_NAME_PATTERN = r"^(\*\.)?([-\w[:^ascii:]]+\.)*[-\w[:^ascii:]]+\.?$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# toFQDNs matchPattern: '*' alone, or dot-separated labels of name characters and '*'
FQDN_PATTERN_PATTERN = r"^(\*|[-\w*]+(\.[-\w*]+)*\.?)$"
RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
MAX_NAME = 254      # 253 plus the optional trailing dot
MAX_UPSTREAM = 512
# list bounds: what the CEL cost estimate multiplies by
MAX_RULES = 512
MAX_PATTERNS = 4096  # names / suffixes per rule (block lists)
MAX_REGEXES = 64
MAX_TYPES = 64
MAX_UPSTREAMS = 8
MAX_RECORDS = 1024
MAX_CIDRS = 64

_QTYPES = sorted(t.name for t in dns.rdatatype.RdataType if not t.name.startswith("TYPE"))


def _rule(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


# Names are checked by pattern only: a CEL rule per name would cost rules x names per
# object in the API server's estimate (block lists have thousands of names per rule).
_NAME = {"maxLength": MAX_NAME, "pattern": NAME_PATTERN}
_WILD_NAME = {"maxLength": MAX_NAME, "pattern": WILDCARD_NAME_PATTERN}
_K8S_NAME = {"maxLength": 253, "pattern": K8S_NAME_PATTERN}
# scheme://host..., a path only for https/doh (as check_upstream); the scheme has its own
# message, the rest is the pattern's
UPSTREAM_PATTERN = (r"^((udp|tcp|tls|dot)://[^/?#:][^/]*(/([?#].*)?)?"
                    r"|(https|doh)://[^/?#:].*)$")
_UPSTREAM = {"maxLength": MAX_UPSTREAM, "pattern": UPSTREAM_PATTERN,
             "x-kubernetes-validations": [
                 _rule(repr([f"{s}://" for s in UPSTREAM_SCHEMES]).replace('"', "'")
                       + ".exists(p, self.startsWith(p))",
                       "upstream must start with udp://, tcp://, tls:// (dot://) or https:// "
                       "(doh://)")]}
_QTYPE = {"maxLength": 16, "x-kubernetes-validations": [
    _rule("self.upperAscii().replace('-', '_') in " + repr(_QTYPES).replace('"', "'")
          + " || self.upperAscii().matches('^TYPE[0-9]{1,5}$')",
          "unknown DNS record type (a mnemonic such as A, AAAA, CNAME, TXT, or TYPEnnn)")]}
_CIDR = {"maxLength": 64, "x-kubernetes-validations": [
    _rule("isCIDR(self) ? cidr(self) == cidr(self).masked() : isIP(self)",
          "bad CIDR: an address or a network with its host bits zero, e.g. 10.0.0.0/8")]}
_RULE_RULES = [
    _rule("(self.action == 'rewrite') == has(self.rewrite)",
          "'rewrite' is required with action rewrite and only allowed with it"),
    _rule("(self.action == 'redirect') == has(self.redirect)",
          "'redirect' is required with action redirect and only allowed with it"),
    _rule("!has(self.denyMode) || self.action == 'deny'",
          "'denyMode' is only allowed with action deny"),
    _rule("!has(self.rateLimit) || self.action != 'deny'",
          "'rateLimit' makes no sense with action deny"),
    _rule("!has(self.match) || !has(self.match.response) || self.action != 'redirect'",
          "a response rule (match.response) cannot redirect: the query was already answered"),
]

_K8S_NAME_OR_ALL = {"maxLength": 253, "pattern": r"^(\*|" + K8S_NAME_PATTERN[1:-1] + r")$"}
_RULE_ID = {"pattern": RULE_ID_PATTERN, "maxLength": 128}


def _list(path: str, max_items: int, item: dict[str, Any] | None = None
          ) -> dict[str, dict[str, Any]]:
    """A list of at most ``max_items`` (what the CEL cost estimate multiplies by), each item
    constrained by ``item``."""
    out: dict[str, dict[str, Any]] = {path: {"maxItems": max_items}}
    if item is not None:
        out[f"{path}[]"] = item
    return out


def _clients(path: str) -> dict[str, dict[str, Any]]:
    """A client selector: a policy's ``clients`` and an egress rule's."""
    return {**_list(f"{path}.namespaces", 256, _K8S_NAME_OR_ALL),
            **_list(f"{path}.serviceAccounts", 256, {"maxLength": 253}),
            **_list(f"{path}.tenants", 256, _K8S_NAME)}


# path inside spec ("[]" = the items of a list) -> what to add to that schema node
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "tenant": _K8S_NAME,
    **_clients("clients"),
    **_list("rules", MAX_RULES, {"x-kubernetes-validations": _RULE_RULES}),
    "rules[].id": _RULE_ID,
    **_list("rules[].match.names", MAX_PATTERNS, _WILD_NAME),
    **_list("rules[].match.suffixes", MAX_PATTERNS, _NAME),
    **_list("rules[].match.regex", MAX_REGEXES, {"maxLength": MAX_REGEX_LEN, "minLength": 1}),
    **_list("rules[].match.types", MAX_TYPES, _QTYPE),
    "rules[].match.response": {"x-kubernetes-validations": [
        _rule("(has(self.answerCIDRs) && size(self.answerCIDRs) > 0) || "
              "(has(self.rcodes) && size(self.rcodes) > 0)",
              "response match needs answerCIDRs or rcodes")]},
    **_list("rules[].match.response.answerCIDRs", MAX_CIDRS, _CIDR),
    **_list("rules[].match.response.rcodes", 8),
    "rules[].rewrite": {"x-kubernetes-validations": [
        _rule("(has(self.records) && size(self.records) > 0) != has(self.cname)",
              "rewrite needs exactly one of 'records' or 'cname'")]},
    **_list("rules[].rewrite.records", 64),
    "rules[].rewrite.records[].type": _QTYPE,
    "rules[].rewrite.records[].value": {"maxLength": 4096},
    "rules[].rewrite.cname": _NAME,
    **_list("rules[].redirect.upstreams", MAX_UPSTREAMS, _UPSTREAM),
    **_list("view.records", MAX_RECORDS),
    "view.records[].name": _WILD_NAME,
    "view.records[].type": _QTYPE,
    "view.records[].value": {"maxLength": 4096},
    **_list("view.searchDomains", 64, _NAME),
    **_list("view.upstreams", MAX_UPSTREAMS, _UPSTREAM),
    **_list("egress", MAX_RULES),
    "egress[].id": _RULE_ID,
    **_list("egress[].toFQDNs", MAX_PATTERNS, {"x-kubernetes-validations": [
        _rule("has(self.matchName) != has(self.matchPattern)",
              "needs exactly one of 'matchName' or 'matchPattern'")]}),
    "egress[].toFQDNs[].matchName": _NAME,
    "egress[].toFQDNs[].matchPattern": {"maxLength": MAX_NAME,
                                        "pattern": FQDN_PATTERN_PATTERN},
    **_list("egress[].ports", 64),
    **_clients("egress[].clients"),
    **_list("exports", 1024),
    "exports[].service": {"maxLength": 63, "pattern": K8S_NAME_PATTERN},
    **_list("exports[].to", 256, _K8S_NAME_OR_ALL),
}


def _node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        items = part.endswith("[]")
        key = part[:-2] if items else part
        node = (node or {}).get("properties", {}).get(key)
        if node is not None and items:
            node = node.get("items")
        if node is None:
            return None
    return node


def constrain(schema: dict[str, Any]) -> dict[str, Any]:
    """Add :data:`CONSTRAINTS` to a structural spec schema (paths absent from it, e.g.
    ``view`` in ClusterDNSPolicy, are skipped)."""
    for path, extra in CONSTRAINTS.items():
        node = _node(schema, path)
        if node is not None:
            node.update(copy.deepcopy(extra))
    return schema


def spec_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return constrain(_structural(raw, raw.get("$defs", {})))


def _condition() -> dict[str, Any]:
    return {"type": "object", "required": ["type", "status"], "properties": {
        "type": {"type": "string", "maxLength": 64},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "maxLength": 128},
        "message": {"type": "string", "maxLength": 32768},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
    }}


STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "written by the dnsflow policy source: whether this generation is in force",
    "properties": {
        "conditions": {"type": "array", "maxItems": 8, "items": _condition(),
                       "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["type"]},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "tenant": {"type": "string", "description": "the tenant whose policy this is "
                   "(_global for cluster policy)"},
        "publishedVersion": {"type": "integer", "format": "int64", "minimum": 0,
                             "description": "version of the tenant's policy in force"},
        "contentHash": {"type": "string", "description": "hash of the tenant's policy in force"},
    },
}
_STATUS_COLUMNS = [
    {"name": "Accepted", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Accepted")].status'},
    {"name": "Version", "type": "integer", "jsonPath": ".status.publishedVersion"},
    {"name": "Reason", "type": "string", "priority": 1,
     "jsonPath": '.status.conditions[?(@.type=="Accepted")].reason'},
    {"name": "Message", "type": "string", "priority": 1,
     "jsonPath": '.status.conditions[?(@.type=="Accepted")].message'},
]


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
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    *columns, *_STATUS_COLUMNS,
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
                        "status": STATUS_SCHEMA,
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
                                     "jsonPath": ".status.tenant"},
                                    {"name": "Priority", "type": "integer",
                                     "jsonPath": ".spec.priority"},
                                    {"name": "Isolation", "type": "string", "priority": 1,
                                     "jsonPath": ".spec.isolation"}]),
        "clusterdnspolicies.yaml": crd("ClusterDNSPolicy", "clusterdnspolicies", "cdnsp",
                                       "Cluster", ClusterDNSPolicySpec, [
                                           {"name": "Tier", "type": "string",
                                            "jsonPath": ".spec.tier"},
                                           {"name": "Priority", "type": "integer",
                                            "jsonPath": ".spec.priority"}]),
    }


def render(doc: dict[str, Any]) -> str:
    head = ("# Generated by `python -m dnsflow.policies.crd` (deploy/crds and "
            "deploy/helm/dnsflow/crds) from policies/model.py: do not edit.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    """Write the CRDs into each folder given (default: deploy/crds and the Helm chart's)."""
    outs = [Path(a) for a in argv] or [Path("deploy/crds"), Path(HELM_CRDS)]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
        for name, doc in manifests().items():
            (out / name).write_text(render(doc))
            print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
