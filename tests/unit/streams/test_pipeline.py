"""The one streams pipeline both drivers run (issue #15): decode → DLQ → order → logic →
clock → publish, with webhooks and rule reload — here without any bus."""

from __future__ import annotations

import os

import orjson
from streams_helpers import T0

from dnsflow.settings import Settings
from dnsflow.streams.pipeline import StreamsPipeline
from dnsflow.topics import Topics


def _rules(rule_id: str, kind: str) -> str:
    return (f"rules:\n  - id: {rule_id}\n    match: {{kind: [{kind}]}}\n"
            f"    webhook: {{url: \"http://127.0.0.1:9/{rule_id}\"}}\n")


def _pipeline(tmp_path, track: bool = False):
    rules = tmp_path / "rules.yaml"
    rules.write_text(_rules("tunnel-hook", "tunneling"))
    sent: dict[str, list] = {}

    async def send(topic, records):
        sent.setdefault(topic, []).extend(records)
        return True

    settings = Settings(streams={"alert_rules": str(rules)})
    p = StreamsPipeline(settings, Topics("x."), send, track_offsets=track)
    posted: list[tuple[str, dict]] = []
    p.webhooks.submit = lambda hook, alert: posted.append((hook.url, alert))  # type: ignore
    return p, rules, sent, posted


def _rows(events, part=0, start=0):
    return [(part, start + i, e["tenant"].encode(), orjson.dumps(e))
            for i, e in enumerate(events)]


async def test_pipeline_dead_letters_publishes_posts_webhooks_and_reloads_rules(
        tmp_path, ev, lt):
    p, rules, sent, posted = _pipeline(tmp_path)
    names = list(lt.iter_names("iodine", 1, "relay-example.net", 60))
    events = [ev(T0 + i * 200_000, "analytics", "10.0.3.77", n, qtype="TXT")
              for i, n in enumerate(names)]
    rows = _rows(events[::-1])  # out of order: the batch is sorted in event time
    rows.insert(3, (0, 999, b"analytics", b"{broken"))
    await p.handle("x.events", rows)
    assert p.dlq == 1 and len(sent["x.dlq"]) == 1
    assert orjson.loads(sent["x.dlq"][0][1])["offset"] == 999
    assert p.logic.events == 60 and p.logic.late_dropped == 0
    anomalies = [orjson.loads(v) for _, v in sent["x.anomalies"]]
    assert anomalies[0]["kind"] == "tunneling"
    assert [a["rule"] for _, a in posted] == ["tunnel-hook"]
    assert posted[0][0].endswith("/tunnel-hook")
    assert [k for k, _ in sent["x.alerts"]] == [b"tunnel-hook"]

    # the rule file changes: the next alerts follow the new rules
    rules.write_text(_rules("dga-hook", "dga"))
    st = rules.stat()
    os.utime(rules, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert p.maybe_reload_rules(every_call=True)
    assert [r.id for r in p.logic.alerts.rules.rules] == ["dga-hook"]
    rules.write_text("rules: [{id: 'bad id!'}]\n")
    os.utime(rules, ns=(st.st_atime_ns, st.st_mtime_ns + 4_000_000_000))
    assert not p.maybe_reload_rules(every_call=True)  # a bad edit keeps the last good set
    assert [r.id for r in p.logic.alerts.rules.rules] == ["dga-hook"]
    more = [ev(T0 + 20_000_000 + i * 500_000, "shop", "10.0.0.66", n, rcode="NXDOMAIN")
            for i, n in enumerate(lt.dga_family("necurs", 2, 40))]
    await p.handle("x.events", _rows(more, part=1))
    assert [a["rule"] for _, a in posted] == ["tunnel-hook", "dga-hook"]


async def test_pipeline_tracks_offsets_and_skips_redelivered_records(tmp_path, ev):
    p, _, _, _ = _pipeline(tmp_path, track=True)
    events = [ev(T0 + i * 100_000, "shop", "10.0.0.1", "www.example.com") for i in range(10)]
    await p.handle("x.events", _rows(events, part=2))
    await p.handle("x.events", _rows(events, part=2))  # re-delivered after a restart
    assert p.logic.events == 10 and p.duplicates == 10
    assert p.done == {2: 9} and p.touched == {2} and p.owner == {"shop": 2}
