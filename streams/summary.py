"""What the demo prints about the streams: per-tenant totals and recent outputs."""

from __future__ import annotations

from typing import Any


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """Condense a ``StreamsService.status()`` into what a person wants to see."""
    return {
        "tenants": status.get("tenants", {}),
        "anomalies": status.get("recent_anomalies", []),
        "alerts": status.get("recent_alerts", []),
        "policy_updates": status.get("recent_policy_updates", []),
        "auto_denies": status.get("auto_denies", {}),
        "events": status.get("events", 0),
        "dlq": status.get("dlq", 0),
    }


def render(status: dict[str, Any]) -> str:
    """Plain-text lines: tenant totals, then anomalies, alerts and policy changes."""
    s = summary(status)
    lines = [f"{'tenant':<14}{'queries':>9}{'NXDOMAIN':>10}{'denied':>8}{'anomalies':>11}"
             f"{'alerts':>8}"]
    for tenant, t in s["tenants"].items():
        lines.append(f"{tenant:<14}{t['queries']:>9}{t['nxdomain']:>10}{t['denied']:>8}"
                     f"{t['anomalies']:>11}{t['alerts']:>8}")
    for a in s["anomalies"]:
        lines.append(f"anomaly {a['severity']:<8} {a['kind']:<14} tenant={a['tenant']} "
                     f"client={a.get('client_ip') or '-'} domain={a.get('domain') or '-'} "
                     f"score={a['score']:.2f}")
    for a in s["alerts"]:
        lines.append(f"alert   {a['rule']}: {a['summary']}")
    for p in s["policy_updates"]:
        lines.append(f"policy  {p['action']:<6} {p['tenant']} {p['domain']} "
                     f"version={p['version']}: {p['cause']}")
    return "\n".join(lines)
