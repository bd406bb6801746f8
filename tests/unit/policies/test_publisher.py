"""Publication on the in-process bus: only real changes, monotonic versions, policy_log."""

from __future__ import annotations

import orjson

from dnsflow.bus.memory import MemoryBus
from dnsflow.policies import policyset
from dnsflow.policies.api import ClientInfo, PolicyStore
from dnsflow.policies.follower import PolicyFollower
from dnsflow.policies.publisher import Publisher
from dnsflow.policies.service import build
from dnsflow.settings import Settings
from tests.helpers.policy_yaml import dns_policy
from tests.helpers.waiting import until

P1 = dns_policy("base", "shop", "acme",
                "rules: [{id: ads, match: {names: [ads.example.com]}, action: deny}]")
P2 = P1.replace("ads.example.com]", "ads.example.com, track.example.com]")
G = dns_policy("g", "bank", "globex")
ACME = ClientInfo("10.0.0.1", "acme", "shop")


def _messages(bus: MemoryBus, topic: str) -> list[dict]:
    return [orjson.loads(m.value) for p in bus.topic(topic).partitions for m in p]


async def test_publishes_only_real_changes_with_monotonic_versions():
    bus = MemoryBus()
    pub = Publisher(bus, source="test", actor="alice")
    changes = await pub.publish(policyset.from_text(P1 + "---\n" + G))
    assert [(c.key, c.version) for c in changes] == [("acme", 1), ("globex", 1)]
    assert await pub.publish(policyset.from_text(P1 + "---\n" + G)) == []
    # a fresh publisher reads the compacted topic back and agrees nothing changed
    again = Publisher(bus, source="test")
    assert await again.publish(policyset.from_text(P1 + "---\n" + G)) == []
    changes = await again.publish(policyset.from_text(P2 + "---\n" + G))
    assert [(c.key, c.version, c.previous_version) for c in changes] == [("acme", 2, 1)]
    assert changes[0].summary == "changed shop/base: ~rule ads"
    values = _messages(bus, bus.topics.policies)
    assert [(v["tenant"], v["version"]) for v in values] == [("acme", 1), ("globex", 1),
                                                             ("acme", 2)]
    logs = sorted(_messages(bus, bus.topics.name("policy_log")),
                  key=lambda r: (r["version"], r["tenant"]))
    assert set(logs[0]) == {"ts", "tenant", "version", "hash", "previous_hash", "source",
                            "actor", "change", "document"}
    assert (logs[0]["actor"], logs[0]["previous_hash"], logs[0]["change"]) == \
        ("alice", "", "added shop/base (1 rules)")
    assert logs[2]["previous_hash"] == logs[0]["hash"] != logs[2]["hash"]
    assert orjson.loads(logs[2]["document"])["policies"][0]["spec"]["rules"][0]["match"] == \
        {"names": ["ads.example.com", "track.example.com"]}


async def test_prune_empties_only_own_keys():
    bus = MemoryBus()
    other = Publisher(bus, source="kubernetes")
    await other.publish(policyset.from_text(G))
    mine = Publisher(bus, source="yaml:/x")
    await mine.publish(policyset.from_text(P1), prune=True)
    changes = await mine.publish({}, prune=True)
    assert [(c.key, c.version, c.summary) for c in changes] == [("acme", 2, "removed shop/base")]
    assert mine.current["globex"]["version"] == 1


async def test_dry_run_publishes_nothing():
    bus = MemoryBus()
    changes = await Publisher(bus, source="t").publish(policyset.from_text(P1), dry_run=True)
    assert [c.key for c in changes] == ["acme"]
    assert bus.count(bus.topics.policies) == 0


async def test_service_watches_directory_and_follower_enforces(tmp_path):
    bus = MemoryBus()
    settings = Settings(home=tmp_path, policies={"poll_interval_s": 0.05})
    (service,) = build(settings, bus)
    store = PolicyStore()
    follower = PolicyFollower(bus, store, poll_ms=20)
    pdir = tmp_path / "policies"
    await service.start()
    await follower.start()
    try:
        assert pdir.is_dir()
        (pdir / "acme.yaml").write_text(P1)
        await until(lambda: store.version("acme") == 1, timeout=4.0, what="version 1")
        assert store.decide(ACME, "ads.example.com", "A").action == "deny"
        # an invalid edit is rejected whole: version 1 stays, the DLQ says why
        (pdir / "acme.yaml").write_text(P2 + "---\nkind: Nope\n")
        await until(lambda: service.status()["rejections"], timeout=4.0, what="a rejection")
        dlq = _messages(bus, bus.topics.dlq)
        assert dlq and "document 2: kind: unknown kind 'Nope'" in dlq[0]["problems"][0]
        assert store.decide(ACME, "track.example.com", "A").action == "allow"
        (pdir / "acme.yaml").write_text(P2)
        await until(lambda: store.version("acme") == 2, timeout=4.0, what="version 2")
        assert store.decide(ACME, "track.example.com", "A").rule == "shop/base#ads"
        assert service.status()["versions"] == {"acme": 2}
    finally:
        await follower.stop()
        await service.stop()


async def test_follower_sends_bad_records_to_dlq():
    bus = MemoryBus()
    store = PolicyStore()
    follower = PolicyFollower(bus, store, poll_ms=20)
    await follower.start()
    try:
        await bus.send(bus.topics.policies, b"{oops", key=b"initech")
        await Publisher(bus, source="t").publish(policyset.from_text(P1))
        await until(lambda: store.version("acme") == 1 and bus.count(bus.topics.dlq),
                    timeout=4.0, what="version 1 and a DLQ record")
        assert follower.status()["rejected"] == 1
        dlq = _messages(bus, bus.topics.dlq)
        assert "not valid JSON" in dlq[0]["reason"] and dlq[0]["value"] == "{oops"
    finally:
        await follower.stop()


async def test_follower_applies_big_policies_via_worker_thread():
    from dnsflow.policies import records
    from dnsflow.policies.follower import THREAD_THRESHOLD

    bus = MemoryBus()
    doc = records.tenant_document("acme", [])
    doc["policies"] = [{"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
                        "metadata": {"name": "big", "namespace": "shop"},
                        "spec": {"tenant": "acme", "rules": [
                            {"id": f"r{i}", "match": {"names": [f"h{i}.example.com"]},
                             "action": "deny"} for i in range(8000)]}}]
    key, value = records.encode(doc, 1, 0, "t", "t")
    assert len(value) > THREAD_THRESHOLD
    store = PolicyStore()
    follower = PolicyFollower(bus, store, poll_ms=20)
    await follower.start()
    try:
        await bus.send(bus.topics.policies, value, key=key)
        await until(lambda: follower.status()["applied"] == 1, interval=0.01,
                    what="one applied record")
        assert store.version("acme") == 1
        assert store.decide(ACME, "h7999.example.com", "A").rule == "shop/big#r7999"
    finally:
        await follower.stop()


async def test_versions_grow_across_concurrent_publishers():
    bus = MemoryBus()
    a, b = Publisher(bus, source="cli"), Publisher(bus, source="yaml:/etc")
    await b.load()  # b read the topic before a published anything
    assert [c.version for c in await a.publish(policyset.from_text(P1))] == [1]
    changes = await b.publish(policyset.from_text(P2))
    assert [(c.version, c.previous_version) for c in changes] == [(2, 1)]
    # and a sees b's version (and content) before its next publication
    assert await a.publish(policyset.from_text(P2)) == []
    assert [c.version for c in await a.publish(policyset.from_text(P1))] == [3]
    await a.close()
    await b.close()
