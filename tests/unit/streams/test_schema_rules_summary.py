import asyncio

from streams_helpers import T0, make_logic, run

from dnsflow.bus.memory import MemoryBus
from dnsflow.schema import parse_anomaly
from dnsflow.settings import Settings
from dnsflow.streams.service import build
from dnsflow.streams.summary import render, summary


def mixed(ev, lt):
    events = [ev(T0 + i * 100_000, "shop", f"10.0.0.{i % 5}", "www.example.com")
              for i in range(600)]
    events += [ev(T0 + i * 500_000, "shop", "10.0.0.66", n, rcode="NXDOMAIN")
               for i, n in enumerate(lt.dga_family("ramnit", 1, 60))]
    events += [ev(T0 + i * 200_000, "lab", "10.0.3.7", n, qtype="TXT")
               for i, n in enumerate(lt.iter_names("dnscat2", 2, "relay-example.net", 120))]
    events += [ev(T0 + i * 700_000, "pay", "10.0.2.99", f"s{i}.shop.svc.cluster.local",
                  decision="deny", rule="isolation:shop", rcode="NXDOMAIN") for i in range(20)]
    return events


def test_every_anomaly_follows_the_contract_schema(ev, lt):
    out = run(make_logic(auto_response={"enabled": True}), mixed(ev, lt))
    kinds = set()
    for o in out:
        if o.type == "anomaly":
            a = parse_anomaly(o.value)  # raises on any contract violation
            kinds.add(a.kind)
            assert o.key == a.tenant and a.evidence["incident"]
    assert {"dga", "tunneling", "cross_tenant", "nxdomain_burst"} <= kinds


def test_status_summary_lists_tenants_anomalies_alerts_and_policy_changes(ev, lt):
    logic = make_logic(auto_response={"enabled": True})
    run(logic, mixed(ev, lt))
    s = summary(logic.status())
    assert s["tenants"]["shop"]["queries"] == 660 and s["tenants"]["shop"]["anomalies"] >= 1
    text = render(logic.status())
    assert "anomaly" in text and "alert   high-severity" in text
    assert "policy  deny   lab relay-example.net" in text


async def test_service_reloads_rules_and_keeps_last_good(tmp_path, ev):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: only-dga\n    match: {kind: [dga]}\n")
    bus = MemoryBus()
    settings = Settings(streams={"alert_rules": str(rules)})
    (svc,) = build(settings, bus, rules_check_s=0.05)
    await svc.start()
    try:
        assert svc.status()["alert_rules"] == ["only-dga"]
        rules.write_text("rules:\n  - id: broken\n    threshold: {count: 0}\n")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if svc.status()["alert_rules_error"]:
                break
        st = svc.status()
        assert "rules.0.threshold.count" in st["alert_rules_error"]
        assert st["alert_rules"] == ["only-dga"]
        rules.write_text("rules:\n  - id: any-high\n    match: {min_severity: high}\n")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if svc.status()["alert_rules"] == ["any-high"]:
                break
        assert svc.status()["alert_rules"] == ["any-high"]
        assert svc.status()["alert_rules_error"] is None
    finally:
        await svc.stop()
