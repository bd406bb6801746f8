"""The alerting rules fire on the series the components expose, with the labels and text an
on-call engineer gets, and stay quiet below their thresholds (`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "dnsflow-rules.yaml"
SINK = 'instance="sink-1:9156",job="dnsflow-sink"'
STREAMS = 'instance="streams-1:9155",job="dnsflow-streams"'
EDGE = 'edge="node-1",instance="n1:9153",job="dnsflow-edge-metrics"'

SERIES = [
    (f"dnsflow_sink_last_error{{{SINK}}}", "0 0 1x10"),
    (f'dnsflow_streams_consumer_lag_records{{{STREAMS},topic="dnsflow.events",partition="0"}}',
     "200000x20"),
    (f'dnsflow_streams_consumer_lag_records{{{STREAMS},topic="dnsflow.events",partition="1"}}',
     "5x20"),
    (f'dnsflow_streams_detections_total{{{STREAMS},kind="dga",severity="critical"}}',
     "0 0 0 1x10"),
    (f'dnsflow_streams_detections_total{{{STREAMS},kind="tunneling",severity="low"}}',
     "0 5 10 20x10"),
    (f'dnsflow_edge_upstream_up{{{EDGE},upstream="udp://10.0.0.53:53"}}', "1 1 0x10"),
    (f'dnsflow_edge_upstream_up{{{EDGE},upstream="tls://10.0.0.54:853"}}', "1 1 1 0x10"),
    (f'dnsflow_edge_spool_pending{{{EDGE}}}', "0+100x30"),
    ('up{instance="n2:9153",job="dnsflow-edge-metrics"}', "1 0x10"),
]


def descriptions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["annotations"]["description"] for g in groups for r in g["rules"]}


def fires(alert: str, at: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": descriptions()[alert]}}]}


def quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def test_rules_fire_with_their_labels_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/install-peers installs Debian's prometheus"
    tests = [
        quiet("DnsflowSinkFailing", "4m"),  # failing, but not for 5 minutes yet
        fires("DnsflowSinkFailing", "8m", {"severity": "critical", "instance": "sink-1:9156",
                                           "job": "dnsflow-sink"},
              "sink sink-1:9156 cannot store or commit"),
        fires("DnsflowStreamsConsumerLag", "15m",
              {"severity": "warning", "instance": "streams-1:9155"},
              "streams worker streams-1:9155 is 200005 events behind"),
        fires("DnsflowDetectionCritical", "4m", {"severity": "critical", "kind": "dga"},
              "critical dga detection"),
        quiet("DnsflowDetectionCritical", "12m"),  # nothing new for the last 5 minutes
        quiet("DnsflowDetectionHigh", "4m"),  # low-severity tunneling pages nobody
        fires("DnsflowEdgeAllUpstreamsDown", "5m", {"severity": "critical", "edge": "node-1"},
              "edge node-1: every upstream is down"),
        quiet("DnsflowEdgeAllUpstreamsDown", "2m"),  # one of two still up
        fires("DnsflowEdgeSpoolGrowing", "25m",
              {"severity": "warning", "edge": "node-1", "instance": "n1:9153",
               "job": "dnsflow-edge-metrics"},
              "edge node-1: 2500 events spooled and growing"),
        fires("DnsflowEdgeDown", "5m", {"severity": "critical", "instance": "n2:9153",
                                        "job": "dnsflow-edge-metrics"},
              "dnsflow edge n2:9153 is down"),
    ]
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in SERIES],
        "alert_rule_test": tests}]}
    path = tmp_path / "dnsflow-rules.test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
