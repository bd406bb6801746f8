"""`dnsflow policy apply` against the real Kafka, and an edge-like PolicyStore enforcing it.

The follower below is what an edge runs: a PolicyStore fed from the compacted topic.
The publish -> enforcement time is printed (no timed assertion: machines differ).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from dnsflow.bus.kafka import KafkaBus
from dnsflow.policies.api import ClientInfo, PolicyFollower, PolicyStore
from dnsflow.topics import Topics
from tests.helpers.policy_yaml import dns_policy

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]

V1 = dns_policy("base", "shop", "acme", """
  rules:
    - {id: ads, match: {names: [ads.example.com]}, action: deny}
""")
V2 = V1.replace("[ads.example.com]", "[ads.example.com, '*.tracker.net']")
ACME = ClientInfo("10.0.0.5", "acme", "shop")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DNSFLOW_KAFKA", None)
    return subprocess.run([sys.executable, "-m", "dnsflow", "policy", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


async def _wait(pred, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_apply_changed_file_is_enforced_by_follower(kafka_bootstrap, topic_prefix,
                                                          tmp_path):
    f = tmp_path / "acme.yaml"
    f.write_text(V1)
    common = ["--kafka", kafka_bootstrap, "--topic-prefix", topic_prefix]
    r = _cli("apply", *common, str(f))
    assert r.returncode == 0, r.stderr
    assert "published acme: new -> v1" in r.stdout

    applied_at: dict[int, int] = {}
    store = PolicyStore()

    def on_change(key: str, record: dict | None) -> None:
        if key == "acme" and record:
            applied_at[record["version"]] = time.time_ns() // 1000

    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    follower = PolicyFollower(bus, store, on_change=on_change, poll_ms=50)
    await follower.start()
    try:
        # a new edge rebuilds from the compacted topic
        await _wait(lambda: store.version("acme") == 1)
        assert store.decide(ACME, "ads.example.com", "A").rule == "shop/base#ads"
        assert store.decide(ACME, "x.tracker.net", "A").action == "allow"

        # unchanged file: nothing is published
        r = _cli("apply", *common, str(f))
        assert r.returncode == 0 and "no changes" in r.stdout, r.stdout + r.stderr

        # diff shows the change, apply publishes v2, the follower enforces it
        f.write_text(V2)
        r = _cli("diff", *common, str(f))
        assert r.returncode == 1 and "+      - '*.tracker.net'" in r.stdout, r.stdout
        r = _cli("apply", *common, str(f))
        assert r.returncode == 0 and "published acme: v1 -> v2" in r.stdout, r.stderr
        await _wait(lambda: store.version("acme") == 2)
        v = store.decide(ACME, "Deep.X.Tracker.NET.", "AAAA")
        assert (v.action, v.rule, v.policy_version) == ("deny", "shop/base#ads", 2)

        rec = store.record("acme")
        assert rec is not None
        latency_ms = (applied_at[2] - rec["published_at"]) / 1000
        print(f"\npublish -> enforcement: {latency_ms:.1f} ms")
        assert latency_ms >= 0

        # an invalid file is rejected whole: nothing published, v2 stays in force
        f.write_text(V2.replace("action: deny", "action: maybe"))
        r = _cli("apply", *common, str(f))
        assert r.returncode == 1 and "spec.rules[0].action" in r.stdout
        r = _cli("show", *common, "--tenant", "acme")
        assert r.returncode == 0 and "# acme: version 2 sha256:" in r.stdout
        assert "'*.tracker.net'" in r.stdout
    finally:
        await follower.stop()
        await bus.stop()

    # the policy_log has one record per publication, for the sink
    consumer = KafkaBus(kafka_bootstrap, Topics(topic_prefix)).consumer(
        [topic_prefix + "policy_log"], None)
    await consumer.start()
    logs: list[dict] = []
    try:
        for _ in range(40):
            logs += [orjson.loads(m.value) for m in await consumer.getmany(timeout_ms=250)]
            if len(logs) >= 2:
                break
    finally:
        await consumer.stop()
    assert [(x["tenant"], x["version"]) for x in logs] == [("acme", 1), ("acme", 2)]
    assert logs[1]["previous_hash"] == logs[0]["hash"]
    assert logs[1]["change"] == "changed shop/base: ~rule ads"
    assert logs[1]["source"] == "cli"


async def test_apply_watch_republishes_on_change(kafka_bootstrap, topic_prefix, tmp_path):
    """`dnsflow policy apply --watch DIR`: the policy source as its own process."""
    import signal

    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "acme.yaml").write_text(V1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "policy", "apply", "--watch", "--interval", "0.1",
         "--kafka", kafka_bootstrap, "--topic-prefix", topic_prefix, str(pdir)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    store = PolicyStore()
    follower = PolicyFollower(bus, store, poll_ms=50)
    await follower.start()
    try:
        await _wait(lambda: store.version("acme") == 1, 60)
        (pdir / "acme.yaml").write_text(V2)
        await _wait(lambda: store.version("acme") == 2)
        assert store.decide(ACME, "x.tracker.net", "A").action == "deny"
        # a broken edit is reported and changes nothing
        (pdir / "acme.yaml").write_text(V2 + "---\nkind: Nope\n")
        await asyncio.sleep(1.0)
        assert store.version("acme") == 2
    finally:
        await follower.stop()
        await bus.stop()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert "published acme: new -> v1" in out and "published acme: v1 -> v2" in out, out + err
    assert "document 2: kind: unknown kind 'Nope'" in out
    assert proc.returncode == 0  # graceful stop on SIGTERM
