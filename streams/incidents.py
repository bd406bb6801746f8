"""Deduplication: one ongoing incident is one anomaly record plus updates.

An incident is keyed by what a detector names as its cause (kind, tenant, client, domain).
Its first detection is published; later detections publish an *update* only when severity
rises, the score rises by ``score_step``, the named domain changes, or ``min_update_s`` of
event time passed since the last record. After ``idle_s`` without detections it ends; the
next detection opens a new incident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Any

from dnsflow.streams.config import SEVERITY_RANK, IncidentConfig
from dnsflow.streams.detectors.base import Detection
from dnsflow.streams.windows import to_us

REBUILD_EVERY = 64

__all__ = ["Detection", "Incidents", "severity_for"]


def severity_for(score: float) -> str:
    if score >= 0.95:
        return "critical"
    if score >= 0.8:
        return "high"
    if score >= 0.5:
        return "medium"
    return "low"


@dataclass(slots=True)
class _Incident:
    id: str
    first_ts: int
    last_seen: int
    last_emit: int
    severity: str
    score: float
    domain: str
    seq: int = 0
    detections: int = 1


class Incidents:
    def __init__(self, cfg: IncidentConfig, emit: Callable[[dict[str, Any]], None]) -> None:
        self.idle = to_us(cfg.idle_s)
        self.min_update = to_us(cfg.min_update_s)
        self.step = cfg.score_step
        self.emit = emit
        self.open: dict[tuple[str, ...], _Incident] = {}
        self.suppressed = 0
        # (possible end, key) of every open incident, so expire() looks only at incidents
        # that may have ended; an entry is re-checked against the incident when it comes up.
        # Rebuilt from ``open`` when that changed from outside (checkpoint restore, forget)
        # and every REBUILD_EVERY calls in any case.
        self._ends: list[tuple[int, tuple[str, ...]]] = []
        self._size = 0
        self._calls = 0

    def report(self, d: Detection) -> None:
        d.score = round(min(1.0, max(0.0, d.score)), 4)
        if not d.severity:
            d.severity = severity_for(d.score)
        key = d.key or (d.kind, d.tenant, d.client_ip, d.domain)
        inc = self.open.get(key)
        if inc is not None and d.ts - inc.last_seen > self.idle:
            inc = None
        if inc is None:
            inc = _Incident(
                id=f"{d.kind}:{d.tenant}:{d.client_ip or '-'}:{d.domain or '-'}:{d.ts}",
                first_ts=d.ts, last_seen=d.ts, last_emit=d.ts, severity=d.severity,
                score=d.score, domain=d.domain,
            )
            if key not in self.open:
                self._size += 1
            self.open[key] = inc
            heappush(self._ends, (d.ts + self.idle, key))
            self._publish(d, inc)
            return
        inc.detections += 1
        inc.last_seen = max(inc.last_seen, d.ts)
        worse = SEVERITY_RANK[d.severity] > SEVERITY_RANK[inc.severity]
        if (worse or d.score >= inc.score + self.step or d.domain != inc.domain
                or d.ts - inc.last_emit >= self.min_update):
            inc.seq += 1
            inc.last_emit = d.ts
            if worse:
                inc.severity = d.severity
            inc.score = max(inc.score, d.score)
            inc.domain = d.domain
            self._publish(d, inc)
        else:
            self.suppressed += 1

    def _publish(self, d: Detection, inc: _Incident) -> None:
        evidence = dict(d.evidence)
        evidence["incident"] = inc.id
        evidence["update"] = inc.seq
        evidence["first_ts"] = inc.first_ts
        evidence["detections"] = inc.detections
        self.emit({
            "v": 1, "ts": d.ts, "kind": d.kind, "tenant": d.tenant, "client_ip": d.client_ip,
            "domain": d.domain, "severity": d.severity, "score": d.score, "evidence": evidence,
        })

    def expire(self, watermark: int) -> None:
        """Forget incidents idle for longer than ``idle_s`` at ``watermark``."""
        open_, idle, ends = self.open, self.idle, self._ends
        self._calls += 1
        if len(open_) != self._size or self._calls % REBUILD_EVERY == 0:
            ends[:] = [(inc.last_seen + idle, k) for k, inc in open_.items()]
            heapify(ends)
        while ends and ends[0][0] < watermark:
            _, key = heappop(ends)
            inc = open_.get(key)
            if inc is None:
                continue
            end = inc.last_seen + idle
            if end < watermark:
                del open_[key]
            else:
                heappush(ends, (end, key))
        self._size = len(open_)
