"""Offline replay: JSON-lines events through the stream logic, in event time.

Used by ``dnsflow replay`` and the benchmarks. Bad lines are reported with their line number
and skipped (counted); the logic is the same object the live drivers run. Records of the
egress topic may be mixed in (``unresolved_egress``; streams.egress_input).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from dnsflow.schema import RecordError
from dnsflow.streams.egress_input import attempt_of, detector
from dnsflow.streams.event_decode import decode, decode_fast
from dnsflow.streams.logic import Output, StreamLogic


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    bad: int = 0
    egress: int = 0  # dnsflow.egress records (to unresolved_egress)
    outputs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def replay_lines(logic: StreamLogic, lines: Iterable[bytes],
                 on_output: Callable[[Output], None],
                 on_error: Callable[[int, str], None],
                 on_progress: Callable[[int], None] | None = None) -> ReplayStats:
    stats = ReplayStats()
    t0 = time.perf_counter()
    chunk: list[dict[str, Any]] = []  # process_many binds its per-event lookups per call

    def run(chunk: list[dict[str, Any]]) -> None:
        logic.process_many(chunk)
        chunk.clear()
        if logic.out:
            for o in logic.drain():
                stats.outputs[o.type] = stats.outputs.get(o.type, 0) + 1
                on_output(o)

    n = 0
    for n, line in enumerate(lines, 1):
        if on_progress is not None and n % 8192 == 0:
            on_progress(n)
        ev = decode_fast(line)
        if ev is None:
            if not line.strip():
                continue
            try:  # the slow path: normalise, or say what is wrong and where
                ev = decode(line, f"line {n}")
            except RecordError as exc:
                if _egress(logic, line, n):  # a dnsflow.egress record mixed in
                    stats.egress += 1
                    continue
                stats.bad += 1
                on_error(n, str(exc))
                continue
        stats.events += 1
        chunk.append(ev)
        if len(chunk) >= 256:
            run(chunk)
    run(chunk)
    stats.lines = n
    logic.flush()
    for o in logic.drain():
        stats.outputs[o.type] = stats.outputs.get(o.type, 0) + 1
        on_output(o)
    stats.seconds = time.perf_counter() - t0
    return stats


def _egress(logic: StreamLogic, line: bytes, n: int) -> bool:
    """True when ``line`` is an egress record (an allowance, or a dropped attempt handed
    to ``unresolved_egress``); False leaves the line bad, with the event decoder's reason."""
    if b'"dst_ip"' not in line:
        return False
    try:
        ev = attempt_of(line, f"line {n}")
    except RecordError:
        return False
    det = detector(logic)
    if ev is not None and det is not None:
        det.observe_egress(ev)
    return True


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def as_json(o: Output) -> bytes:
    return orjson.dumps({"type": o.type, **o.value})


def as_text(o: Output) -> str:
    v: dict[str, Any] = o.value
    if o.type == "telemetry":
        lat = v["latency_us"]
        return (f"telemetry {v['tenant']} {_iso(v['window_start'])} +{v['window_s']:g}s "
                f"queries={v['queries']} nxdomain={v['rcode'].get('NXDOMAIN', 0)} "
                f"deny={v['decision'].get('deny', 0)} hit={v['cache_hit_ratio']:.0%} "
                f"p50={lat['p50'] / 1000:.1f}ms p95={lat['p95'] / 1000:.1f}ms "
                f"p99={lat['p99'] / 1000:.1f}ms clients={v['distinct_clients']} "
                f"names={v['distinct_names']}")
    if o.type == "anomaly":
        ev = v["evidence"]
        return (f"anomaly {_iso(v['ts'])} {v['severity']} {v['kind']} tenant={v['tenant']} "
                f"client={v['client_ip'] or '-'} domain={v['domain'] or '-'} "
                f"score={v['score']:.2f} update={ev.get('update', 0)}")
    if o.type == "alert":
        return f"alert {_iso(v['ts'])} {v['rule']} {v['severity']}: {v['summary']}"
    return (f"policy_update {_iso(v['ts'])} {v['action']} tenant={v['tenant']} "
            f"domain={v['domain']} until={_iso(v['expires_at_us'])} version={v['version']}: "
            f"{v['cause']}")
