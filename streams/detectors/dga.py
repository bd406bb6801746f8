"""DGA: clients resolving many machine-generated registered domains.

Looks at, per tenant and client over ``window_s`` (current plus previous tumbling window):
the distinct registered domains that came back NXDOMAIN, and the distinct registered
domains whose label is unlikely under the benign character trigram model (``ngram.py``).
Why: a DGA-infected host walks a list of generated names of which almost none are
registered, so *many distinct NXDOMAIN registered domains* is the robust signal — it also
catches dictionary DGAs (suppobox) and mutation DGAs (banjori) whose names look English.
Character likelihood raises the score and lets random-looking families trip earlier.
Slow walkers (one name every 20 s or more) are caught over ``slow_window_s`` (10 min) with
``slow_nx_min`` distinct NXDOMAIN registered domains.
Registered domains the tenant has resolved before are never counted as DGA names (a typo
under google.com is not a DGA domain).
A client with many NXDOMAIN names that look benign must also have a high NXDOMAIN share of
its queries (``nx_share``): a chatty client with the odd typo is not infected.
Scoring is per registered domain (cached) and per client — never per query. The anomaly
names the most suspicious domain that *resolved* (the likely live C2) when there is one, and
lists the top-scoring domains in its evidence.
CDN/cloud look-alikes and internal names never reach this detector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dnsflow.streams.detectors.base import REG, SCORE, Detection, Detector, Part, WindowConfig
from dnsflow.streams.windows import to_us

if TYPE_CHECKING:
    from dnsflow.streams.detectors.base import DetectorContext, Key, NameEntry


class DgaConfig(WindowConfig):
    min_label_len: int = Field(6, ge=1, description="shorter registered labels are not scored")
    suspicious_score: float = Field(0.6, ge=0, le=1)
    nx_min: int = Field(8, ge=1, description="distinct NXDOMAIN registered domains per client")
    susp_min: int = Field(4, ge=1, description="distinct suspicious registered domains")
    slow_window_s: float = Field(600, gt=0, description="window for slow DGAs")
    slow_nx_min: int = Field(12, ge=1)
    slow_nx_share: float = Field(0.1, ge=0, le=1)
    c2_score: float = Field(0.8, ge=0, le=1, description="a resolving domain needs this "
                            "score to be named as the live C2 (and be auto-denied)")
    nx_share: float = Field(0.2, ge=0, le=1, description="NXDOMAIN share of a client's "
                            "queries needed when its NXDOMAIN names look benign")


class _Client:
    __slots__ = ("n", "next_nx", "next_susp", "nx", "nxq", "prev_n", "prev_nx", "prev_nxq",
                 "prev_susp", "resolved", "susp", "w")

    def __init__(self, w: int, nx_min: int, susp_min: int) -> None:
        self.w = w
        self.nx: dict[str, float] = {}  # NXDOMAIN registered domain -> label score
        self.susp: dict[str, tuple[float, bool]] = {}  # -> (score, was NXDOMAIN)
        self.resolved: dict[str, float] = {}  # suspicious ones that resolved (C2 candidates)
        # queries and NXDOMAIN answers in this window; the previous window's counts
        self.n = self.nxq = self.prev_n = self.prev_nxq = self.prev_nx = self.prev_susp = 0
        self.next_nx, self.next_susp = nx_min, susp_min  # evaluate again at these counts


class _Slow:
    """Long-window view of one client, fed by NXDOMAIN events and closed short windows."""

    __slots__ = ("lw", "n", "next", "nx", "nxq", "prev", "prev_n", "prev_nxq")

    def __init__(self, lw: int, first: int, prev: _Slow | None = None) -> None:
        self.lw = lw
        self.nx: dict[str, float] = {}
        self.n = 0    # queries of closed short windows in this long window
        self.nxq = 0
        # the previous long window is carried (an approximate sliding window)
        self.prev = len(prev.nx) if prev is not None else 0
        self.prev_n = prev.n if prev is not None else 0
        self.prev_nxq = prev.nxq if prev is not None else 0
        self.next = first


class DgaDetector(Detector):
    kind = "dga"
    order = 10
    config = DgaConfig
    parts = (Part("clients", _Client), Part("slow", _Slow))

    def __init__(self, cfg: DgaConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.known = ctx.known
        self.model = ctx.model
        self.names = 0  # every name with a public suffix
        ctx.label_score = self.label_score  # cached with every name; new_domain uses it
        self.win = to_us(cfg.window_s)
        self.clients: dict[tuple[str, str], _Client] = {}
        self.lwin = to_us(cfg.slow_window_s)
        self.slow: dict[tuple[str, str], _Slow] = {}
        self.min_len = cfg.min_label_len
        self.thr = cfg.suspicious_score

    def label_score(self, label: str) -> float:
        if len(label) < self.min_len or label.startswith("xn--"):
            return 0.0  # too short to judge; IDN (punycode) labels are not random
        return self.model.score(label)

    def bind(self, ctx: DetectorContext) -> None:
        self.known = ctx.known

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """One query of client ``key`` = (tenant, client) for a name with a public suffix;
        its registered domain's label score is cached with the name (:meth:`label_score`)."""
        s = name[SCORE]
        rcode = ev["rcode"]
        nx = rcode == "NXDOMAIN"
        st = self.clients.get(key)
        w = ts // self.win
        if st is None:
            st = self.clients[key] = _Client(w, self.cfg.nx_min, self.cfg.susp_min)
        elif w > st.w:
            sl = self._slow_state(key, st.w * self.win // self.lwin)
            sl.n += st.n
            sl.nxq += st.nxq
            prev = (len(st.nx), len(st.susp), st.n, st.nxq) if w == st.w + 1 else (0, 0, 0, 0)
            st.__init__(w, self.cfg.nx_min, self.cfg.susp_min)  # type: ignore[misc]
            st.prev_nx, st.prev_susp, st.prev_n, st.prev_nxq = prev
        st.n += 1
        if not nx and s < self.thr:
            return
        reg = name[REG]
        new_resolved = False
        if nx:
            st.nxq += 1
            if self.known(key[0], reg):
                return  # resolved in this tenant before: a typo or outage, not a DGA name
            self._slow(ts, key, st, reg, s)
            if reg in st.nx:
                return
            st.nx[reg] = s
        if s >= self.thr and reg not in st.susp:
            st.susp[reg] = (s, nx)
            if rcode == "NOERROR" and s >= self.cfg.c2_score:
                st.resolved[reg] = s
                new_resolved = True
        n_nx = len(st.nx) + st.prev_nx
        n_susp = len(st.susp) + st.prev_susp
        if n_nx >= st.next_nx or n_susp >= st.next_susp or (new_resolved and st.next_nx >
                                                             self.cfg.nx_min):
            self._evaluate(ts, key, st, n_nx, n_susp)

    def _slow_state(self, key: tuple[str, str], lw: int) -> _Slow:
        sl = self.slow.get(key)
        if sl is None or lw > sl.lw:
            prev = sl if sl is not None and lw == sl.lw + 1 else None
            sl = self.slow[key] = _Slow(lw, self.cfg.slow_nx_min, prev)
        return sl

    def _slow(self, ts: int, key: Key, st: _Client, reg: str, s: float) -> None:
        """Slow DGAs (one name every 20 s or more) over ``slow_window_s``."""
        tenant, client = key
        sl = self._slow_state(key, ts // self.lwin)
        if reg in sl.nx or len(sl.nx) >= 5000:
            return
        sl.nx[reg] = s
        distinct = len(sl.nx) + sl.prev
        if distinct < sl.next:
            return
        sl.next = 2 * distinct
        top = sorted(sl.nx.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        char = sum(v for _, v in top) / len(top)
        share = (sl.nxq + sl.prev_nxq + st.nxq) / max(1, sl.n + sl.prev_n + st.n)
        # Low NXDOMAIN share (a chatty client): only clearly random names, enough of them.
        if share < self.cfg.slow_nx_share and (char < max(self.thr, 0.7) or len(top) < 5):
            return
        strength = min(1.0, distinct / (2 * self.cfg.slow_nx_min))
        self.report(Detection(
            ts=ts, kind=self.kind, tenant=tenant, client_ip=client,
            score=1 - (1 - 0.9 * strength) * (1 - 0.9 * char), key=(self.kind, tenant, client),
            evidence={"pattern": "slow", "window_s": self.cfg.slow_window_s,
                      "nxdomain_domains": distinct, "char_score": round(char, 3),
                      "nxdomain_share": round(share, 3), "domains": [d for d, _ in top]},
        ))

    def _evaluate(self, ts: int, key: Key, st: _Client, n_nx: int, n_susp: int) -> None:
        cfg = self.cfg
        tenant, client = key
        susp_nx = sum(1 for _, was_nx in st.susp.values() if was_nx)
        scored = dict(st.nx)
        scored.update({d: s for d, (s, was_nx) in st.susp.items() if was_nx})
        top = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        char = sum(s for _, s in top) / len(top) if top else 0.0
        share = (st.nxq + st.prev_nxq) / max(1, st.n + st.prev_n)
        hit = (n_nx >= cfg.nx_min and (share >= cfg.nx_share or char >= self.thr)) or (
            n_susp >= cfg.susp_min and susp_nx >= max(2, cfg.susp_min // 2))
        if n_nx >= st.next_nx:
            st.next_nx = n_nx * 2
        if n_susp >= st.next_susp:
            st.next_susp = n_susp * 2
        if not hit:
            return
        strength = min(1.0, n_nx / (2 * cfg.nx_min))
        score = 1 - (1 - 0.9 * strength) * (1 - 0.9 * char)
        # Name a domain only when one resolved: that is the live C2 worth denying; the
        # unregistered rest stay in the evidence.
        domain = (min(st.resolved.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                  if st.resolved else "")
        self.report(Detection(
            ts=ts, kind=self.kind, tenant=tenant, client_ip=client, domain=domain,
            score=score, key=(self.kind, tenant, client),
            evidence={
                "pattern": "burst",
                "window_s": self.cfg.window_s,
                "nxdomain_domains": n_nx,
                "suspicious_domains": n_susp,
                "char_score": round(char, 3),
                "nxdomain_share": round(share, 3),
                "resolved": sorted(st.resolved)[:10],
                "domains": [d for d, _ in top],
            },
        ))

    def on_watermark(self, watermark: int) -> None:
        w = watermark // self.win
        for key in [k for k, st in self.clients.items() if st.w < w - 1]:
            del self.clients[key]
        lw = watermark // self.lwin
        for key in [k for k, sl in self.slow.items() if sl.lw < lw - 1]:
            del self.slow[key]
