import itertools

import orjson
import pytest
from streams_helpers import T0, anomalies, run

from dnsflow.schema import now_us
from dnsflow.streams.alerts import AlertEngine, RuleFileError, load_rules, parse_rules
from dnsflow.streams.config import StreamsConfig
from dnsflow.streams.logic import StreamLogic


def anomaly(ts, kind="dga", tenant="shop", severity="high", score=0.9, client="10.0.0.1"):
    return {"v": 1, "ts": ts, "kind": kind, "tenant": tenant, "client_ip": client,
            "domain": "x-example.com", "severity": severity, "score": score,
            "evidence": {"incident": f"{kind}:{client}"}}


def test_invalid_rule_file_names_field_and_keeps_last_good(tmp_path):
    good = tmp_path / "rules.yaml"
    good.write_text("rules:\n  - id: r1\n    match: {kind: [dga]}\n")
    fired = []
    engine = AlertEngine(load_rules(good), lambda rid, a: fired.append(rid))
    good.write_text("rules:\n  - id: r1\n    match: {min_severity: huge}\n")
    err = engine.reload(good)
    assert err is not None and "rules.0.match.min_severity" in err and str(good) in err
    engine.on_anomaly(anomaly(T0))
    assert fired == ["r1"]  # old rules still in force
    with pytest.raises(RuleFileError, match=r"rules\.1\.id: duplicate"):
        parse_rules({"rules": [{"id": "a"}, {"id": "a"}]}, "x.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("rules: [\n")
    with pytest.raises(RuleFileError, match="line"):
        load_rules(bad_yaml)


def test_threshold_window_and_suppression():
    rules = parse_rules({"rules": [{
        "id": "nx", "match": {"kind": ["nxdomain_burst"], "tenant": ["sh*"], "min_score": 0.5},
        "threshold": {"count": 3, "window_s": 60}, "group_by": ["tenant"],
        "suppress_s": 300}]}, "t")
    fired = []
    engine = AlertEngine(rules, lambda rid, a: fired.append(a))
    for i in range(2):
        engine.on_anomaly(anomaly(T0 + i * 1_000_000, "nxdomain_burst"))
    engine.on_anomaly(anomaly(T0 + 2_000_000, "nxdomain_burst", tenant="other"))
    engine.on_anomaly(anomaly(T0 + 3_000_000, "nxdomain_burst", score=0.2))
    assert fired == []
    engine.on_anomaly(anomaly(T0 + 4_000_000, "nxdomain_burst"))
    assert len(fired) == 1 and fired[0]["count"] == 3 and fired[0]["rule"] == "nx"
    for i in range(6):  # within suppression: quiet
        engine.on_anomaly(anomaly(T0 + 10_000_000 + i, "nxdomain_burst"))
    assert len(fired) == 1 and engine.suppressed >= 1
    for i in range(3):  # after suppression ends
        engine.on_anomaly(anomaly(T0 + 400_000_000 + i, "nxdomain_burst"))
    assert len(fired) == 2


def tunnel_events(ev, lt, tenant, n=100, t0=T0):
    return [ev(t0 + i * 200_000, tenant, "10.0.3.77", name, qtype="TXT")
            for i, name in enumerate(lt.iter_names("iodine", 1, "relay-example.net", n))]


def test_auto_response_is_opt_in_per_tenant_and_kind(ev, lt):
    cfg = StreamsConfig.model_validate({"auto_response": {
        "enabled": True, "ttl_s": 120, "tenants": {"analytics": ["tunneling"],
                                                   "shop": ["dga"]}}})
    events = tunnel_events(ev, lt, "analytics") + tunnel_events(ev, lt, "shop")
    out = run(StreamLogic(cfg), events)
    updates = [o for o in out if o.type == "policy_update"]
    assert {u.value["tenant"] for u in updates} == {"analytics"}
    first = updates[0]
    assert first.value["action"] == "deny" and first.value["domain"] == "relay-example.net"
    assert "tunneling" in first.value["cause"] and "incident=" in first.value["cause"]
    key, value = first.record
    assert key == b"auto:analytics"
    doc = orjson.loads(value)
    assert ("relay-example.net" in value.decode() and doc.get("version")) or doc
    # disabled: no updates at all
    off = run(StreamLogic(StreamsConfig()), tunnel_events(ev, lt, "analytics"))
    assert [o for o in off if o.type == "policy_update"] == []


def test_auto_deny_is_lifted_when_it_expires_in_event_time(ev, lt):
    cfg = StreamsConfig.model_validate({"auto_response": {"enabled": True, "ttl_s": 60}})
    logic = StreamLogic(cfg)
    out = run(logic, tunnel_events(ev, lt, "analytics"), flush=False)
    assert anomalies(out, "tunneling")
    # time passes (benign traffic only) beyond the expiry
    for i in range(200):
        logic.process(ev(T0 + 30_000_000 + i * 1_000_000, "analytics", "10.0.3.1",
                         "www.example.com"))
    updates = [o.value for o in out + logic.drain() if o.type == "policy_update"]
    assert updates[-1]["action"] == "lift" and updates[-1]["active"] == []
    assert all(a["version"] < b["version"] for a, b in itertools.pairwise(updates))


def test_policy_record_is_understood_by_the_policy_store(ev, lt):
    api = pytest.importorskip("dnsflow.policies.api")
    cfg = StreamsConfig.model_validate({"auto_response": {"enabled": True}})
    # the edge ignores expired denies (wall clock), so the traffic happens now
    out = run(StreamLogic(cfg), tunnel_events(ev, lt, "analytics", t0=now_us() - 30_000_000))
    store = api.PolicyStore()
    for o in out:
        if o.type == "policy_update":
            store.apply_record(*o.record)
    client = api.ClientInfo(ip="10.0.3.77", tenant="analytics", namespace="analytics")
    verdict = store.decide(client, "x.t.relay-example.net", "A")
    assert verdict.action == "deny" and verdict.rule.startswith("auto:tunneling")
    other = api.ClientInfo(ip="10.0.1.1", tenant="shop", namespace="shop")
    assert store.decide(other, "x.t.relay-example.net", "A").action == "allow"
