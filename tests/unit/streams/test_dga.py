import random

import pytest
from streams_helpers import T0, anomalies, make_logic, run


def benign_client(ev, lt, client: str, n: int, seed: int, nx_every: int = 0):
    rng = random.Random(seed)
    top = lt.top_sites()
    out = []
    for i in range(n):
        name = rng.choice(top)
        rcode = "NXDOMAIN" if nx_every and i % nx_every == 0 else "NOERROR"
        out.append(ev(T0 + i * 100_000, "shop", client, name, rcode=rcode))
    return out


def infected(ev, lt, family: str, client: str, n: int, resolved_every: int = 0):
    names = lt.dga_family(family, 11, n)
    return [ev(T0 + i * 500_000, "shop", client, name,
               rcode="NOERROR" if resolved_every and i % resolved_every == 5 else "NXDOMAIN")
            for i, name in enumerate(names)]


@pytest.mark.parametrize("family", ["necurs", "ramnit", "conficker", "cryptolocker",
                                    "banjori", "suppobox"])
def test_infected_client_is_flagged_once_per_incident(ev, lt, family):
    events = benign_client(ev, lt, "10.0.0.1", 600, 1) + infected(ev, lt, family,
                                                                   "10.0.0.66", 40)
    out = run(make_logic(), events)
    dga = anomalies(out, "dga")
    assert dga, f"{family} not detected"
    assert {a["client_ip"] for a in dga} == {"10.0.0.66"}
    incidents = {a["evidence"]["incident"] for a in dga}
    assert len(incidents) == 1  # one incident, the rest are updates
    assert [a["evidence"]["update"] for a in dga] == list(range(len(dga)))
    assert dga[-1]["evidence"]["nxdomain_domains"] >= 8


def test_resolved_dga_domain_is_named_for_response(ev, lt):
    events = infected(ev, lt, "necurs", "10.0.0.66", 40, resolved_every=20)
    resolved = {e["qname"] for e in events if e["rcode"] == "NOERROR"}
    dga = anomalies(run(make_logic(), events), "dga")
    assert dga[-1]["domain"] in resolved
    assert dga[-1]["severity"] in ("high", "critical")


def test_hard_negatives_are_not_flagged(ev, lt):
    events = benign_client(ev, lt, "10.0.0.1", 3000, 2, nx_every=25)  # typos now and then
    rng = random.Random(3)
    for i in range(2000):  # hashed CDN and cloud hostnames
        h = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
        cdn = rng.choice(["cloudfront.net", "akamaihd.net", "azureedge.net", "fastly.net",
                          "s3.amazonaws.com", "googleusercontent.com"])
        events.append(ev(T0 + i * 50_000, "shop", "10.0.0.2", f"{h}.{cdn}"))
    for i in range(2000):  # Kubernetes search-path expansion: NXDOMAIN by design
        name = rng.choice(["api.github.com", "pypi.org", "db"])
        events.append(ev(T0 + i * 50_000, "shop", "10.0.0.3",
                         f"{name}.default.svc.cluster.local", rcode="NXDOMAIN"))
    out = run(make_logic(), events)
    assert anomalies(out, "dga") == []
    assert anomalies(out, "nxdomain_burst") == []


def test_random_looking_but_resolving_domains_alone_do_not_trigger(ev):
    # a client visiting a few odd-looking but existing domains: no NXDOMAIN context
    names = ["xkcd.com", "qzxwvjk.com", "bkjhgfds.net", "zzkqwp.org", "wqxzjv.io"]
    events = [ev(T0 + i * 1_000_000, "shop", "10.0.0.9", names[i % 5]) for i in range(100)]
    assert anomalies(run(make_logic(), events), "dga") == []


def test_slow_dictionary_dga_is_caught_over_the_long_window(ev, lt):
    names = lt.dga_family("suppobox", 3, 30)  # English-looking, one every 30 s
    events = [ev(T0 + i * 30_000_000, "shop", "10.0.0.70", n, rcode="NXDOMAIN")
              for i, n in enumerate(names)]
    # with some ordinary traffic too: 6 queries a minute
    events += [dict(e, ts=T0 + (e["ts"] - T0) * 100) for e in benign_client(ev, lt, "10.0.0.70",
                                                                            150, 5)]
    dga = anomalies(run(make_logic(), events), "dga")
    assert dga and dga[0]["evidence"]["pattern"] == "slow"
    assert dga[0]["evidence"]["window_s"] == 600
    assert 0.1 <= dga[0]["evidence"]["nxdomain_share"] < 0.5
    # the same client with a busy benign life (NXDOMAIN share 1 %) is not flagged
    busy = events + [dict(e, ts=T0 + (e["ts"] - T0) * 5)
                     for e in benign_client(ev, lt, "10.0.0.70", 3000, 6)]
    assert anomalies(run(make_logic(), busy), "dga") == []


def test_nxdomain_under_domains_the_tenant_resolved_are_not_dga(ev, lt):
    # a client whose typos hit subdomains of popular, resolving registered domains
    top = [d.removeprefix("www.") for d in lt.top_sites()[:40]]
    events = [ev(T0 + i * 100_000, "shop", "10.0.0.1", d) for i, d in enumerate(top)]
    events += [ev(T0 + 10_000_000 + i * 500_000, "shop", "10.0.0.2", f"wqw{i}.{d}",
                  rcode="NXDOMAIN") for i, d in enumerate(top)]
    assert anomalies(run(make_logic(), events), "dga") == []
