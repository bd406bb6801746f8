"""Helpers: build a PolicyStore straight from YAML text, as an edge would after `apply`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from dnsflow.policies import policyset, records
from dnsflow.policies.api import ClientInfo, PolicyStore

StoreFactory = Callable[..., PolicyStore]


def store_from_yaml(text: str, ns_map: Mapping[str, str] | None = None, version: int = 1,
                    store: PolicyStore | None = None) -> PolicyStore:
    store = store or PolicyStore()
    if ns_map is not None:
        store.set_namespace_tenants(ns_map)
    docs = policyset.from_text(text, "test.yaml")
    for key in sorted(docs, key=lambda k: (k != records.GLOBAL, k)):
        k, v = records.encode(docs[key], version, 1, "test", "tester")
        assert store.apply_record(k, v)
    return store


@pytest.fixture
def make_store() -> StoreFactory:
    return store_from_yaml


def client(tenant: str = "acme", namespace: str = "shop", **kw: object) -> ClientInfo:
    return ClientInfo(ip=str(kw.pop("ip", "10.0.0.5")), tenant=tenant, namespace=namespace,
                      **kw)  # type: ignore[arg-type]


@pytest.fixture
def mk_client() -> Callable[..., ClientInfo]:
    return client
