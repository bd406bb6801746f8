"""One tenant-map model (``dnsflow.tenant_map``): the edge's identity layer and
``dnsflow policy explain --client`` read a file the same way and refuse it the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsflow.edge.identity.static import load_static_map
from dnsflow.policies.tenant_map import load_tenant_map as load_for_explain
from dnsflow.tenant_map import TenantMapError, TenantMapWatcher, load_tenant_map

MAP = """
clients:
  - {cidr: 10.1.0.0/16, tenant: acme, namespace: shop, pod: web-1, service_account: web,
     labels: {app: web}}
10.2.0.0/16: globex/bank
default: {tenant: guests, namespace: lobby}
namespaces: {vault: globex}
"""


def test_the_edge_and_policies_see_the_same_clients(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text(MAP)
    edge, explain = load_static_map(f), load_for_explain(f)
    for (net, info), (cnet, e) in zip(edge.entries, load_tenant_map(f).entries, strict=True):
        assert net == cnet
        c = explain.client(str(net.network_address))
        assert (info.tenant, info.namespace, info.pod, info.service_account, dict(info.labels)) \
            == (c.tenant, c.namespace, c.pod, c.service_account, dict(c.labels)) \
            == (e.tenant, e.namespace, e.pod, e.service_account, dict(e.labels))
    assert edge.default == ("guests", "lobby") and explain.client("192.0.2.1").tenant == "guests"
    assert edge.namespaces == {"vault": "globex"}


@pytest.mark.parametrize("raw", [b"", b"# editing\n", b"\xff\xfe: a\n", b"10.0.0.0/33: a/b\n",
                                 b"clients: [{cidr: 10.0.0.0/8}]\n"])
def test_both_refuse_the_same_files_with_the_same_message(tmp_path: Path, raw: bytes) -> None:
    f = tmp_path / "m.yaml"
    f.write_bytes(raw)
    with pytest.raises(TenantMapError) as a:
        load_static_map(f)
    with pytest.raises(TenantMapError) as b:
        load_for_explain(f)
    assert str(a.value) == str(b.value) and str(f) in str(a.value)


def test_a_bad_version_never_replaces_the_good_one(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text(MAP)
    applied: list[object] = []
    w = TenantMapWatcher(f, applied.append, lambda m: m, stamp=(0, 0))
    assert w.check() is True and len(applied) == 1
    for bad in (b"", b"\xff\n", b"clients: 3\n"):
        f.write_bytes(bad)
        assert w.check() is False
    assert len(applied) == 1 and w.rejected == 3 and w.last_error
