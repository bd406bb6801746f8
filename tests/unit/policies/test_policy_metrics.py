"""The policy source's readiness and metrics follow its publishes: not ready before the first
one, ready after it, not ready again (with the error and its time) when Kafka refuses one;
rejected sets are counted and do not change readiness."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dnsflow.bus.base import BusError
from dnsflow.bus.memory import MemoryBus
from dnsflow.policies import policyset
from dnsflow.policies.metrics import PolicySourceCollector, PublishTracker
from dnsflow.policies.publisher import Publisher
from tests.helpers.policy_yaml import dns_policy


def scrape(tracker: PublishTracker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(PolicySourceCollector(tracker))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def docs(rule: str) -> dict:
    return policyset.from_text(dns_policy("base", "shop", "shop", f"rules: [{{id: r, match: "
                                          f"{{names: [{rule}]}}, action: deny}}]"), "p.yaml")


async def test_readiness_and_metrics_follow_the_publishes(monkeypatch) -> None:
    bus = MemoryBus()
    await bus.start()
    tracker = PublishTracker()
    pub = tracker.wrap(Publisher(bus, source="cli", actor="tester"))
    assert tracker.readiness()[0] is False  # nothing published yet
    await pub.publish(docs("a.example.com"))
    await pub.publish(docs("b.example.com"))
    ok, detail = tracker.readiness()
    assert ok and detail["publishes"] == 2
    m = scrape(tracker)
    assert m[("dnsflow_policies_published_version", (("tenant", "shop"),))] == 2
    assert m[("dnsflow_policies_published_changes_total", ())] == 2
    assert m[("dnsflow_policies_last_publish_ok", ())] == 1
    assert m[("dnsflow_policies_last_error_timestamp_seconds", ())] == 0

    tracker.rejected(3)  # a set that did not validate: counted, still ready
    assert tracker.readiness()[0] is True

    async def refuse(*_a: object, **_k: object) -> None:
        raise BusError("kafka 127.0.0.1:9: connection refused")

    monkeypatch.setattr(bus, "send_many", refuse)
    with pytest.raises(BusError):  # the caller sees the failure as before
        await pub.publish(docs("c.example.com"))
    ok, detail = tracker.readiness()
    assert not ok and "connection refused" in detail["last_error"]
    m = scrape(tracker)
    assert m[("dnsflow_policies_publish_errors_total", ())] == 1
    assert m[("dnsflow_policies_rejected_sets_total", ())] == 1
    assert m[("dnsflow_policies_rejected_records_total", ())] == 3
    assert m[("dnsflow_policies_last_publish_ok", ())] == 0
    assert m[("dnsflow_policies_last_error_timestamp_seconds", ())] > 0
    assert m[("dnsflow_policies_published_version", (("tenant", "shop"),))] == 2
