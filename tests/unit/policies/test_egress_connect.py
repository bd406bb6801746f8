"""``dnsflow policy explain --client IP --connect ADDR:PORT`` (#17) through the real CLI,
against policy files and a chDB store the real sink filled (tests/helpers/egress_seed.py)."""

from __future__ import annotations

import json

import pytest

from dnsflow.cli import main
from tests.helpers.egress_seed import seeded_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return seeded_dir(tmp_path_factory, "egress")


def explain(setup, capsys, *argv: str) -> tuple[int, str, str]:
    d, dsn = setup
    rc = main(["policy", "explain", *argv, "--tenant-map", str(d / "map.yaml"),
               "--clickhouse", dsn, "--home", str(d), str(d / "p.yaml")])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("client, connect, expect", [
    ("10.1.0.5", "203.0.113.7:443", ["decision: allow", "api.stripe.com was answered with "
                                     "203.0.113.7", "rule shop/base#stripe", "allowed until",
                                     "port:     443/tcp allowed by shop/base#stripe"]),
    ("10.1.0.5", "203.0.113.7:22", ["decision: drop", "port 22/tcp is allowed by no rule"]),
    ("10.1.0.5", "203.0.113.8:443/tcp", ["decision: drop", "expired at"]),
    ("10.1.0.5", "192.0.2.99:443", ["decision: drop", "no allowed name resolved to this "
                                    "address", "dropped:  1 attempt(s)"]),
    ("10.1.0.6", "198.51.100.20:443", ["decision: allow", "bucket.s3.amazonaws.com",
                                       "from dns_events", "unknown"]),
    ("10.1.0.6", "198.51.100.21:443", ["decision: drop", "no allowed name resolved"]),
    ("10.1.1.9", "203.0.113.7:443", ["decision: not_enforced", "no egress rule selects"]),
    ("10.1.2.3", "198.51.100.21:8080", ["egress:   audit", "decision: would_drop",
                                        "would be dropped"]),
])
def test_explain_connect(setup, capsys, client, connect, expect) -> None:
    rc, out, err = explain(setup, capsys, "--client", client, "--connect", connect)
    assert rc == 0, err
    for fragment in expect:
        assert fragment in out, out


def test_explain_connect_json(setup, capsys) -> None:
    rc, out, _ = explain(setup, capsys, "--client", "10.1.0.5", "--connect",
                         "203.0.113.7:443", "--json")
    got = json.loads(out)
    assert rc == 0 and got["decision"] == "allow" and got["mode"] == "enforce"
    assert got["allowed_by"]["name"] == "api.stripe.com"
    assert got["allowed_by"]["source"] == "egress_events"
    assert got["allowed_by"]["expires_us"] - got["allowed_by"]["at_us"] == 3600 * 10**6


@pytest.mark.parametrize("argv, needle", [
    (["--client", "10.1.0.5", "--connect", "203.0.113.7"], "expected ADDRESS:PORT"),
    (["--client", "10.1.0.5", "--connect", "api.stripe.com:443"], "is not an IP address"),
    (["--client", "10.1.0.5", "--connect", "203.0.113.7:99999"], "is not 1..65535"),
    (["--client", "10.1.0.5", "--connect", "203.0.113.7:443/icmp"], "not tcp, udp or sctp"),
    (["--client", "10.1.0.5", "--connect", "203.0.113.7:443", "--since", "1y"], "--since"),
    (["--client", "192.0.2.1", "--connect", "203.0.113.7:443"], "192.0.2.1 is in no tenant"),
])
def test_bad_input_is_named(setup, capsys, argv, needle) -> None:
    rc, _, err = explain(setup, capsys, *argv)
    assert rc == 2 and needle in err and "Traceback" not in err, err


def test_connect_needs_a_client_address(setup, capsys) -> None:
    d, _ = setup
    assert main(["policy", "explain", "--tenant", "acme", "--connect", "203.0.113.7:443",
                 str(d / "p.yaml")]) == 2
    assert "--connect needs --client IP" in capsys.readouterr().err


def test_clickhouse_unreachable_is_exit_3(setup, capsys) -> None:
    d, _ = setup
    rc = main(["policy", "explain", "--client", "10.1.0.5", "--connect", "203.0.113.7:443",
               "--tenant-map", str(d / "map.yaml"), "--clickhouse",
               f"chdb://{d / 'nothing-here'}", str(d / "p.yaml")])
    err = capsys.readouterr().err
    assert rc == 3 and "no data at" in err, err
