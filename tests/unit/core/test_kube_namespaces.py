"""The namespace table both Kubernetes watchers (edge identity, policy source) keep."""

from __future__ import annotations

from dnsflow.kube import TENANT_LABEL, absorb_namespaces


def _ns(name: str, **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": labels}}


def test_reset_replaces_and_events_update() -> None:
    table = {"gone": {}}
    absorb_namespaces(table, "RESET", [_ns("shop", **{TENANT_LABEL: "acme"}), _ns("db")])
    assert table == {"shop": {TENANT_LABEL: "acme"}, "db": {}}
    absorb_namespaces(table, "MODIFIED", [_ns("db", **{TENANT_LABEL: "acme"})])
    absorb_namespaces(table, "ADDED", [{"metadata": {"name": "new"}}])
    absorb_namespaces(table, "DELETED", [_ns("shop")])
    assert table == {"db": {TENANT_LABEL: "acme"}, "new": {}}


def test_a_nameless_object_is_ignored() -> None:
    table: dict[str, dict[str, str]] = {}
    absorb_namespaces(table, "ADDED", [{"metadata": {}}, {}])
    assert table == {}
