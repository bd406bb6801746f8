"""Detection that does not depend on the edge's verdicts (issue #14): cross-tenant discovery
from the names themselves (tap and audit-mode events), NXDOMAIN bursts on cluster names that
are not search-path expansions, and new domains aggregated per tenant and window."""

from __future__ import annotations

import orjson
from streams_helpers import T0, anomalies, make_logic, run

from dnsflow.streams.replay import replay_lines

S = 1_000_000
CD = "svc.cluster.local"


def tap(ev, ts, tenant, ns, client, qname, rcode="NOERROR", **extra):
    """An event as ``dnsflow tap`` publishes it: no verdict, no rule, no policy version."""
    fields = {"namespace": ns, "cache": "none", "decision": "allow", "rule": "",
              "policy_version": 0, "upstream": ""}
    fields.update(extra)
    return ev(ts, tenant, client, qname, rcode=rcode, **fields)


def own_traffic(ev, start=0):
    """Each tenant's pods asking for their own services (what the stream learns from)."""
    out = []
    for i in range(30):
        ts = T0 + start * S + i * 500_000
        out.append(tap(ev, ts, "shop", "shop", "10.0.1.10", f"cart.shop.{CD}"))
        out.append(tap(ev, ts, "shop", "shop-db", "10.0.1.20", f"pg.shop-db.{CD}"))
        out.append(tap(ev, ts, "payments", "payments", "10.0.2.10", f"ledger.payments.{CD}"))
        out.append(tap(ev, ts, "payments", "payments", "10.0.2.10",
                       f"api.stripe.com.payments.{CD}", rcode="NXDOMAIN"))
    return out


def probes(ev, start=2, client="10.0.2.99"):
    """A debug pod of tenant payments walking tenant shop's names through a plain resolver."""
    names = [(f"web.shop.{CD}", "NOERROR"), (f"cart.shop.{CD}", "NOERROR"),
             (f"admin.shop.{CD}", "NXDOMAIN"), (f"_https._tcp.web.shop.{CD}", "NOERROR"),
             (f"web-0.web.shop.{CD}", "NOERROR"), ("10-0-1-10.shop.pod.cluster.local", "NOERROR"),
             (f"pg.shop-db.{CD}", "NOERROR"), (f"redis.shop-db.{CD}", "NXDOMAIN")]
    return [tap(ev, T0 + start * S + i * S, "payments", "payments", client, n, rcode=r)
            for i, (n, r) in enumerate(names)]


def test_tap_events_reveal_cross_tenant_discovery_from_the_names(ev):
    out = run(make_logic(), own_traffic(ev) + probes(ev))
    cross = anomalies(out, "cross_tenant")
    assert cross and {(a["tenant"], a["client_ip"]) for a in cross} == {("payments", "10.0.2.99")}
    last = cross[-1]["evidence"]
    assert last["targets"] == ["shop", "shop-db"]
    assert last["probes"] == 8 and last["denied"] == 0 and last["distinct_names"] == 8
    assert last["answered_names"] == 6  # the resolver answered them: isolation not enforced
    assert "_https._tcp.web.shop.svc.cluster.local" in last["names"]
    assert len({a["evidence"]["incident"] for a in cross}) == 1


def test_own_names_search_expansions_and_shared_namespaces_are_no_probe(ev):
    events = own_traffic(ev)
    for i in range(40):
        ts = T0 + 2 * S + i * 100_000
        # platform pods live in kube-system and default; everyone asks for the API server
        events.append(tap(ev, ts, "platform", "kube-system", "10.0.9.1",
                          f"kube-dns.kube-system.{CD}"))
        events.append(tap(ev, ts, "platform", "default", "10.0.9.2", f"kubernetes.default.{CD}"))
        events.append(tap(ev, ts, "payments", "payments", "10.0.2.11", f"kubernetes.default.{CD}"))
        events.append(tap(ev, ts, "payments", "payments", "10.0.2.11",
                          f"kube-dns.kube-system.{CD}"))
        # payments' own search path: never another tenant's name
        events.append(tap(ev, ts, "payments", "payments", "10.0.2.11",
                          f"stripe.com.payments.{CD}", rcode="NXDOMAIN"))
        events.append(tap(ev, ts, "payments", "payments", "10.0.2.11", "stripe.com.cluster.local",
                          rcode="NXDOMAIN"))
        events.append(tap(ev, ts, "shop", "shop", "10.0.1.10", f"pg.shop-db.{CD}"))  # same tenant
    assert anomalies(run(make_logic(), events), "cross_tenant") == []


def test_audit_mode_would_deny_counts_even_for_an_unknown_namespace(ev):
    # audit mode: the edge answered, and says it would have denied (rule "isolation")
    events = [ev(T0 + i * S, "payments", "10.0.2.99", f"svc{i}.vault.{CD}", namespace="payments",
                 decision="would_deny", rule="isolation", policy_version=4) for i in range(4)]
    cross = anomalies(run(make_logic(), events), "cross_tenant")
    assert cross and cross[0]["evidence"]["audit_names"] == 3  # the first 3 (min_count)
    assert cross[-1]["evidence"]["targets"] == ["vault"]


def test_edge_isolation_denies_are_counted_once_whatever_the_map(ev):
    denies = [ev(T0 + 2 * S + i * 500_000, "payments", "10.0.2.99", f"svc{i}.shop.{CD}",
                 namespace="payments", rcode="NXDOMAIN", decision="deny", rule="isolation:shop")
              for i in range(12)]
    learned = anomalies(run(make_logic(), own_traffic(ev) + denies), "cross_tenant")
    blind = anomalies(run(make_logic(detectors={"cross_tenant": {"learn": False}}),
                          own_traffic(ev) + denies), "cross_tenant")
    assert learned == blind and learned
    assert learned[0]["evidence"]["denied"] == 3 and learned[-1]["evidence"]["denied"] == 8
    assert all("probes" not in a["evidence"] for a in learned)


def test_an_edge_allow_is_an_export_unless_told_otherwise(ev):
    # tenant shop exports web to payments: an enforcing edge (policy_version > 0) allows it
    allowed = [ev(T0 + 2 * S + i * S, "payments", "10.0.2.12", f"web.shop.{CD}",
                  namespace="payments", policy_version=7) for i in range(6)]
    assert anomalies(run(make_logic(), own_traffic(ev) + allowed), "cross_tenant") == []
    strict = make_logic(detectors={"cross_tenant": {"trust_edge_allow": False}})
    assert anomalies(run(strict, own_traffic(ev) + allowed), "cross_tenant")


def test_namespace_map_from_settings_and_tenant_map_file(ev, tmp_path):
    events = [tap(ev, T0 + i * S, "payments", "payments", "10.0.2.99", f"db{i}.billing.{CD}",
                  rcode="NXDOMAIN") for i in range(4)]
    assert anomalies(run(make_logic(), events), "cross_tenant") == []  # nobody seen in billing
    cfg = {"cross_tenant": {"namespaces": {"billing": "acme"}, "learn": False}}
    assert anomalies(run(make_logic(detectors=cfg), events), "cross_tenant")
    tm = tmp_path / "tenants.yaml"
    tm.write_text("clients:\n  - {cidr: 10.5.0.0/16, tenant: acme, namespace: billing}\n")
    cfg = {"cross_tenant": {"tenant_map": str(tm)}}
    assert anomalies(run(make_logic(detectors=cfg), events), "cross_tenant")
    # a setting wins over what is learned: billing is payments' own namespace after all
    cfg = {"cross_tenant": {"namespaces": {"billing": "payments"}}}
    assert anomalies(run(make_logic(detectors=cfg), events), "cross_tenant") == []


def test_a_namespace_two_tenants_were_seen_in_is_nobodys(ev):
    events = own_traffic(ev)
    events += [tap(ev, T0 + i * S, "payments", "shop", "10.0.2.50", f"cart.shop.{CD}")
               for i in range(3)]  # a misattributed client: shop is now ambiguous
    events += probes(ev, start=20)
    cross = anomalies(run(make_logic(detectors={"cross_tenant": {"min_count": 2}}), events),
                      "cross_tenant")
    assert cross and cross[-1]["evidence"]["targets"] == ["shop-db"]


def test_ptr_answers_naming_another_tenants_pod_or_service(ev):
    events = own_traffic(ev)
    events += [tap(ev, T0 + 20 * S + i * S, "payments", "payments", "10.0.2.99",
                   f"{10 + i}.1.0.10.in-addr.arpa", qtype="PTR",
                   answers=[f"PTR 10-0-1-{10 + i}.shop.pod.cluster.local."]) for i in range(4)]
    events += [tap(ev, T0 + 20 * S + i * S, "payments", "payments", "10.0.2.98",
                   f"{i}.2.0.10.in-addr.arpa", qtype="PTR", rcode="NXDOMAIN")
               for i in range(20)]  # a sweep of unknown addresses: nothing to attribute
    cross = anomalies(run(make_logic(), events), "cross_tenant")
    assert {a["client_ip"] for a in cross} == {"10.0.2.99"}
    assert cross[-1]["evidence"]["targets"] == ["shop"]


def test_ptr_answers_count_through_the_drivers_decoder(ev):
    """The live drivers' fast decoder keeps a PTR event's answers (and only a PTR's): a
    reverse sweep answered with another tenant's pod names is found from JSON lines too."""
    from dnsflow.streams.event_decode import decode_fast

    events = own_traffic(ev)
    events += [tap(ev, T0 + 20 * S + i * S, "payments", "payments", "10.0.2.99",
                   f"{10 + i}.1.0.10.in-addr.arpa", qtype="PTR",
                   answers=[f"PTR 10-0-1-{10 + i}.shop.pod.cluster.local."]) for i in range(4)]
    lines = [orjson.dumps(e) for e in sorted(events, key=lambda e: e["ts"])]
    decoded = [decode_fast(line) for line in lines]
    assert all(d is not None for d in decoded)
    assert all(("answers" in d) == (d["qtype"] == "PTR") for d in decoded)
    out = []
    stats = replay_lines(make_logic(), lines, out.append, lambda n, msg: None)
    assert stats.bad == 0
    cross = anomalies(out, "cross_tenant")
    assert {(a["tenant"], a["client_ip"]) for a in cross} == {("payments", "10.0.2.99")}
    assert cross[-1]["evidence"]["targets"] == ["shop"]


def test_cluster_domain_is_configurable(ev):
    events = [tap(ev, T0 + i * 100_000, "shop", "shop", "10.0.1.10", "web.shop.svc.k8s.corp")
              for i in range(5)]
    events += [tap(ev, T0 + S + i * S, "payments", "payments", "10.0.2.99",
                   f"s{i}.shop.svc.k8s.corp") for i in range(4)]
    assert anomalies(run(make_logic(), events), "cross_tenant") == []
    logic = make_logic(detectors={"cluster_domain": "k8s.corp"})
    assert anomalies(run(logic, events), "cross_tenant")


def test_replay_of_tap_events_finds_the_probe(ev):
    # the decoder the drivers use leaves out answers (and an absent policy_version stays out)
    ptr = tap(ev, T0 + 3 * S, "payments", "payments", "10.0.2.99", "10.1.0.10.in-addr.arpa",
              qtype="PTR", answers=["10-0-1-10.shop.pod.cluster.local."])
    bare = tap(ev, T0 + 4 * S, "payments", "payments", "10.0.2.99", f"web.shop.{CD}")
    del bare["policy_version"]
    events = sorted([*own_traffic(ev), *probes(ev), ptr, bare], key=lambda e: e["ts"])
    lines = [orjson.dumps(e) for e in events]
    out = []
    stats = replay_lines(make_logic(), lines, out.append, lambda n, msg: None)
    assert stats.bad == 0
    assert {(a["tenant"], a["client_ip"]) for a in anomalies(out, "cross_tenant")} == {
        ("payments", "10.0.2.99")}


# ---------------------------------------------------------------- NXDOMAIN on cluster names

def test_a_deleted_service_hammered_by_a_job_is_an_nxdomain_burst(ev):
    gone = f"orders.billing.{CD}"
    events = [tap(ev, T0 + i * 20_000, "shop", "billing", "10.0.1.77", gone, rcode="NXDOMAIN")
              for i in range(3000)]  # 50/s for a minute
    events += [tap(ev, T0 + i * S, "shop", "billing", "10.0.1.78", f"api.billing.{CD}")
               for i in range(60)]
    nx = anomalies(run(make_logic(), events), "nxdomain_burst")
    client = [a for a in nx if a["evidence"]["scope"] == "client"]
    assert client and {a["client_ip"] for a in client} == {"10.0.1.77"}
    ev0 = client[0]["evidence"]
    assert ev0["name"] == gone and ev0["namespace"] == "billing" and ev0["service"] == "orders"
    assert ev0["internal"] is True and ev0["nxdomain"] == 600
    assert max(a["evidence"]["nxdomain"] for a in client) >= 1024
    assert max(a["score"] for a in client) > client[0]["score"]  # updates as it grows
    assert any(a["evidence"]["scope"] == "tenant" for a in nx)  # 3000 from the tenant too


def test_many_pods_of_a_job_together_are_a_tenant_burst(ev):
    gone = f"_grpc._tcp.ledger.payments.{CD}"
    events = [tap(ev, T0 + i * 50_000, "payments", "payments", f"10.0.2.{100 + i % 25}", gone,
                  qtype="SRV", rcode="NXDOMAIN") for i in range(1200)]  # 48 per pod
    nx = anomalies(run(make_logic(), events), "nxdomain_burst")
    assert nx and {(a["client_ip"], a["evidence"]["scope"]) for a in nx} == {("", "tenant")}
    assert nx[0]["evidence"]["form"] == "srv"


def test_public_looking_service_names_count_once_the_namespace_is_known(ev):
    # catalog.shop is also a public name (.shop): a search expansion of "catalog.shop" unless
    # namespace shop exists
    hammer = [tap(ev, T0 + 5 * S + i * 20_000, "shop", "jobs", "10.0.1.77",
                  f"catalog.shop.{CD}", rcode="NXDOMAIN") for i in range(800)]
    assert anomalies(run(make_logic(), hammer), "nxdomain_burst") == []  # shop never seen...
    events = hammer + [tap(ev, T0 + i * 100_000, "shop", "shop", "10.0.1.10", f"web.shop.{CD}")
                       for i in range(10)]
    nx = anomalies(run(make_logic(), events), "nxdomain_burst")
    assert nx and nx[0]["evidence"]["name"] == f"catalog.shop.{CD}"
    google = [tap(ev, T0 + 5 * S + i * 20_000, "shop", "jobs", "10.0.1.77",
                  f"google.com.{CD}", rcode="NXDOMAIN") for i in range(800)]
    assert anomalies(run(make_logic(), google + events[800:]), "nxdomain_burst") == []


# ---------------------------------------------------------------- new domains

FRESH = ("gardenweekly", "bluecoffee", "northbridge", "sunnyfarm", "citytimes", "greenvalley",
         "riverstone", "happykitchen", "brightpath", "oldharbor", "silverleaf", "quietforest")


def test_new_domains_make_one_record_per_tenant_and_window(ev):
    logic = make_logic(detectors={"new_domain": {"warmup_s": 60, "max_per_window": 5}})
    events = [ev(T0 + i * S, "shop", "10.0.0.1", "warm-example.com") for i in range(120)]
    events += [ev(T0 + 70 * S + i * 100_000, "shop", f"10.0.0.{2 + i % 2}",
                  f"www.{w}.com") for i, w in enumerate(FRESH)]  # window [60 s, 120 s)
    events += [ev(T0 + 130 * S, "shop", "10.0.0.9", "later-example.org")]
    events += [ev(T0 + 75 * S + i * S, "lab", "10.0.3.1", f"n{i % 3}.lab-example.net")
               for i in range(10)]  # lab is still learning
    new = anomalies(run(logic, events), "new_domain")
    assert [(a["tenant"], a["evidence"]["new_domains"]) for a in new] == [("shop", 12),
                                                                          ("shop", 1)]
    first, second = new
    assert first["evidence"]["listed"] == 5 and first["domain"] == "" and first["client_ip"] == ""
    assert [d["domain"] for d in first["evidence"]["domains"]] == [f"{w}.com" for w in FRESH[:5]]
    assert first["evidence"]["domains"][0]["first_name"] == "www.gardenweekly.com"
    assert first["evidence"]["clients"] == ["10.0.0.2", "10.0.0.3"]
    assert first["severity"] == "low" and first["ts"] == T0 + 120 * S
    assert second["domain"] == "later-example.org" and second["client_ip"] == "10.0.0.9"
    assert first["evidence"]["incident"] != second["evidence"]["incident"]
