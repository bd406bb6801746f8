"""Tenant tokens see their tenant only: pages, every API route, explain and the live tail."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from yarl import URL

from tests.unit.console.conftest import TENANTS, App, event

API = ("/api/tenants", "/api/traffic", "/api/top", "/api/anomalies", "/api/alerts",
       "/api/policy_log")
PAGES = ("/", "/anomalies", "/alerts", "/policy", "/tail")


def _tenants_in(obj: object) -> set[str]:
    """Every value of a "tenant" key anywhere in a JSON document."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "tenant" and isinstance(v, str):
                found.add(v)
            found |= _tenants_in(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _tenants_in(v)
    return found


async def _seen_by(app: App, tenant: str, paths: tuple[str, ...]) -> dict[str, str]:
    """Each path as the tenant's token gets it: answered, and naming no other tenant."""
    other = next(t for t in TENANTS if t != tenant)
    texts = {}
    for path in paths:
        r = await app.get(path, f"{tenant}-token-1")
        assert r.status == 200, path
        texts[path] = await r.text()
        assert other not in texts[path], f"{path} shows {other}"
    return texts


@pytest.mark.parametrize("tenant", TENANTS)
async def test_a_tenant_token_sees_only_its_rows_in_every_api_route(app: App, tenant: str):
    for path, text in (await _seen_by(app, tenant, API)).items():
        body = json.loads(text)
        if path == "/api/tenants":
            assert body == {"tenants": [tenant]}
        else:
            assert _tenants_in(body) == {tenant}, path  # and there are rows to see


async def test_the_all_tenant_token_sees_both(app: App):
    r = await app.get("/api/traffic", "admin-token-1")
    body = await r.json()
    assert sorted(t["tenant"] for t in body["tenants"]) == sorted(TENANTS)
    acme = next(t for t in body["tenants"] if t["tenant"] == "acme")
    assert acme["queries"] == 46
    assert sum(acme["decision"]["deny"]) == 6
    assert sum(acme["rcode"]["NXDOMAIN"]) == 6
    r = await app.get("/api/traffic?tenant=globex", "admin-token-1")
    assert [t["tenant"] for t in (await r.json())["tenants"]] == ["globex"]


async def test_asking_for_another_tenant_is_refused_not_widened(app: App):
    r = await app.get("/api/top?tenant=globex", "acme-token-1")
    assert r.status == 403
    assert "globex" in (await r.json())["error"]  # it names what was asked, nothing more
    r = await app.get("/?tenant=globex", "acme-token-1")
    assert r.status == 403


async def test_the_tenant_is_a_bound_parameter_not_sql_text(app: App):
    r = await app.get("/api/top", "admin-token-1",
                      params={"tenant": "acme' OR tenant = 'globex"})
    assert r.status == 200
    body = await r.json()
    assert body["names"] == [] and body["denied"] == []


@pytest.mark.parametrize("tenant", TENANTS)
async def test_pages_show_only_the_tenants_rows(app: App, tenant: str):
    html = (await _seen_by(app, tenant, PAGES))["/"]
    assert f'data-tenant="{tenant}"' in html and "<svg" in html and "<rect" in html
    assert f"tracker0.{tenant}-ads.example" in html  # a top denied name


async def test_top_denied_and_policy_diffs(app: App):
    top = await (await app.get("/api/top?tenant=acme&limit=3", "admin-token-1")).json()
    assert len(top["names"]) == 3
    assert {d["qname"] for d in top["denied"]} <= {f"tracker{i}.acme-ads.example"
                                                    for i in range(6)}
    log = (await (await app.get("/api/policy_log", "acme-token-1")).json())["entries"]
    assert [e["version"] for e in log] == [2, 1]
    assert "\n-        - v1.acme-blocked.example\n" in log[0]["diff"]
    assert "\n+        - v2.acme-blocked.example\n" in log[0]["diff"]


async def test_explain_answers_like_the_cli_and_stays_in_the_tenant(
        app: App, policy_files, capsys: pytest.CaptureFixture[str]):
    from dnsflow.cli import main

    r = await app.get("/api/explain", "acme-token-1",
                      params={"client": "10.1.0.9", "name": "x.ads.example", "type": "AAAA"})
    assert r.status == 200
    got = await r.json()
    assert main(["policy", "explain", "--client", "10.1.0.9", "--tenant-map",
                 str(policy_files["tenant_map"]), "--name", "x.ads.example", "--type", "AAAA",
                 "--json", str(policy_files["policies"])]) == 0
    assert got == json.loads(capsys.readouterr().out)
    assert got["decision"] == "deny" and got["rule"] == "acme/base#no-ads"
    r = await app.get("/api/explain", "acme-token-1",
                      params={"client": "10.2.0.9", "name": "x.paste.example"})
    assert r.status == 403
    page = await (await app.get("/policy?client=10.2.0.9&name=x.paste.example",
                                "acme-token-1")).text()
    assert "REFUSED" not in page and "globex" not in page


async def _sse_events(app: App, token: str, query: str, want: int) -> list[dict]:
    r = await app.get(f"/api/tail{query}", token)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    got: list[dict] = []
    await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)  # ": live": subscribed
    senders = [event(t, i, decision="deny" if i % 2 else "allow") for i in range(6)
               for t in TENANTS]
    await app.bus.send_many(app.bus.topics.events,
                            [(e["tenant"].encode(), orjson.dumps(e)) for e in senders])

    async def read() -> None:
        kind = ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "dns":
                got.append(json.loads(line[6:]))
                if len(got) >= want:
                    return

    await asyncio.wait_for(read(), 5)
    r.close()
    return got


async def test_the_live_tail_is_scoped_and_filtered(app: App):
    got = await _sse_events(app, "acme-token-1", "?decision=deny", 3)
    assert [g["event"]["tenant"] for g in got] == ["acme"] * 3
    assert {g["event"]["decision"] for g in got} == {"deny"}
    assert all(g["line"].startswith(g["line"][:12]) and " acme/acme/" in g["line"] for g in got)
    r = await app.get("/api/tail?tenant=globex", "acme-token-1")
    assert r.status == 403
    r = await app.get("/api/tail?decision=maybe", "admin-token-1")
    assert r.status == 400 and "decision" in (await r.json())["error"]


async def test_without_a_token_nothing_is_shown(app: App):
    for path in (*API, "/api/explain?client=10.1.0.1&name=a.example", "/api/tail"):
        r = await app.get(path)
        assert r.status == 401, path
        assert (await r.json())["error"].startswith("unauthorised")
        r = await app.get(path, "not-a-token-at-all")
        assert r.status == 401, path
    r = await app.get("/anomalies?tenant=acme")
    assert r.status == 303
    location = URL(r.headers["Location"])
    assert location.path == "/signin" and location.query["next"] == "/anomalies?tenant=acme"
    assert (await app.get("/healthz")).status == 200
    assert (await app.get("/static/console.css")).status == 200


async def test_sign_in_sets_an_httponly_cookie_that_scopes_the_pages(app: App):
    r = await app.client.post("/signin", data={"token": "wrong-token-x", "next": "/"},
                              allow_redirects=False)
    assert r.status == 401 and "not valid" in await r.text()
    r = await app.client.post("/signin", data={"token": "globex-token-1", "next": "/alerts"},
                              allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/alerts"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    html = await (await app.client.get("/alerts")).text()  # the cookie jar sends it back
    assert "1 x dga (tenant=globex)" in html and "acme" not in html
    r = await app.client.post("/signin", data={"token": "globex-token-1",
                                               "next": "//evil.example/"},
                              allow_redirects=False)
    assert r.headers["Location"] == "/"
    r = await app.client.post("/signout", allow_redirects=False)
    assert r.status == 303
    assert (await app.client.get("/alerts", allow_redirects=False)).status == 303


async def test_metrics_name_routes_never_tenants(app: App):
    await app.get("/api/top", "acme-token-1")
    await app.get("/api/top")
    text = await (await app.get("/metrics")).text()
    assert 'dnsflow_console_requests_total{code="200",route="/api/top"} 1.0' in text
    assert 'dnsflow_console_requests_total{code="401",route="/api/top"} 1.0' in text
    assert "dnsflow_console_tail_subscribers 0.0" in text
    assert "acme" not in text


async def test_a_long_span_is_charted_from_the_rollups(app: App, chdb_filled):
    from dnsflow.sinks.dsn import connect
    from tests.unit.console.conftest import _insert_events

    hour = 3_600_000_000
    old = [event("initech", i, ts=event("initech", 0)["ts"] - (i % 12) * hour,
                 decision="deny" if i % 4 == 0 else "allow") for i in range(48)]
    client = connect(chdb_filled)
    _insert_events(client, old)
    client.close()
    body = await (await app.get("/api/traffic?tenant=initech", "admin-token-1")).json()
    [series] = body["tenants"]
    assert series["step_s"] >= 3600  # hour buckets at least: read from dns_names_hour
    assert series["queries"] == 48 and sum(series["decision"]["deny"]) == 12
    assert 11 <= len(series["buckets"]) <= 13
    assert all(v is not None for v in series["latency_ms"]["p50"])  # from dns_minute
    acme = await (await app.get("/api/traffic?tenant=acme", "acme-token-1")).json()
    assert acme["tenants"][0]["step_s"] == 1  # a minute of data: 1 s buckets from the events


async def test_explain_takes_json_and_names_what_is_missing(app: App):
    r = await app.client.post("/api/explain", json={"tenant": "globex", "name": "a.paste.example"},
                              headers={"Authorization": "Bearer globex-token-1"})
    got = await r.json()
    assert r.status == 200 and (got["decision"], got["deny_mode"]) == ("deny", "REFUSED")
    r = await app.client.post("/api/explain", json={"client": "10.2.0.1"},
                              headers={"Authorization": "Bearer globex-token-1"})
    assert r.status == 400 and (await r.json())["error"] == "name: give the query name"
    r = await app.get("/api/top?minutes=abc", "globex-token-1")
    assert r.status == 400
    assert (await r.json())["error"] == "minutes: expected a whole number, got 'abc'"


async def test_a_clickhouse_error_is_one_line_not_a_crash(chdb_dsn: str):
    from aiohttp.test_utils import TestClient, TestServer

    from dnsflow.console.auth import Auth
    from dnsflow.console.explain import Explainer, FilePolicies
    from dnsflow.console.queries import Queries
    from dnsflow.console.server import Console
    from dnsflow.sinks.dsn import connect, parse

    queries = Queries(lambda _: connect(parse(chdb_dsn)))  # nothing migrated: no tables
    client = TestClient(TestServer(Console(queries, Explainer(FilePolicies([])),
                                           Auth(None)).app()))
    await client.start_server()
    try:
        r = await client.get("/api/alerts")
        assert r.status == 502
        error = (await r.json())["error"]
        assert error.startswith("ClickHouse: ") and "dnsflow" in error and "\n" not in error
        r = await client.get("/alerts")
        assert r.status == 502 and 'id="problem"' in await r.text()
        r = await client.get("/api/explain?tenant=x&name=a.example")
        assert r.status == 400 and "--policies PATH" in (await r.json())["error"]
    finally:
        await client.close()
        queries.close()
