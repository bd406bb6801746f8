from streams_helpers import T0, anomalies, make_logic, run


def steady(ev, tenant, client, per_s, seconds, start=0):
    step = 1_000_000 // per_s
    return [ev(T0 + start * 1_000_000 + i * step, tenant, client, f"svc{i % 5}.example.com")
            for i in range(per_s * seconds)]


def test_nxdomain_burst_per_client(ev):
    events = steady(ev, "shop", "10.0.0.1", 5, 120)
    events += [ev(T0 + 30_000_000 + i * 100_000, "shop", "10.0.0.7", f"h{i}.victim-example.com",
                  rcode="NXDOMAIN") for i in range(200)]
    nx = anomalies(run(make_logic(), events), "nxdomain_burst")
    assert nx and {a["client_ip"] for a in nx} == {"10.0.0.7"}
    assert nx[0]["evidence"]["ratio"] == 1.0


def test_nxdomain_of_search_path_expansions_is_not_a_burst(ev):
    # a pod in namespace shop resolving public names with ndots:5: every lookup walks the
    # search list first (<name>.shop.svc.cluster.local, <name>.svc..., <name>.cluster.local)
    names = [f"{n}.{s}" for n in ("api.stripe.com", "stripe.com", "www.google.com")
             for s in ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")]
    events = [ev(T0 + i * 20_000, "shop", "10.0.0.1", names[i % len(names)],
                 rcode="NXDOMAIN") for i in range(3000)]
    assert anomalies(run(make_logic(), events), "nxdomain_burst") == []


def test_rate_spike_against_learned_baseline(ev):
    events = steady(ev, "shop", "10.0.0.1", 5, 300)          # 50 per pane for 5 minutes
    events += steady(ev, "shop", "10.0.0.1", 100, 10, start=300)  # 1000 in one pane
    spikes = anomalies(run(make_logic(), events), "rate_spike")
    scopes = {a["evidence"]["scope"] for a in spikes}
    assert spikes and "client" in scopes
    client = next(a for a in spikes if a["evidence"]["scope"] == "client")
    assert client["client_ip"] == "10.0.0.1" and client["evidence"]["queries"] == 1000
    assert 40 <= client["evidence"]["baseline_mean"] <= 60


def test_steady_or_gradually_growing_traffic_is_no_spike(ev):
    events = []
    for minute in range(10):
        events += steady(ev, "shop", "10.0.0.1", 20 + 5 * minute, 60, start=minute * 60)
    assert anomalies(run(make_logic(), events), "rate_spike") == []


def test_cross_tenant_discovery_uses_isolation_rule_marker(ev):
    events = [ev(T0 + i * 500_000, "payments", "10.0.2.99", f"svc{i}.shop.svc.cluster.local",
                 rcode="NXDOMAIN", decision="deny", rule="isolation:shop") for i in range(12)]
    # denies by ordinary policy rules are not discovery
    events += [ev(T0 + i * 500_000, "payments", "10.0.2.5", "ads.tracker-example.com",
                  decision="deny", rule="block-ads") for i in range(50)]
    cross = anomalies(run(make_logic(), events), "cross_tenant")
    assert cross and {a["client_ip"] for a in cross} == {"10.0.2.99"}
    assert cross[0]["evidence"]["targets"] == ["shop"]
    assert len({a["evidence"]["incident"] for a in cross}) == 1
    assert cross[-1]["evidence"]["denied"] >= 8


def test_new_domain_after_warmup_once_per_tenant(ev):
    logic = make_logic(detectors={"new_domain": {"warmup_s": 60}})
    events = steady(ev, "shop", "10.0.0.1", 2, 120)
    events += [ev(T0 + 90_000_000 + i, "shop", "10.0.0.1", "brand-new-example.com")
               for i in range(5)]
    events += [ev(T0 + 95_000_000, "shop", "10.0.0.1", "never-resolves-example.com",
                  rcode="NXDOMAIN")]
    new = anomalies(run(logic, events), "new_domain")
    assert [a["domain"] for a in new] == ["brand-new-example.com"]
    assert new[0]["severity"] == "low"
