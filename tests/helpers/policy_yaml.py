"""Policy documents as YAML text: the header every document repeats is written here once, so a
test spells out only the part of the spec it is about; and a PolicyStore built from such text
the way an edge builds it after ``apply`` (one record per key, global first)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from dnsflow.policies import policyset, records
from dnsflow.policies.api import PolicyStore

API_VERSION = "dnsflow.io/v1"


def document(spec: str, kind: str = "DNSPolicy", meta: str = "{name: p, namespace: shop}") -> str:
    """One document of any kind; ``spec`` is YAML (dedented, then indented under ``spec:``)."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"apiVersion: {API_VERSION}\nkind: {kind}\nmetadata: {meta}\nspec:\n{body}\n"


def dns_policy(name: str, namespace: str, tenant: str, spec: str = "") -> str:
    """A tenant's DNSPolicy ``namespace/name``; ``spec`` is the rest of it after ``tenant``."""
    rest = textwrap.dedent(spec).strip("\n")
    return document(f"tenant: {tenant}\n{rest}", meta=f"{{name: {name}, namespace: {namespace}}}")


def cluster_policy(name: str, spec: str) -> str:
    """A ClusterDNSPolicy (no namespace, no tenant)."""
    return document(spec, kind="ClusterDNSPolicy", meta=f"{{name: {name}}}")


def documents(*docs: str) -> str:
    """Several documents in one file."""
    return "---\n".join(docs)


def store_from_yaml(text: str, ns_map: Mapping[str, str] | None = None, version: int = 1,
                    store: PolicyStore | None = None) -> PolicyStore:
    """A store that applied every document of ``text`` as version ``version``."""
    store = store or PolicyStore()
    if ns_map is not None:
        store.set_namespace_tenants(ns_map)
    docs = policyset.from_text(text, "test.yaml")
    for key in sorted(docs, key=lambda k: (k != records.GLOBAL, k)):
        k, v = records.encode(docs[key], version, 1, "test", "tester")
        assert store.apply_record(k, v)
    return store
