"""HTML for each page, from the same data the JSON API returns (every value escaped).

The layout (``templates/base.html``) carries the navigation and the tenant and window
selectors; these functions render what goes inside ``<main>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

import orjson

from dnsflow.console import charts

NAV = (("/", "Traffic"), ("/anomalies", "Anomalies"), ("/alerts", "Alerts"),
       ("/policy", "Policy"), ("/tail", "Live tail"))
WINDOWS = ((15, "15 min"), (60, "1 hour"), (360, "6 hours"), (1440, "24 hours"),
           (10080, "7 days"), (43200, "30 days"))


def template(name: str) -> Template:
    return Template(files("dnsflow.console").joinpath("templates", name).read_text("utf-8"))


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def layout(page: str, title: str, body: str, *, tenants: Sequence[str], tenant: str,
           minutes: int, who: str, all_tenants: bool) -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if href == page else ""}>{label}</a>'
                  for href, label in NAV)
    options = [("", "all tenants")] if all_tenants else []
    options += [(t, t) for t in tenants]
    tsel = "".join(f'<option value="{escape(v)}"{" selected" if v == tenant else ""}>'
                   f"{escape(label)}</option>" for v, label in options)
    wsel = "".join(f'<option value="{m}"{" selected" if m == minutes else ""}>{label}</option>'
                   for m, label in WINDOWS)
    return template("base.html").substitute(
        title=escape(title), page=escape(page.strip("/") or "traffic"), nav=nav,
        tenants=tsel, windows=wsel, who=escape(who), body=body)


def _table(head: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    th = "".join(f'<th class="{cls}">{escape(label)}</th>' for label, cls in head)
    body = "".join("<tr>" + "".join(f'<td class="{head[i][1]}">{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def traffic(series: Sequence[Mapping[str, Any]], top: Mapping[str, Sequence[Mapping[str, Any]]],
            ) -> str:
    if not series:
        cards = '<p class="empty">No DNS events stored in this window.</p>'
    else:
        cards = "".join(_tenant_card(s) for s in series)
    show_tenant = len({r["tenant"] for r in top["names"]}) > 1
    return (f'<section class="cards">{cards}</section><section class="two" '
            f'style="margin-top:14px"><div class="card"><h2>Top names</h2>'
            f'{_names(top["names"], show_tenant)}</div><div class="card"><h2>Top denied names'
            f'</h2>{_names(top["denied"], show_tenant)}</div></section>')


def _tenant_card(s: Mapping[str, Any]) -> str:
    t, step, b = s["tenant"], s["step_s"], s["buckets"]
    decided = s["decision"]
    denied = sum(sum(v) for k, v in decided.items() if k in ("deny", "would_deny"))
    stats = (f'{s["queries"]} queries · {denied} denied · '
             f'{step}s buckets')
    return (f'<article class="card tenant-card" data-tenant="{escape(t)}">'
            f'<h2>{escape(t)}</h2><div class="stats">{escape(stats)}</div>'
            + charts.stacked_bars("queries/s by decision", b, decided, step)
            + charts.stacked_bars("queries/s by rcode", b, s["rcode"], step)
            + charts.lines("latency (p50 / p90 / p99)", b, s["latency_ms"], step)
            + "</article>")


def _names(rows: Sequence[Mapping[str, Any]], show_tenant: bool) -> str:
    head = ([("tenant", "")] if show_tenant else []) + [
        ("name", "name"), ("queries", "num"), ("clients", "num")]
    cells = [([escape(r["tenant"])] if show_tenant else [])
             + [escape(r["qname"]), str(r["queries"]), str(r["clients"])] for r in rows]
    return _table(head, cells, "No names in this window.")


def anomalies(incidents: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for inc in incidents:
        sev = escape(inc["severity"])
        evidence = escape(orjson.dumps(inc["evidence"], option=orjson.OPT_INDENT_2).decode())
        rows.append([
            f'<span id="inc-{escape(inc["incident"])}">{when(inc["first_ts"])}</span>',
            escape(inc["tenant"]), escape(inc["kind"]), f'<span class="sev-{sev}">{sev}</span>',
            f'{inc["score"]:.2f}', escape(inc.get("client_ip") or "-"),
            escape(inc.get("domain") or "-"), str(inc["updates"]),
            f"<details><summary>evidence</summary><pre>{evidence}</pre></details>"])
    head = [("first seen (UTC)", ""), ("tenant", ""), ("kind", ""), ("severity", ""),
            ("score", "num"), ("client", ""), ("domain", "name"), ("updates", "num"),
            ("evidence", "")]
    return (f'<div class="card">{charts.timeline(incidents)}</div><h2 style="margin-top:14px">'
            f'Incidents</h2>{_table(head, rows, "No anomalies in this window.")}')


def alerts(items: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for a in items:
        sev = escape(a["severity"])
        rows.append([when(a["ts"]), escape(a["rule"]), escape(a["tenant"] or "-"),
                     f'<span class="sev-{sev}">{sev}</span>', escape(a["summary"]),
                     escape(", ".join(a["incidents"]))])
    head = [("time (UTC)", ""), ("rule", ""), ("tenant", ""), ("severity", ""),
            ("summary", ""), ("incidents", "name")]
    return _table(head, rows, "No alerts in this window.")


def _diff(text: str) -> str:
    out = []
    for line in text.splitlines():
        cls = ("add" if line.startswith("+") and not line.startswith("+++") else
               "del" if line.startswith("-") and not line.startswith("---") else "ctx")
        out.append(f'<span class="{cls}">{escape(line) or " "}</span>')
    return "".join(out)  # one block per line: no extra newline between them


def policy(entries: Sequence[Mapping[str, Any]], form: Mapping[str, str],
           answer: Mapping[str, Any] | None, error: str, source: str) -> str:
    def field(name: str, label: str, placeholder: str = "") -> str:
        return (f'<label>{label}<input name="{name}" value="{escape(form.get(name, ""))}" '
                f'placeholder="{escape(placeholder)}"></label>')

    keep = "".join(f'<input type="hidden" name="{k}" value="{escape(form[k])}">'
                   for k in ("tenant", "minutes") if form.get(k))
    out = [f'<h2>Explain a query</h2><form class="explain" method="get" action="/policy">{keep}'
           + field("client", "client IP", "127.0.1.10")
           + field("ns_tenant", "or tenant") + field("namespace", "namespace")
           + field("name", "name", "example.com") + field("type", "type", "A")
           + f'<button type="submit">Explain</button><span class="hint">against {escape(source)}'
           "</span></form>"]
    if error:
        out.append(f'<p class="error" id="explain-error">{escape(error)}</p>')
    if answer is not None:
        out.append(_verdict(answer))
    rows = []
    for e in entries:
        diff = (f'<details><summary>diff</summary><pre class="diff">{_diff(e["diff"])}</pre>'
                "</details>") if e["diff"] else ""
        rows.append([when(e["ts"]), escape(e["tenant"]), str(e["version"]),
                     escape(e["change"]) + diff, escape(e["source"]), escape(e["actor"]),
                     f'<code title="{escape(e["hash"])}">{escape(e["hash"][7:19])}</code>'])
    head = [("time (UTC)", ""), ("tenant", ""), ("version", "num"), ("change", "wide"),
            ("source", "name"), ("actor", ""), ("hash", "")]
    out.append('<h2 style="margin-top:18px">Policy log</h2>'
               + _table(head, rows, "No policy publications stored."))
    return "".join(out)


def _verdict(a: Mapping[str, Any]) -> str:
    decision = a["decision"] + (f' {a["deny_mode"]}' if a.get("deny_mode") else "")
    c = a["client"]
    items = [("query", f'{a["name"]} {a["type"]}'),
             ("client", f'{c["ip"] or "-"} (tenant {c["tenant"]}, namespace {c["namespace"]})'),
             ("decision", decision), ("rule", a["rule"] or "(none: default allow)"),
             ("version", str(a["policy_version"])), ("why", a["why"]),
             ("client gets", a["effect"]), ("policy", a["policy"])]
    dl = "".join(f'<dt>{escape(k)}</dt><dd data-field="{escape(k)}">{escape(v)}</dd>'
                 for k, v in items)
    trace = "\n".join(a.get("trace") or [])
    return (f'<div class="verdict" id="verdict"><dl>{dl}</dl>'
            + (f"<pre>{escape(trace)}</pre>" if trace else "") + "</div>")


def tail(flt: Mapping[str, str], tenant_fixed: str | None) -> str:
    def field(name: str, label: str, placeholder: str = "") -> str:
        if name == "tenant" and tenant_fixed is not None:
            return (f'<label>tenant<input name="tenant" value="{escape(tenant_fixed)}" '
                    "readonly></label>")
        return (f'<label>{label}<input name="{name}" value="{escape(flt.get(name, ""))}" '
                f'placeholder="{escape(placeholder)}"></label>')

    decisions = "".join(f'<option{" selected" if flt.get("decision") == d else ""}>{d}</option>'
                        for d in ("", "allow", "deny", "rewrite", "redirect", "would_deny"))
    return ('<form class="filters" id="tail-filters">' + field("tenant", "tenant")
            + field("namespace", "namespace") + field("pod", "pod", "web-* or exact")
            + field("name", "name contains") + f'<label>decision<select name="decision">'
            f'{decisions}</select></label><button type="submit">Apply</button>'
            '<button type="button" id="tail-pause">Pause scrolling</button></form>'
            '<div id="tail-status">connecting…</div><div id="tail" aria-live="polite"></div>')

