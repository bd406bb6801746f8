"""The stream logic: plain Python, no Kafka, no faust — one instance per partition set.

Feed events in (roughly) event-time order with :meth:`StreamLogic.process_many` (a batch,
e.g. one fetch: the per-event references are bound once per call) or
:meth:`StreamLogic.process` (one event); take what it produced with
:meth:`StreamLogic.drain`. Outputs are ``telemetry`` (key tenant), ``anomaly``
(key tenant), ``alert`` (key rule id) and ``policy_update`` (key ``auto:<tenant>``, carrying
the policies-topic record). The watermark is the highest event time seen minus
``grace_s`` (the slowest active tenant's, see ``_maybe_advance``); a pane closes when the
watermark passes its end, so late events within the grace
period still count in their window, and older ones are counted as ``late_dropped``.
Given the same events in the same order the outputs are identical, whatever the driver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import islice
from typing import Any, NamedTuple

from dnsflow.streams.alerts import DEFAULT_RULES, AlertEngine, RuleSet
from dnsflow.streams.config import StreamsConfig
from dnsflow.streams.detectors import registered
from dnsflow.streams.detectors.base import Detector, DetectorContext, NameEntry, overrides
from dnsflow.streams.detectors.ngram import NgramModel, default_model
from dnsflow.streams.domains import INTERNAL, NORMAL, PTR, REVERSE, DomainIndex
from dnsflow.streams.incidents import Incidents
from dnsflow.streams.response import AutoResponder
from dnsflow.streams.telemetry import Telemetry
from dnsflow.streams.windows import pane_size, to_us

OUTPUT_TYPES = ("telemetry", "anomaly", "alert", "policy_update")
FAR_FUTURE = 1 << 62
NAMES_CACHE = 262_144
Observers = tuple[Callable[..., None], ...]
NameObservers = tuple[tuple[Callable[..., None], dict[str, Any] | None, str | None], ...]


class Output(NamedTuple):
    type: str                 # telemetry | anomaly | alert | policy_update
    key: str                  # tenant, rule id, or auto:<tenant>
    value: dict[str, Any]
    record: tuple[bytes, bytes] | None = None  # policy_update: (key, value) for the topic


class StreamLogic:
    def __init__(self, cfg: StreamsConfig | None = None, rules: RuleSet | None = None,
                 model: NgramModel | None = None, *, auto_watermark: bool = True) -> None:
        """``auto_watermark=False``: the driver moves time with :meth:`advance_to` (live
        drivers know their partitions, see ``streams.clock``); replay derives it itself."""
        cfg = cfg or StreamsConfig()
        self.cfg = cfg
        self.auto = auto_watermark
        det = cfg.detectors
        self.grace = to_us(cfg.grace_s)
        windows = [to_us(w) for w in cfg.windows]
        classes = registered()
        self.pane = pane_size([*windows, *(to_us(s) for c in classes
                                           for s in c.pane_seconds(getattr(det, c.kind)))])
        self._index = DomainIndex([*det.allowlist, *det.extra_allowlist])
        self._cluster_domain = det.cluster_domain.lower().strip(".")
        self._cluster_suffix = "." + self._cluster_domain
        self._cluster_name = lru_cache(maxsize=4096)(self._parse_cluster)
        self._names: dict[str, NameEntry] = {}
        self._names_cap = NAMES_CACHE
        self.model = model or default_model()
        self.out: list[Output] = []
        self.telemetry = Telemetry(cfg.telemetry, windows, self.pane, self._emit)
        self.incidents = Incidents(cfg.incidents, self._anomaly)
        self.detectors = self._build_detectors(classes)
        self.alerts = AlertEngine(rules if rules is not None else DEFAULT_RULES, self._alert)
        self.responder = AutoResponder(cfg.auto_response, self._policy)
        self.counts: dict[int, dict[tuple[str, str], list[int]]] = {}
        self.max_ts = -FAR_FUTURE
        self.tmax: dict[str, int] = {}
        self.holder = ""
        self.blocked = False
        self.skew = to_us(cfg.max_skew_s)
        self.watermark = -FAR_FUTURE
        self.next_close = FAR_FUTURE
        self.cur_ps = -FAR_FUTURE
        self.events = 0
        self.late_dropped = 0
        self.emitted = dict.fromkeys(OUTPUT_TYPES, 0)
        self.recent: dict[str, deque[dict[str, Any]]] = {
            t: deque(maxlen=cfg.recent) for t in OUTPUT_TYPES}
        self.tenants: dict[str, dict[str, int]] = {}
        self.min_window = min(windows)
        # what process_many needs per event, bound once; the containers here are only ever
        # changed in place (checkpoint.restore/forget update them too)
        self._hot = (self.pane, self.tmax, self.counts, self.telemetry.add, self._names,
                     self._on_deny)

    def _build_detectors(self, classes: list[type[Detector]]) -> dict[str, Detector]:
        """The enabled detectors, by kind in call order, and who is called when."""
        ctx = DetectorContext(self.incidents.report, self.model, self.pane,
                              self._cluster_domain, self._cluster_name)
        dets: dict[str, Detector] = {}
        for c in classes:
            dcfg = getattr(self.cfg.detectors, c.kind)
            if getattr(dcfg, "enabled", True):
                dets[c.kind] = c(dcfg, ctx)
        for d in dets.values():
            d.bind(ctx)
        self._label_score = ctx.label_score
        self._on_deny: Observers = tuple(d.observe for d in dets.values() if d.on_deny)
        self._on_pane = [d.on_pane for d in dets.values() if overrides(d, "on_pane")]
        self._on_watermark = [d.on_watermark for d in dets.values()
                              if overrides(d, "on_watermark")]
        # observers of a name by the length of its subdomain part: [(at least, observers)],
        # longest first (Detector.names), each as (observe, seen, rcode); looked up once per
        # name, cached with it
        named = [(d.names, (d.observe, d.seen, d.rcode)) for d in dets.values()
                 if d.names is not None]
        self._by_sub: list[tuple[int, NameObservers]] = [
            (n, tuple(o for m, o in named if m <= n))
            for n in sorted({m for m, _ in named}, reverse=True)]
        # names under the cluster domain and reverse names (Detector.cluster)
        self._cluster_obs: NameObservers = tuple(
            (d.observe_cluster, None, d.rcode) for d in dets.values() if d.cluster)
        return dets

    def _parse_cluster(self, name: str) -> tuple[str, str, str]:
        """(namespace, label, form) of a name under the cluster domain (else SEARCH)."""
        if name.endswith(self._cluster_suffix):
            return self._index.cluster(name, self._cluster_domain)
        return "", "", "search"

    # ------------------------------------------------------------------ input

    def process(self, ev: dict[str, Any]) -> None:
        """Account one validated event (see ``streams.event_decode.check``)."""
        self.process_many((ev,))

    def process_many(self, events: Iterable[dict[str, Any]]) -> None:
        """Account validated events in order: the same as :meth:`process` on each, with
        the per-batch lookups done once."""
        pane, tmax, counts, tele_add, names, on_deny = self._hot
        auto = self.auto
        max_ts, cur_ps, wm = self.max_ts, self.cur_ps, self.watermark
        wake = self.next_close + self.grace if auto and not self.blocked else FAR_FUTURE
        last_ps = None
        pc: dict[tuple[str, str], list[int]] = None  # type: ignore[assignment]
        n = 0
        try:
            for ev in events:
                ts: int = ev["ts"]
                tenant: str = ev["tenant"]
                ps = ts - ts % pane
                if ts > tmax.get(tenant, -FAR_FUTURE):
                    tmax[tenant] = ts
                    if ts > max_ts:
                        max_ts = self.max_ts = ts
                        if ps != cur_ps:
                            cur_ps = self.cur_ps = ps
                            if auto:
                                self._maybe_advance()
                                wm, wake = self.watermark, self._wake()
                        elif ts >= wake:
                            self._maybe_advance()
                            wm, wake = self.watermark, self._wake()
                    elif self.blocked and tenant == self.holder and auto:
                        self._maybe_advance()
                        wm, wake = self.watermark, self._wake()
                if ps + pane <= wm:
                    self.late_dropped += 1
                    continue
                n += 1
                qname: str = ev["qname"]
                key = (tenant, ev["client_ip"])
                rcode: str = ev["rcode"]
                tele_add(ps, key, ev, ps < cur_ps)
                info = names.get(qname)
                if info is None:
                    info = self._name(qname)
                if ps != last_ps:
                    # a pane's counts leave ``counts`` only once events of it are late
                    pc = counts.get(ps)  # type: ignore[assignment]
                    if pc is None:
                        pc = counts[ps] = {}
                    last_ps = ps
                c = pc.get(key)
                if c is None:
                    c = pc[key] = [0, 0]
                c[0] += 1
                if rcode == "NXDOMAIN" and info[3] != INTERNAL:
                    c[1] += 1
                observers = info[5]  # the detectors that want this name
                if observers:
                    for observe, seen, want in observers:
                        if want is not None and rcode != want:
                            continue  # ... only when answered with this rcode
                        if seen is not None:  # ... not for a domain seen in this tenant
                            s = seen.get(tenant)
                            if s is not None and info[0] in s:
                                continue
                        observe(ts, key, ev, info)
                if on_deny and ev["decision"] == "deny":
                    for observe in on_deny:
                        observe(ts, key, ev, info)
        finally:
            self.events += n

    def _name(self, qname: str) -> NameEntry:
        """Cache miss: the name's registered domain, kind, DGA label score and the detectors
        that look at it, kept in a bounded dict (a plain dict get per event; the oldest half
        goes when full)."""
        observers: NameObservers = ()
        score = 0.0
        if self._cluster_obs and (qname.endswith(self._cluster_suffix)
                                  or qname.endswith(REVERSE)):
            # the detectors of cluster names (Detector.cluster): namespace, label, form
            reg, label, sub = (("", "", PTR) if qname.endswith(REVERSE)
                               else self._cluster_name(qname))
            kind = INTERNAL
            observers = self._cluster_obs
        else:
            reg, label, sub, kind = self._index.split(qname)
        if kind == NORMAL:
            score = self._label_score(label)
            n = len(sub)
            for at_least, obs in self._by_sub:
                if n >= at_least:
                    observers = obs
                    break
        names = self._names
        if len(names) >= self._names_cap:  # in place: process_many holds the dict
            for old in list(islice(names, len(names) // 2)):
                del names[old]
        entry = names[qname] = (reg, label, sub, kind, score, observers)
        return entry

    def _wake(self) -> int:
        """Event time from which the newest event may close a pane (within the current one):
        ``ts - grace >= next_close`` unless the watermark waits for a lagging tenant."""
        return self.next_close + self.grace if self.auto and not self.blocked else FAR_FUTURE

    # ------------------------------------------------------------------ time

    def _maybe_advance(self) -> None:
        """Watermark = slowest *active* tenant's newest event - grace.

        Events are partitioned by tenant, so one partition may lag another; taking the
        minimum over tenants keeps the lagging tenant's events on time. A tenant more than
        ``max_skew_s`` behind the newest event counts as idle and no longer holds time back.
        """
        floor = self.max_ts - self.skew
        holder, low = "", self.max_ts
        for t, m in self.tmax.items():
            if floor <= m < low:
                holder, low = t, m
        self.holder = holder
        wm = low - self.grace
        self.blocked = bool(holder) and wm < self.next_close
        if wm >= self.next_close or self.next_close == FAR_FUTURE:
            if self.next_close == FAR_FUTURE:
                self.next_close = wm - wm % self.pane + self.pane
                if wm < self.next_close:
                    return
            self._advance(wm, lift=True)
        if len(self.tmax) > 4 * max(16, len(self.tenants)):
            for t in [t for t, m in self.tmax.items() if m < floor]:
                del self.tmax[t]  # in place: process_many holds the dict

    def advance_to(self, watermark: int) -> bool:
        """Move the watermark forward (live drivers, after each batch and when input idles).

        Only a watermark that lets a pane close does any work -- in between, a later
        watermark changes no output, and replay advances at pane boundaries the same way --
        so a driver may call this as often as it likes. True when panes closed.
        """
        if watermark > self.watermark and (watermark >= self.next_close
                                           or self.next_close == FAR_FUTURE):
            self._advance(watermark, lift=True)
            return True
        return False

    def flush(self) -> None:
        """End of input: close every open window (auto-denies stay until they expire)."""
        if self.max_ts > -FAR_FUTURE:
            self._advance(self.max_ts + max(self.cfg.windows) * 1_000_000 + self.pane,
                          lift=False)

    def _advance(self, watermark: int, lift: bool) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        pane = self.pane
        self.next_close = watermark - watermark % pane + pane
        self.telemetry.close(watermark)
        for ps in sorted(k for k in self.counts if k + pane <= watermark):
            counts = self.counts.pop(ps)
            for on_pane in self._on_pane:
                on_pane(ps, counts)
        for on_watermark in self._on_watermark:
            on_watermark(watermark)
        self.incidents.expire(watermark)
        if lift:
            self.responder.expire(watermark)

    # ------------------------------------------------------------------ output

    def _emit(self, type_: str, key: str, value: dict[str, Any],
              record: tuple[bytes, bytes] | None = None) -> None:
        self.out.append(Output(type_, key, value, record))
        self.emitted[type_] += 1
        self.recent[type_].append(value)
        if type_ == "telemetry" and value["window_end"] - value["window_start"] == \
                self.min_window:
            t = self.tenants.setdefault(value["tenant"], {
                "queries": 0, "nxdomain": 0, "denied": 0, "anomalies": 0, "alerts": 0})
            t["queries"] += value["queries"]
            t["nxdomain"] += value["rcode"].get("NXDOMAIN", 0)
            t["denied"] += value["decision"].get("deny", 0)

    def _anomaly(self, a: dict[str, Any]) -> None:
        self._emit("anomaly", a["tenant"], a)
        self.tenants.setdefault(a["tenant"], {"queries": 0, "nxdomain": 0, "denied": 0,
                                              "anomalies": 0, "alerts": 0})["anomalies"] += 1
        self.alerts.on_anomaly(a)
        self.responder.on_anomaly(a)

    def _alert(self, rule_id: str, alert: dict[str, Any]) -> None:
        self._emit("alert", rule_id, alert)
        t = self.tenants.get(alert["tenant"])
        if t is not None:
            t["alerts"] += 1

    def _policy(self, update: dict[str, Any], record: tuple[bytes, bytes]) -> None:
        self._emit("policy_update", update["key"], update, record)

    def drain(self) -> list[Output]:
        out, self.out = self.out, []
        return out

    def status(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "late_dropped": self.late_dropped,
            "watermark_us": self.watermark if self.watermark > -FAR_FUTURE else None,
            "open_panes": self.telemetry.open_panes(),
            "emitted": dict(self.emitted),
            "suppressed_duplicates": self.incidents.suppressed,
            "open_incidents": len(self.incidents.open),
            "alerts_suppressed": self.alerts.suppressed,
            "alert_rules": [r.id for r in self.alerts.rules.rules],
            "alert_rules_error": self.alerts.last_error,
            "auto_denies": self.responder.status(),
            "tenants": {t: dict(v) for t, v in sorted(self.tenants.items())},
            "recent_anomalies": list(self.recent["anomaly"])[-10:],
            "recent_alerts": list(self.recent["alert"])[-10:],
            "recent_policy_updates": list(self.recent["policy_update"])[-10:],
        }
