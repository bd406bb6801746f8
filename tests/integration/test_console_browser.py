"""The console in a real browser: Debian's headless Chromium driven by Playwright.

After a real ``dnsflow demo`` stored its data, ``dnsflow console`` runs as a subprocess on
that data directory with a token file, with ``--kafka`` on the test broker: its live tail
follows the ``events`` topic there and its explain form the published ``policies`` topic
(the demo's policies are applied to it with ``dnsflow policy apply``, so the console and
``dnsflow policy explain --kafka`` read the same policies). The test then checks what a
person would: each tenant's charts drawn with data, the explain form's verdict equal to the
CLI's, a new event on the live tail within 2 s, and a tenant token never showing another
tenant's name in a page, an API response or the stream.

Screenshots of the main pages go to ``$DNSFLOW_SCREENSHOTS`` (the committed ones in
``docs/console/`` come from ``DNSFLOW_SCREENSHOTS=docs/console``), else to a temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TENANTS = ("analytics", "payments", "shop")
TOKENS = {"admin-7f3c9e": "*", "analytics-5b1d7a": "analytics", "shop-2e8f4c": "shop"}

pytestmark = [
    pytest.mark.kafka, pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                       "(scripts/install-peers installs it)"),
]


def _dnsflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dnsflow", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Console:
    url: str
    home: Path
    kafka: list[str]  # the flags that point at the test's broker and topics

    def api(self, path: str, token: str, **params: str) -> httpx.Response:
        return httpx.get(self.url + path.lstrip("/"), params=params, timeout=30,
                         headers={"Authorization": f"Bearer {token}"}, trust_env=False)


@pytest.fixture(scope="module")
def console(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    home = tmp_path_factory.mktemp("console-demo")
    demo = _dnsflow("demo", "--seconds", "8", "--home", str(home), timeout=240)
    assert demo.returncode == 0, demo.stderr[-2000:]
    kafka = ["--kafka", kafka_bootstrap, "--topic-prefix", f"t{uuid.uuid4().hex[:10]}."]
    applied = _dnsflow("policy", "apply", *kafka, str(home / "demo" / "policies"))
    assert applied.returncode == 0, applied.stderr
    tokens = home / "tokens.yaml"
    tokens.write_text("tokens:\n" + "".join(f'  {t}: "{n}"\n' for t, n in TOKENS.items()))
    port = _free_port()
    log = (home / "console.log").open("w")  # a file: an unread pipe could fill and block it
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsflow", "console", "--home", str(home), "--listen",
         f"127.0.0.1:{port}", "--tokens", str(tokens), "--tenant-map",
         str(home / "demo" / "tenants.yaml"), *kafka],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        url = ""
        while not url:
            assert proc.poll() is None, \
                f"console exited: {(home / 'console.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "console did not start within 60 s"
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line.startswith("dnsflow console: http://"):
                url = line.split(": ", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/"
        yield Console(url, home, kafka)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("DNSFLOW_SCREENSHOTS")
    path = (ROOT / where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _signed_in(browser: object, console: Console, token: str) -> object:
    page = browser.new_context(viewport={"width": 1366, "height": 800}).new_page()  # type: ignore[attr-defined]
    page.goto(console.url + "alerts")
    assert page.url.startswith(console.url + "signin")  # not signed in: the sign-in page
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "alerts", timeout=10_000)
    return page


def _publish(console: Console, events: list[dict]) -> float:
    """Events on the test's ``events`` topic through the project's own bus; the time sent."""
    from dnsflow.bus import open_bus

    async def go() -> float:
        bus = open_bus(console.kafka[1], console.kafka[3])
        await bus.start()
        try:
            await bus.send_many(bus.topics.events,
                                [(e["tenant"].encode(), orjson.dumps(e)) for e in events])
            return time.monotonic()
        finally:
            await bus.stop()

    # Playwright's sync API runs its own event loop in this thread: publish from another
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result(timeout=60)


def _event(tenant: str, qname: str, decision: str = "allow") -> dict:
    ns, pod, ip = {"shop": ("shop", "web-7d9f", "127.0.1.10"),
                   "analytics": ("analytics", "notebook-3a9c", "127.0.3.77"),
                   "payments": ("payments", "ledger-0", "127.0.2.10")}[tenant]
    return {"v": 1, "ts": time.time_ns() // 1000, "edge": "browser-test", "tenant": tenant,
            "namespace": ns, "pod": pod, "client_ip": ip, "transport": "udp", "qname": qname,
            "qtype": "A", "rcode": "NOERROR" if decision == "allow" else "NXDOMAIN",
            "answers": [], "latency_us": 420, "cache": "miss", "decision": decision,
            "rule": "", "policy_version": 1, "upstream": "udp://127.0.0.1:53"}


def test_each_tenants_charts_render_with_data(console: Console, browser: object, shots: Path):
    page = _signed_in(browser, console, "admin-7f3c9e")
    page.clock.install()  # to see the 30 s redraw without waiting for it
    page.goto(console.url)
    cards = page.locator("article.tenant-card")
    assert sorted(cards.evaluate_all("els => els.map(e => e.dataset.tenant)")) == list(TENANTS)
    for tenant in TENANTS:
        card = page.locator(f'article.tenant-card[data-tenant="{tenant}"]')
        figures = card.locator("figure")
        assert figures.count() == 3  # by decision, by rcode, latency
        assert figures.nth(0).locator("rect[data-series=allow]").count() > 0
        assert figures.nth(1).locator("rect[data-series=NOERROR]").count() > 0
        assert figures.nth(2).locator("circle[data-series=p99]").count() > 0
        box = figures.nth(0).locator("svg").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 80  # drawn, visible
        stats = card.locator(".stats").inner_text()
        assert int(stats.split(" queries")[0]) > 100
    assert page.locator("text=Top denied names").count() == 1
    assert page.locator("td.name", has_text="ads.doubleclick.net").count() >= 1
    page.screenshot(path=str(shots / "traffic.png"))
    page.evaluate("document.querySelector('main h1').textContent = 'stale'")
    page.clock.fast_forward(31_000)
    page.locator("main h1", has_text="Traffic").wait_for(timeout=5_000)  # redrawn
    assert page.locator("article.tenant-card rect").count() > 0
    page.goto(console.url + "anomalies")
    assert page.locator("svg.timeline circle").count() >= 3
    kinds = set(page.locator("tbody tr td:nth-child(3)").all_inner_texts())
    assert {"dga", "tunneling", "cross_tenant"} <= kinds
    page.locator("details summary").first.click()
    assert '"incident"' in page.locator("details pre").first.inner_text()
    page.screenshot(path=str(shots / "anomalies.png"))
    page.goto(console.url + "alerts")
    assert page.locator("tbody tr").count() >= 3
    page.context.close()


@pytest.mark.parametrize(("client", "name", "qtype"), [
    ("127.0.1.10", "ads.doubleclick.net", "A"),           # shop's deny rule
    ("127.0.2.10", "api.cardnet.example", "A"),           # payments' rewrite
    ("127.0.2.99", "web.shop.svc.cluster.local", "A"),    # isolation
    ("127.0.3.77", "github.com", "AAAA"),                 # default allow
])
def test_the_explain_form_gives_the_clis_verdict(console: Console, browser: object, shots: Path,
                                                  client: str, name: str, qtype: str):
    cli = _dnsflow("policy", "explain", *console.kafka, "--client", client, "--tenant-map",
                   str(console.home / "demo" / "tenants.yaml"), "--name", name, "--type", qtype,
                   "--json")
    assert cli.returncode == 0, cli.stderr
    want = json.loads(cli.stdout)
    page = _signed_in(browser, console, "admin-7f3c9e")
    page.goto(console.url + "policy")
    page.fill("input[name=client]", client)
    page.fill("input[name=name]", name)
    page.fill("input[name=type]", qtype)
    page.click("form.explain button[type=submit]")
    verdict = page.locator("#verdict")
    verdict.wait_for(timeout=10_000)

    def field(label: str) -> str:
        return verdict.locator(f'dd[data-field="{label}"]').inner_text()

    decision = want["decision"] + (f" {want['deny_mode']}" if want["deny_mode"] else "")
    assert field("decision") == decision
    assert field("rule") == (want["rule"] or "(none: default allow)")
    assert field("version") == str(want["policy_version"])
    assert field("why") == want["why"]
    assert field("client gets") == want["effect"]
    assert field("policy") == want["policy"] == "the published policies topic"
    api = console.api("/api/explain", "admin-7f3c9e", client=client, name=name, type=qtype)
    assert api.json() == want  # the API answers with the CLI's JSON, field for field
    if name == "ads.doubleclick.net":
        page.locator("details summary").first.click()  # a policy diff, opened
        page.screenshot(path=str(shots / "policy.png"))
    page.context.close()


def test_the_live_tail_shows_a_new_event_within_two_seconds(console: Console, browser: object,
                                                            shots: Path):
    page = _signed_in(browser, console, "admin-7f3c9e")
    page.goto(console.url + "tail")
    page.locator("#tail-status", has_text="live").wait_for(timeout=15_000)
    probe = f"probe-{uuid.uuid4().hex[:8]}.console-test.example"
    sent = _publish(console, [_event("shop", probe, "deny")] + [
        _event(t, f"www.{t}-{i}.example") for i in range(3) for t in TENANTS])
    page.locator("#tail div", has_text=probe).wait_for(timeout=2_000)
    assert time.monotonic() - sent <= 2.0
    line = page.locator("#tail div", has_text=probe).inner_text()
    assert line.endswith(f" shop/shop/web-7d9f (127.0.1.10) udp A {probe} -> deny NXDOMAIN "
                         "0.42ms cache=miss")
    # filtered: only deny decisions of the shop namespace
    page.fill("input[name=namespace]", "shop")
    page.select_option("select[name=decision]", "deny")
    page.click("#tail-filters button[type=submit]")
    page.locator("#tail-status", has_text="live").wait_for(timeout=15_000)
    second = f"probe-{uuid.uuid4().hex[:8]}.console-test.example"
    _publish(console, [_event("shop", "allowed.console-test.example"),
                       _event("analytics", second, "deny"), _event("shop", second, "deny")])
    page.locator("#tail div", has_text=second).wait_for(timeout=2_000)
    rows = page.locator("#tail div").all_inner_texts()
    assert len(rows) == 1 and "shop/shop/" in rows[0]
    page.screenshot(path=str(shots / "tail.png"))
    page.context.close()


def _sse_lines(console: Console, token: str, until: str, timeout: float = 10) -> list[str]:
    out: list[str] = []
    with httpx.stream("GET", console.url + "api/tail", timeout=timeout, trust_env=False,
                      headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            out.append(line)
            if until in line:
                break
            if line == ": live":  # subscribed: now the events can be sent
                _publish(console, [_event("shop", "leak-check.shop-only.example"),
                                   _event("payments", "leak-check.payments-only.example"),
                                   _event("analytics", until)])
    return out


def test_a_tenant_token_never_sees_another_tenants_name(console: Console, browser: object,
                                                        shots: Path):
    token, others = "analytics-5b1d7a", ("shop", "payments")
    leak = re.compile("|".join(others))
    for path in ("/api/tenants", "/api/traffic", "/api/top", "/api/anomalies", "/api/alerts",
                 "/api/policy_log"):
        r = console.api(path, token)
        assert r.status_code == 200, path
        assert not leak.search(r.text), f"{path}: {leak.search(r.text)}"
    assert console.api("/api/tenants", token).json() == {"tenants": ["analytics"]}
    assert console.api("/api/traffic", token).json()["tenants"][0]["queries"] > 100
    assert console.api("/api/top", token, tenant="shop").status_code == 403
    r = console.api("/api/explain", token, client="127.0.1.10", name="ads.doubleclick.net")
    assert r.status_code == 403 and not leak.search(r.text)
    # the stream: another tenant's events are published, only analytics' arrive
    marker = f"mine-{uuid.uuid4().hex[:8]}.analytics.example"
    lines = _sse_lines(console, token, marker)
    stream = "\n".join(lines)
    assert marker in stream and not leak.search(stream)
    # the pages, in the browser
    page = _signed_in(browser, console, token)
    for path in ("", "anomalies", "alerts", "policy", "tail"):
        page.goto(console.url + path)
        if path == "tail":
            page.locator("#tail-status", has_text="live").wait_for(timeout=15_000)
            probe = f"probe-{uuid.uuid4().hex[:8]}.analytics.example"
            _publish(console, [_event("shop", "leak-check.shop-only.example"),
                               _event("analytics", probe)])
            page.locator("#tail div", has_text=probe).wait_for(timeout=2_000)
        text = page.content()
        assert not leak.search(text), f"/{path}: {leak.search(text)}"
        if path == "":
            cards = page.locator("article.tenant-card")
            assert cards.count() == 1
            assert cards.first.locator("rect").count() > 0
            page.screenshot(path=str(shots / "tenant.png"))
    page.context.close()
