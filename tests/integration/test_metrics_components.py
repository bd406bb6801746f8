"""Every long-running component as an operator runs it (`dnsflow edge`, `dnsflow streams`,
`dnsflow sink`, `dnsflow policy apply --watch`) on the suite's real Kafka: its /metrics passes
`promtool check metrics`, /healthz and /readyz say 200 once it does its job, the counters
match the traffic sent through the edge, and every metric the Prometheus rules and the
Grafana dashboards name exists in these scrapes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.fake_upstream import FakeUpstream
from tests.helpers.policy_yaml import dns_policy

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "dnsflow-rules.yaml"
DASHBOARDS = ROOT / "deploy" / "grafana"
DNSFLOW = [sys.executable, "-m", "dnsflow"]
COMPONENTS = ("edge", "streams", "sink", "policies")
QUERIES = 300  # every 10th one denied by the policy

POLICY = dns_policy("base", "shop", "shop", "rules: [{id: no-ads, match: "
                    "{suffixes: [ads.example.com]}, action: deny}]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(text: str, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples(text).items()
               if n == name and labels.items() <= dict(lab).items())


class ThreadedUpstream:
    """The fake authoritative upstream on its own event loop (the fixture is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.up = FakeUpstream(["example.com. 60 IN A 192.0.2.1",
                                "x.ads.example.com. 60 IN A 192.0.2.9"], soa_zone="example.com")

    def start(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.up.start(), self.loop).result(10)
        return self.up.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.up.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Stack:
    urls: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path
    policy_dir: Path
    scrapes: dict[str, str] = field(default_factory=dict)

    def get(self, component: str, path: str) -> httpx.Response:
        return httpx.get(self.urls[component] + path, timeout=5)

    def scrape(self, component: str) -> str:
        r = self.get(component, "/metrics")
        assert r.status_code == 200
        return r.text

    def wait(self, what: str, cond: Callable[[], object], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"{name} exited ({p.returncode}): {self.log(name)}")
            try:
                if cond():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{what} not reached within {timeout}s; logs:\n" +
                             "\n".join(f"--- {n}\n{self.log(n)}" for n in self.procs))

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("metrics-stack")
    prefix = f"m{uuid.uuid4().hex[:10]}."
    common = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix, "--home", str(home)]
    policy_dir = home / "policies"
    policy_dir.mkdir()
    (policy_dir / "shop.yaml").write_text(POLICY)
    tmap = home / "map.yaml"
    tmap.write_text("clients: [{cidr: 127.0.0.0/8, tenant: shop, namespace: shop}]\n")
    upstream = ThreadedUpstream()
    up_addr = upstream.start()
    ports = {c: free_port() for c in COMPONENTS}
    dns_port = free_port()
    argv = {
        "policies": ["policy", "apply", "--watch", "--interval", "0.2", str(policy_dir)],
        "sink": ["sink", "--clickhouse", f"chdb://{home / 'chdb'}", "--batch-ms", "200"],
        "streams": ["streams"],
        "edge": ["edge", "--listen", f"127.0.0.1:{dns_port}", "--upstream", up_addr,
                 "--tenant-map", str(tmap), "--name", "edge-metrics"],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stack = Stack({c: f"http://127.0.0.1:{p}" for c, p in ports.items()}, procs, home,
                  policy_dir)
    try:
        for c in ("policies", "sink", "streams", "edge"):  # the order `dnsflow up` uses
            with open(home / f"{c}.log", "wb") as log:
                procs[c] = subprocess.Popen(
                    [*DNSFLOW, *argv[c], *common, "--metrics-listen",
                     f"127.0.0.1:{ports[c]}"], stdout=log, stderr=subprocess.STDOUT)
        for c in COMPONENTS:
            stack.wait(f"{c} ready", lambda c=c: stack.get(c, "/readyz").status_code == 200)
        for i in range(QUERIES):
            name = "x.ads.example.com" if i % 10 == 0 else "example.com"
            r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=dns_port,
                              timeout=3)
            assert r.rcode() == (dns.rcode.NXDOMAIN if i % 10 == 0 else dns.rcode.NOERROR)
        stack.wait("events stored and processed", lambda: (
            total(stack.scrape("sink"), "dnsflow_sink_rows_stored_total",
                  table="dns_events") >= QUERIES
            and total(stack.scrape("streams"), "dnsflow_streams_events_processed_total")
            >= QUERIES))
        # lag is measured every 10 s in the background: the next measurement sees it drained
        stack.wait("lag measured as drained", lambda: all(
            _lag_drained(stack.scrape(c), c) for c in ("sink", "streams")), 40)
        # a policy set that does not validate: counted, the last good version stays
        (policy_dir / "broken.yaml").write_text("apiVersion: dnsflow.io/v1\nkind: Nope\n")
        stack.wait("rejection counted", lambda: total(
            stack.scrape("policies"), "dnsflow_policies_rejected_sets_total") >= 1, 20)
        stack.scrapes = {c: stack.scrape(c) for c in COMPONENTS}
        yield stack
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        upstream.stop()


@pytest.mark.parametrize("component", COMPONENTS)
def test_promtool_accepts_every_component_scrape(stack: Stack, component: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/install-peers installs Debian's prometheus"
    out = subprocess.run([promtool, "check", "metrics"], input=stack.scrapes[component],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
    assert f'dnsflow_build_info{{component="{component}"' in stack.scrapes[component]
    assert "process_resident_memory_bytes" in stack.scrapes[component]


@pytest.mark.parametrize("component", COMPONENTS)
def test_health_and_readiness_answer_200_with_their_reasons(stack: Stack,
                                                            component: str) -> None:
    assert stack.get(component, "/healthz").status_code == 200
    ready = stack.get(component, "/readyz")
    assert ready.status_code == 200 and ready.json()["ok"] is True


def test_counters_match_the_traffic(stack: Stack) -> None:
    edge, streams, sink, pol = (stack.scrapes[c] for c in COMPONENTS)
    assert total(edge, "dnsflow_edge_requests_total", tenant="shop") == QUERIES
    assert total(edge, "dnsflow_edge_responses_total", decision="deny") == QUERIES / 10
    assert total(streams, "dnsflow_streams_events_processed_total") == QUERIES
    assert total(streams, "dnsflow_streams_consumer_lag_records") == 0
    assert total(streams, "dnsflow_streams_assigned_partitions") >= 1
    assert 0 <= total(streams, "dnsflow_streams_checkpoint_age_seconds") < 60
    assert total(sink, "dnsflow_sink_rows_stored_total", table="dns_events") == QUERIES
    assert total(sink, "dnsflow_sink_batch_duration_seconds_count") >= 1
    assert total(sink, "dnsflow_sink_last_error") == 0
    assert total(sink, "dnsflow_sink_consumer_lag_records",
                 topic=next(t for t in _topics(sink) if t.endswith("events"))) == 0
    assert total(pol, "dnsflow_policies_published_version", tenant="shop") >= 1
    assert total(pol, "dnsflow_policies_publish_errors_total") == 0
    assert total(pol, "dnsflow_policies_rejected_sets_total") == 1
    assert total(pol, "dnsflow_policies_last_error_timestamp_seconds") > 0


def _lag_drained(text: str, component: str) -> bool:
    lags = [v for (n, lab), v in samples(text).items()
            if n == f"dnsflow_{component}_consumer_lag_records"
            and dict(lab)["topic"].endswith("events")]
    return bool(lags) and sum(lags) == 0


def _topics(text: str) -> set[str]:
    return {dict(lab)["topic"] for (n, lab) in samples(text)
            if n == "dnsflow_sink_consumer_lag_records"}


def test_promtool_accepts_the_alerting_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/install-peers installs Debian's prometheus"
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


METRIC = re.compile(r"\b((?:dnsflow|process)_[a-z0-9_]+)\b")


def named_metrics() -> dict[str, set[str]]:
    """metric name -> where it is used: the rules' expressions and the Prometheus panels'."""
    import yaml

    used: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name in METRIC.findall(rule["expr"]):
                used.setdefault(name, set()).add(f"rule {rule['alert']}")
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [(v["name"], v.get("definition", "")) for v in board["templating"]["list"]]
        exprs += [(p["title"], t.get("expr", "")) for p in board["panels"]
                  for t in p.get("targets", []) if t.get("datasource", {}).get("type")
                  == "prometheus"]
        for title, expr in exprs:
            for name in METRIC.findall(expr):
                used.setdefault(name, set()).add(f"{path.name}: {title}")
    return used


def test_every_metric_a_rule_or_dashboard_names_exists(stack: Stack) -> None:
    exposed: set[str] = set()
    for text in stack.scrapes.values():
        exposed.update(re.findall(r"^# TYPE (\S+)", text, flags=re.M))
        exposed.update(n for n, _ in samples(text))
    used = named_metrics()
    assert len(used) > 30  # the rules and the health dashboard are really read
    missing = {name: sorted(where) for name, where in used.items() if name not in exposed}
    assert not missing, missing


def test_docs_metrics_md_describes_every_exposed_family(stack: Stack) -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    families = {n for text in stack.scrapes.values()
                for n in re.findall(r"^# TYPE (\S+)", text, flags=re.M)}
    families = {n for n in families if not n.startswith(("python_", "process_"))}
    assert len(families) > 60
    undocumented = sorted(n for n in families if f"`{n}`" not in doc)
    assert not undocumented, undocumented
