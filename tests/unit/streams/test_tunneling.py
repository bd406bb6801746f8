import random

import pytest
from streams_helpers import T0, anomalies, make_logic, run


def tool_events(ev, lt, tool, n, client="10.0.3.77", domain="relay-example.net", step=None):
    _make, qtypes, gap = lt.TUNNEL_TOOLS[tool]
    step_us = int((step if step is not None else gap) * 1_000_000)
    return [ev(T0 + i * step_us, "analytics", client, name, qtype=qtypes[i % len(qtypes)])
            for i, name in enumerate(lt.iter_names(tool, 5, domain, n))]


@pytest.mark.parametrize("tool", ["iodine", "dnscat2", "dns2tcp"])
def test_tunnel_tools_are_detected(ev, lt, tool):
    out = run(make_logic(), tool_events(ev, lt, tool, 200))
    tun = anomalies(out, "tunneling")
    assert tun and {a["domain"] for a in tun} == {"relay-example.net"}
    assert {a["evidence"]["incident"] for a in tun} == {tun[0]["evidence"]["incident"]}
    assert tun[-1]["severity"] in ("high", "critical")
    assert tun[0]["evidence"]["pattern"] == "burst"


def test_low_and_slow_exfiltration_over_an_hour(ev, lt):
    events = tool_events(ev, lt, "lowslow", 120)  # one query per 30 s
    tun = anomalies(run(make_logic(), events), "tunneling")
    assert tun and tun[0]["evidence"]["pattern"] == "low_and_slow"
    # the short window alone never sees enough
    short = make_logic(detectors={"tunneling": {"long_window_s": 60}})
    assert anomalies(run(short, events), "tunneling") == []


def test_hard_negatives(ev):
    rng = random.Random(4)
    events = []
    for i in range(3000):
        h = "".join(rng.choice("0123456789abcdef") for _ in range(40))
        events.append(ev(T0 + i * 20_000, "shop", "10.0.0.1", f"{h}.cloudfront.net"))
        events.append(ev(T0 + i * 20_000, "shop", "10.0.0.1", f"{h[:24]}.e.akamaiedge.net",
                         qtype="CNAME"))
        # long, English-like service names: many of them, not random
        svc = rng.choice(["checkout", "inventory", "recommendations", "notifications"])
        env = rng.choice(["production", "staging", "development"])
        events.append(ev(T0 + i * 20_000, "shop", "10.0.0.2",
                         f"{svc}-{env}-{i % 50}.internal-services.example.com"))
        # DNSBL lookups: reversed addresses under one zone
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        events.append(ev(T0 + i * 20_000, "mail", "10.0.5.1", f"{ip}.zen.spamhaus.org",
                         rcode="NXDOMAIN"))
    assert anomalies(run(make_logic(), events), "tunneling") == []
