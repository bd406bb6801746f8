"""PolicyStore record handling: bad records are refused whole, snapshots restore everything."""

from __future__ import annotations

import orjson
import pytest

from dnsflow.policies import policyset, records
from dnsflow.policies.api import PolicyRecordError, PolicyStore
from tests.helpers.policy_yaml import dns_policy

POLICY = dns_policy("p", "shop", "acme",
                    "rules: [{id: r, match: {names: [bad.example.com]}, action: deny}]")


def _record(version: int = 1, text: str = POLICY, key: str = "acme") -> tuple[bytes, bytes]:
    return records.encode(policyset.from_text(text)[key], version, 1, "test", "t")


def _tamper(value: bytes, **changes: object) -> bytes:
    obj = orjson.loads(value)
    obj.update(changes)
    return orjson.dumps(obj)


def test_key_must_match_tenant(mk_client):
    store = PolicyStore()
    _, v = _record()
    with pytest.raises(PolicyRecordError, match="key does not match"):
        store.apply_record(b"globex", v)
    assert store.decide(mk_client(), "bad.example.com", "A").action == "allow"


@pytest.mark.parametrize("value, message", [
    (b"{not json", "not valid JSON"),
    (b"[1]", "expected a JSON object"),
    (b'{"format": 2}', "unsupported format"),
    (b'{"format": 1, "kind": "Nope"}', "unknown kind"),
])
def test_garbage_rejected(value, message):
    with pytest.raises(PolicyRecordError, match=message):
        PolicyStore().apply_record(b"acme", value)


def test_hash_mismatch_and_bad_document_keep_last_good(mk_client):
    store = PolicyStore()
    assert store.apply_record(*_record(1))
    k, v = _record(2)
    obj = orjson.loads(v)
    obj["policies"][0]["spec"]["rules"][0]["action"] = "allow"
    with pytest.raises(PolicyRecordError, match="hash does not match"):
        store.apply_record(k, orjson.dumps(obj))
    obj["policies"][0]["spec"]["rules"][0]["action"] = "explode"
    obj["hash"] = records.content_hash(obj)
    with pytest.raises(PolicyRecordError, match=r"spec\.rules\[0\]\.action"):
        store.apply_record(k, orjson.dumps(obj))
    v1 = store.decide(mk_client(), "bad.example.com", "A")
    assert (v1.action, v1.policy_version) == ("deny", 1)


def test_record_cannot_carry_other_tenants_policy():
    k, v = _record()
    obj = orjson.loads(v)
    obj["policies"][0]["spec"]["tenant"] = "globex"
    obj["hash"] = records.content_hash(obj)
    with pytest.raises(PolicyRecordError, match="belongs to tenant 'globex'"):
        PolicyStore().apply_record(k, orjson.dumps(obj))


def test_global_key_reserved():
    _, v = _record()
    obj = orjson.loads(v)
    obj["tenant"] = "_global"
    obj["hash"] = records.content_hash(obj)
    with pytest.raises(PolicyRecordError, match="reserved"):
        PolicyStore().apply_record(b"_global", orjson.dumps(obj))


def test_snapshot_round_trip(mk_client):
    from dnsflow.policies.api import AutoDeny, auto_deny_record

    store = PolicyStore()
    store.set_namespace_tenants({"shop": "acme", "bank": "globex"})
    store.apply_record(*_record(3))
    store.apply_record(*auto_deny_record(
        "acme", [AutoDeny("acme", "dga.test", 2**53, "dga", "dga")], 1))
    again = PolicyStore.from_snapshot(store.snapshot())
    c = mk_client()
    for name in ("bad.example.com", "x.dga.test", "db.bank.svc.cluster.local", "ok.org"):
        assert again.decide(c, name, "A") == store.decide(c, name, "A")
    assert again.version("acme") == 3
    with pytest.raises(PolicyRecordError, match="snapshot"):
        PolicyStore.from_snapshot(b"garbage")


def test_big_record_keeps_gc_state(mk_client):
    import gc

    from dnsflow.policies.store import GC_PAUSE_BYTES

    doc = records.tenant_document("acme", [])
    doc["policies"] = [{"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
                        "metadata": {"name": "big", "namespace": "shop"},
                        "spec": {"tenant": "acme", "rules": [
                            {"match": {"names": [f"h{i}.example.com"]}, "action": "deny"}
                            for i in range(3000)]}}]
    k, v = records.encode(doc, 1, 0, "t", "t")
    assert len(v) > GC_PAUSE_BYTES
    store = PolicyStore()
    assert gc.isenabled()
    assert store.apply_record(k, v)
    assert gc.isenabled()
    bad = orjson.loads(v)
    bad["policies"][0]["spec"]["rules"][5]["action"] = "nope"
    bad["version"], bad["hash"] = 2, records.content_hash(bad)
    with pytest.raises(PolicyRecordError):
        store.apply_record(k, orjson.dumps(bad))
    assert gc.isenabled()
    assert store.decide(mk_client(), "h2999.example.com", "A").rule == "shop/big#2999"


def test_policy_records_helper(mk_client, tmp_path):
    from dnsflow.policies.api import policy_records

    (tmp_path / "p.yaml").write_text(POLICY)
    for source in (POLICY, [tmp_path]):
        store = PolicyStore()
        for k, v in policy_records(source, version=4):
            assert store.apply_record(k, v)
        got = store.decide(mk_client(), "bad.example.com", "A")
        assert (got.rule, got.policy_version) == ("shop/p#r", 4)
