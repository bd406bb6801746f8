"""Fixtures: `make_store` (a PolicyStore from YAML text, as an edge builds it after `apply`)
and `mk_client`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dnsflow.policies.api import ClientInfo, PolicyStore
from tests.helpers.policy_yaml import store_from_yaml

StoreFactory = Callable[..., PolicyStore]


@pytest.fixture
def make_store() -> StoreFactory:
    return store_from_yaml


def client(tenant: str = "acme", namespace: str = "shop", **kw: object) -> ClientInfo:
    return ClientInfo(ip=str(kw.pop("ip", "10.0.0.5")), tenant=tenant, namespace=namespace,
                      **kw)  # type: ignore[arg-type]


@pytest.fixture
def mk_client() -> Callable[..., ClientInfo]:
    return client
