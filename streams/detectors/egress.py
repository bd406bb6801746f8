"""A workload connecting to addresses it never resolved (#17): ``unresolved_egress``.

Input is not DNS events but the edge's dropped connection attempts on ``dnsflow.egress``
(``drop`` from enforced clients, ``would_drop`` in audit mode): the node allows a client
only the addresses its own answers carried, so each such record is a connection to an
address the client did not resolve through an allowed name -- hard-coded IPs, a resolver
bypass, a scan. Why a detector of its own: the attempts are per (tenant, client), counted
in a window of ``window_s``, and one incident per client (deduplicated like every kind)
says what was tried: the distinct destinations and ports. Severity medium, high once
``many_addresses`` distinct addresses were tried in one window (scanning or a list of
hard-coded endpoints).

The DNS-event hooks are unused (``names`` None, no panes): the drivers hand records to
:meth:`UnresolvedEgress.observe_egress` (``streams.egress_input``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dnsflow.streams.detectors.base import Detection, Detector, Part, WindowConfig
from dnsflow.streams.windows import to_us

if TYPE_CHECKING:
    from dnsflow.streams.detectors.base import DetectorContext

ATTEMPT_KINDS = frozenset({"drop", "would_drop"})


class UnresolvedEgressConfig(WindowConfig):
    min_attempts: int = Field(1, ge=1, description="attempts in a window before reporting")
    many_addresses: int = Field(10, ge=2, description="distinct addresses for severity high")
    audit: bool = Field(True, description="count would_drop (audit mode) attempts too")
    max_samples: int = Field(20, ge=1, le=1000, description="destinations named in evidence")


class _Tried:
    """One client's attempts in the current window."""

    __slots__ = ("attempts", "dsts", "modes", "next", "pod", "w")

    def __init__(self, w: int, pod: str) -> None:
        self.w = w                          # window start (µs)
        self.attempts = 0
        self.dsts: dict[str, int] = {}      # "ip" -> attempts (ports kept per address below)
        self.modes: list[str] = []
        self.pod = pod
        self.next = 1                       # report at this many distinct addresses


class UnresolvedEgress(Detector):
    kind = "unresolved_egress"
    order = 90
    config = UnresolvedEgressConfig
    parts = (Part("tried", of=_Tried), Part("ports"))

    def __init__(self, cfg: UnresolvedEgressConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.window = to_us(cfg.window_s)
        self.tried: dict[tuple[str, str], _Tried] = {}
        self.ports: dict[tuple[str, str], list[str]] = {}  # "ip:port/proto" tried, capped

    def observe_egress(self, ev: dict[str, Any]) -> None:
        """One ``dnsflow.egress`` record (decoded, in event-time order); allowances are not
        attempts and are ignored. Reports once ``min_attempts`` were made, then each time
        the window's distinct addresses double or reach ``many_addresses`` (the incident
        dedups the rest)."""
        kind = ev.get("kind")
        if kind not in ATTEMPT_KINDS or (kind == "would_drop" and not self.cfg.audit):
            return
        ts, key = int(ev["ts"]), (str(ev.get("tenant", "")), str(ev.get("client_ip", "")))
        t = self.tried.get(key)
        if t is None or ts - t.w >= self.window:
            t = self.tried[key] = _Tried(ts - ts % self.window, str(ev.get("pod", "")))
            self.ports[key] = []
            t.next = 1
        dst = str(ev.get("dst_ip", ""))
        t.attempts += 1
        t.dsts[dst] = t.dsts.get(dst, 0) + 1
        mode = str(ev.get("mode", "enforce"))
        if mode not in t.modes:
            t.modes.append(mode)
        where = f"{dst}:{ev.get('port', 0)}/{ev.get('protocol') or 'any'}"
        tried = self.ports[key]
        if len(tried) < self.cfg.max_samples and where not in tried:
            tried.append(where)
        if t.attempts >= self.cfg.min_attempts and len(t.dsts) >= t.next:
            n, many = len(t.dsts), self.cfg.many_addresses
            t.next = max(t.next * 2, n + 1) if n >= many else min(max(t.next * 2, n + 1), many)
            self._report(ts, key, t, str(ev.get("namespace", "")))

    def _report(self, ts: int, key: tuple[str, str], t: _Tried, namespace: str) -> None:
        many = self.cfg.many_addresses
        n = len(t.dsts)
        score = 0.5 + 0.3 * min(1.0, (n - 1) / (many - 1))
        top = sorted(t.dsts, key=lambda d: (-t.dsts[d], d))[:self.cfg.max_samples]
        self.report(Detection(
            ts=ts, kind=self.kind, tenant=key[0], client_ip=key[1], score=score,
            severity="high" if n >= many else "medium",
            evidence={"distinct_addresses": n, "attempts": t.attempts, "addresses": top,
                      "tried": list(self.ports.get(key, [])), "modes": list(t.modes),
                      "namespace": namespace, "pod": t.pod,
                      "window_start": t.w, "window_s": self.cfg.window_s}))

    def on_watermark(self, watermark: int) -> None:
        for key in [k for k, t in self.tried.items() if t.w + self.window <= watermark]:
            del self.tried[key]
            self.ports.pop(key, None)
