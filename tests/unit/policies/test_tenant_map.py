"""The edge's static tenant map as read by `dnsflow policy explain --client`."""

from __future__ import annotations

import pytest

from dnsflow.policies.tenant_map import TenantMapError, load_tenant_map


def _map(tmp_path, text: str):
    f = tmp_path / "map.yaml"
    f.write_text(text)
    return load_tenant_map(f)


def test_longest_prefix_wins_and_all_shapes(tmp_path):
    m = _map(tmp_path, """
clients:
  - {cidr: 10.1.0.0/16, tenant: acme, namespace: shop, service_account: web,
     labels: {app: web}}
  - {cidr: 10.1.2.0/24, tenant: acme, namespace: blog}
10.2.0.0/16: globex/bank
10.3.0.0/16: {tenant: initech}
"fd00::/8": umbrella/lab
namespaces: {vault: globex}
default: {tenant: guests, namespace: lobby}
""")
    c = m.client("10.1.9.9")
    assert (c.tenant, c.namespace, c.service_account, dict(c.labels)) == \
        ("acme", "shop", "web", {"app": "web"})
    assert m.client("10.1.2.3").namespace == "blog"
    assert (m.client("10.2.0.1").tenant, m.client("10.2.0.1").namespace) == ("globex", "bank")
    assert m.client("10.3.0.1").namespace == "initech"
    assert m.client("fd00::1").tenant == "umbrella"
    assert (m.client("192.0.2.1").tenant, m.client("192.0.2.1").ip) == ("guests", "192.0.2.1")
    assert m.namespace_tenants() == {"shop": "acme", "blog": "acme", "bank": "globex",
                                     "initech": "initech", "lab": "umbrella", "vault": "globex"}


@pytest.mark.parametrize("text, message", [
    ("10.0.0.0/33: a/b\n", "'10.0.0.0/33' is not a CIDR"),
    ("clients: {a: 1}\n", "'clients' must be a list"),
    ("clients: [{tenant: a}]\n", "clients[0]: expected a mapping with 'cidr'"),
    ("clients: [{cidr: 10.0.0.0/8}]\n", "clients[0]: expected a mapping with 'tenant'"),
    ("10.0.0.0/8: {tenant: a, labels: [x]}\n", "'labels' must be a mapping"),
    ("namespaces: [a]\n", "namespaces: expected a mapping"),
    ("- a\n", "expected a mapping at the top level"),
    ("a: [\n", "invalid YAML"),
    ("", "empty"),
    ("# being edited\n", "empty"),
    ("clients: []\n", "empty"),
])
def test_errors_name_the_file_and_entry(tmp_path, text, message):
    with pytest.raises(TenantMapError, match=r"tenant map .*map\.yaml") as exc:
        _map(tmp_path, text)
    assert message in str(exc.value)


def test_unknown_client_without_default(tmp_path):
    m = _map(tmp_path, "10.0.0.0/8: a/b\n")
    with pytest.raises(TenantMapError, match="in no tenant map entry"):
        m.client("192.0.2.1")
    with pytest.raises(TenantMapError, match="not an IP address"):
        m.client("nope")


def test_not_utf8_is_a_clear_error(tmp_path):
    f = tmp_path / "map.yaml"
    f.write_bytes(b"10.0.0.0/8: \xff\xfe/b\n")
    with pytest.raises(TenantMapError, match=r"tenant map .*map\.yaml: not UTF-8 \(byte 12\)"):
        load_tenant_map(f)
