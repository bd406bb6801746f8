"""Charts as inline SVG, drawn on the server: no chart library, no script needed to read them.

Stacked bars for counts (queries by decision or rcode per time bucket) and lines for
latency quantiles. Colours are fixed per value so "deny" is the same red on every page; each
bar and point carries a ``<title>`` (the browser's tooltip) with its exact numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

W, H = 560, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 22
PALETTE = {
    "allow": "#2e7d32", "deny": "#c62828", "would_deny": "#ef6c00", "rewrite": "#1565c0",
    "redirect": "#6a1b9a", "NOERROR": "#2e7d32", "NXDOMAIN": "#ef6c00", "SERVFAIL": "#c62828",
    "REFUSED": "#6d4c41", "p50": "#1565c0", "p90": "#ef6c00", "p99": "#c62828",
}
OTHER = ("#00838f", "#9e9d24", "#5d4037", "#455a64", "#ad1457", "#283593")


def colour(name: str, i: int) -> str:
    return PALETTE.get(name, OTHER[i % len(OTHER)])


def _clock(ts: float, step: int) -> str:
    t = datetime.fromtimestamp(ts, UTC)
    return t.strftime("%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else "%m-%d")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000,
              100_000, 200_000, 500_000, 1_000_000):
        if v <= m:
            return float(m)
    return v


def _frame(title: str, top: float, unit: str, buckets: Sequence[int], step: int) -> list[str]:
    ih = H - TOP - BOTTOM
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">']
    for frac in (0, 0.5, 1):
        y = TOP + ih * (1 - frac)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   'class="grid"/>')
        label = f"{top * frac:g}{unit}"
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="axis" '
                   f'text-anchor="end">{escape(label)}</text>')
    if buckets:
        for i in sorted({0, len(buckets) // 2, len(buckets) - 1}):
            x = LEFT + (i + 0.5) * (W - LEFT - RIGHT) / len(buckets)
            out.append(f'<text x="{x:.1f}" y="{H - 6}" class="axis" text-anchor="middle">'
                       f'{_clock(buckets[i], step)}</text>')
    return out


def legend(names: Sequence[str]) -> str:
    items = "".join(f'<span><i style="background:{colour(n, i)}"></i>{escape(n)}</span>'
                    for i, n in enumerate(names))
    return f'<div class="legend">{items}</div>'


def stacked_bars(title: str, buckets: Sequence[int], series: Mapping[str, Sequence[int]],
                 step: int) -> str:
    """Counts per bucket, one colour per series, stacked; the y axis in queries/s."""
    names = sorted(series, key=lambda n: -sum(series[n]))
    totals = [sum(series[n][i] for n in names) for i in range(len(buckets))]
    top = _nice_max(max(totals, default=0) / step)
    ih, iw = H - TOP - BOTTOM, W - LEFT - RIGHT
    bw = iw / max(1, len(buckets))
    out = _frame(title, top, "/s", buckets, step)
    for i, b in enumerate(buckets):
        y = TOP + ih
        for j, n in enumerate(names):
            v = series[n][i]
            if not v:
                continue
            h = ih * (v / step) / top
            y -= h
            tip = f"{_clock(b, step)} {n}: {v} queries ({v / step:.3g}/s)"
            out.append(f'<rect x="{LEFT + i * bw + 0.5:.1f}" y="{y:.1f}" '
                       f'width="{max(1.0, bw - 1):.1f}" height="{max(h, 0.5):.1f}" '
                       f'fill="{colour(n, j)}" data-series="{escape(n)}"><title>'
                       f'{escape(tip)}</title></rect>')
    out.append("</svg>")
    return f'<figure><figcaption>{escape(title)}</figcaption>{"".join(out)}' \
           f'{legend(names)}</figure>'


def lines(title: str, buckets: Sequence[int], series: Mapping[str, Sequence[float | None]],
          step: int, unit: str = " ms") -> str:
    values = [v for s in series.values() for v in s if v is not None]
    top = _nice_max(max(values, default=0))
    ih, iw = H - TOP - BOTTOM, W - LEFT - RIGHT
    bw = iw / max(1, len(buckets))
    out = _frame(title, top, unit.strip(), buckets, step)
    for j, (n, s) in enumerate(series.items()):
        pts = [(LEFT + (i + 0.5) * bw, TOP + ih * (1 - v / top), v, buckets[i])
               for i, v in enumerate(s) if v is not None]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour(n, j)}" '
                       'stroke-width="1.5"/>')
        for x, y, v, b in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{colour(n, j)}" '
                       f'data-series="{escape(n)}"><title>{_clock(b, step)} {escape(n)}: '
                       f'{v:g}{escape(unit)}</title></circle>')
    out.append("</svg>")
    return f'<figure><figcaption>{escape(title)}</figcaption>{"".join(out)}' \
           f'{legend(list(series))}</figure>'


def timeline(incidents: Sequence[Mapping[str, object]]) -> str:
    """Incidents on one time axis, a row per kind, a dot per incident sized by severity."""
    if not incidents:
        return '<p class="empty">No anomalies in this window.</p>'
    kinds = sorted({str(i["kind"]) for i in incidents})
    lo = min(float(i["first_ts"]) for i in incidents)  # type: ignore[arg-type]
    hi = max(max(float(i["last_ts"]) for i in incidents), lo + 1)  # type: ignore[arg-type]
    row = 22
    h = TOP + BOTTOM + row * len(kinds)
    left = 110
    iw = W - left - RIGHT
    sev_r = {"low": 3, "medium": 4.5, "high": 6, "critical": 7.5}
    sev_c = {"low": "#78909c", "medium": "#ef6c00", "high": "#c62828", "critical": "#6a1b9a"}
    out = [f'<svg class="chart timeline" viewBox="0 0 {W} {h}" role="img" '
           'aria-label="anomaly timeline">']
    for k, kind in enumerate(kinds):
        y = TOP + row * k + row / 2
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                   f'{escape(kind)}</text><line x1="{left}" x2="{W - RIGHT}" y1="{y:.1f}" '
                   f'y2="{y:.1f}" class="grid"/>')
    for inc in incidents:
        y = TOP + row * kinds.index(str(inc["kind"])) + row / 2
        x0 = left + iw * (float(inc["first_ts"]) - lo) / (hi - lo)  # type: ignore[arg-type]
        x1 = left + iw * (float(inc["last_ts"]) - lo) / (hi - lo)  # type: ignore[arg-type]
        sev = str(inc["severity"])
        tip = (f"{inc['tenant']} {inc['kind']} {sev} score {inc['score']} "
               f"client {inc.get('client_ip') or '-'} domain {inc.get('domain') or '-'}")
        if x1 - x0 > 1:
            out.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{sev_c.get(sev, "#555")}" stroke-width="3"/>')
        out.append(f'<a href="#inc-{escape(str(inc["incident"]))}"><circle cx="{x1:.1f}" '
                   f'cy="{y:.1f}" r="{sev_r.get(sev, 4)}" fill="{sev_c.get(sev, "#555")}">'
                   f'<title>{escape(tip)}</title></circle></a>')
    step = 1 if hi - lo < 600 else 60
    out.append(f'<text x="{left}" y="{h - 6}" class="axis">{_clock(lo, step)}</text>'
               f'<text x="{W - RIGHT}" y="{h - 6}" class="axis" text-anchor="end">'
               f'{_clock(hi, step)}</text></svg>')
    return "".join(out)
