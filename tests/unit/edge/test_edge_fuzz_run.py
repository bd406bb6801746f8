"""A bounded-time run of the fuzz harness (``python -m bench.edge_fuzz``): a few thousand
structured and mutated packets over UDP and TCP and a few hundred DoH requests; no crash,
no malformed reply, memory bounded."""

from __future__ import annotations

from bench.edge_fuzz import run


def test_fuzz_harness_small_run() -> None:
    out = run(packets=3000, doh=300, seconds=60, seed=7, quiet=True)
    assert out["udp_packets"] + out["tcp_packets"] >= 2000, out
    assert out["doh_requests"] >= 200, out
    assert out["crashes"] == 0, out["samples"]
    assert out["malformed"] == 0, out["samples"]
    assert out["rss_mb_end"] - out["rss_mb_start"] < 200, out
