"""DNS tunneling and exfiltration: data carried in query names to one registered domain.

Looks at, per tenant, client and registered domain: subdomain parts at least
``min_sub_len`` long (shorter ones are ignored cheaply), how many are unique, their average
length, how random their labels look (the benign character model, which also makes hex,
base32, base64 and iodine's base128 alphabets look random), and the share of query types
that carry payload in answers (TXT, NULL, CNAME, MX, KEY, ANY, SRV).
Why: tunnels (iodine, dnscat2, dns2tcp) need a fresh name per packet, so one client sends
many unique, long, high-entropy names under one domain; a fast tunnel shows it within a
minute, a *low-and-slow* exfiltration only over ``long_window_s`` (default one hour).
CDN/cloud hostnames with hashes are allow-listed before this detector runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zlib import crc32

from pydantic import Field

from dnsflow.streams.detectors.base import REG, SUB, Detection, Detector, Part, WindowConfig
from dnsflow.streams.windows import to_us

if TYPE_CHECKING:
    from dnsflow.streams.detectors.base import DetectorContext, Key, NameEntry


class TunnelingConfig(WindowConfig):
    min_sub_len: int = Field(14, ge=1, description="subdomain part shorter than this is ignored")
    min_unique: int = Field(20, ge=2)
    long_window_s: float = Field(3600, gt=0, description="low-and-slow window")
    long_min_unique: int = Field(60, ge=2)
    min_avg_len: float = Field(18, ge=1)
    min_randomness: float = Field(0.5, ge=0, le=1)


PAYLOAD_QTYPES = frozenset({"TXT", "NULL", "CNAME", "MX", "KEY", "ANY", "SRV", "PRIVATE"})
UNIQUE_CAP = 20_000
SAMPLES = 24


class _Pair:
    __slots__ = ("bytes", "lbytes", "lcount", "lnext", "lprev", "luniq", "lw", "n", "next",
                 "payload", "prev", "samples", "uniq", "w")

    def __init__(self, w: int, lw: int, cfg: TunnelingConfig) -> None:
        self.w = w
        self.uniq: set[int] = set()  # crc32 of the subdomains: compact to keep and checkpoint
        self.n = 0
        self.bytes = 0
        self.payload = 0
        self.prev = 0
        self.next = cfg.min_unique
        self.samples: list[str] = []
        self.lw = lw
        self.luniq: set[int] = set()
        self.lcount = 0
        self.lbytes = 0
        self.lprev = 0
        self.lnext = cfg.long_min_unique


class TunnelingDetector(Detector):
    kind = "tunneling"
    order = 20
    config = TunnelingConfig
    parts = (Part("pairs", _Pair),)

    def __init__(self, cfg: TunnelingConfig, ctx: DetectorContext) -> None:
        super().__init__(cfg, ctx)
        self.model = ctx.model
        self.win = to_us(cfg.window_s)
        self.lwin = to_us(cfg.long_window_s)
        self.names = cfg.min_sub_len  # only names with a subdomain part this long
        self.pairs: dict[tuple[str, str, str], _Pair] = {}

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        tenant, client = key
        reg = name[REG]
        sub = name[SUB]
        qtype = ev["qtype"]
        pk = (tenant, client, reg)
        st = self.pairs.get(pk)
        w = ts // self.win
        lw = ts // self.lwin
        if st is None:
            st = self.pairs[pk] = _Pair(w, lw, self.cfg)
        if w > st.w:
            st.prev = len(st.uniq) if w == st.w + 1 else 0
            st.w, st.uniq, st.n, st.bytes, st.payload = w, set(), 0, 0, 0
            st.next = self.cfg.min_unique
        if lw > st.lw:
            st.lprev = len(st.luniq) if lw == st.lw + 1 else 0
            st.lw, st.luniq, st.lcount, st.lbytes = lw, set(), 0, 0
            st.lnext = self.cfg.long_min_unique
        h = crc32(sub.encode())
        uniq = st.uniq
        if len(uniq) < UNIQUE_CAP:
            uniq.add(h)
        st.n += 1
        st.bytes += len(sub)
        if qtype in PAYLOAD_QTYPES:
            st.payload += 1
        if len(st.samples) < SAMPLES and sub not in st.samples:
            st.samples.append(sub)
        luniq = st.luniq
        if len(luniq) < UNIQUE_CAP:
            luniq.add(h)
        st.lcount += 1
        st.lbytes += len(sub)
        if len(uniq) + st.prev >= st.next:
            st.next = 2 * (len(uniq) + st.prev)
            self._evaluate(ts, pk, st, slow=False)
        elif len(luniq) + st.lprev >= st.lnext:
            st.lnext = 2 * (len(luniq) + st.lprev)
            self._evaluate(ts, pk, st, slow=True)

    def randomness(self, subs: list[str]) -> float:
        """Mean trigram score of the long labels in ``subs`` (0 English-like .. 1 random)."""
        scores = [self.model.score(lab) for s in subs for lab in s.split(".") if len(lab) >= 8]
        return sum(scores) / len(scores) if scores else 0.0

    def _evaluate(self, ts: int, pk: tuple[str, str, str], st: _Pair, slow: bool) -> None:
        """``pk``: (tenant, client, registered domain)."""
        cfg = self.cfg
        tenant, client, reg = pk
        if slow:
            unique, count, total = len(st.luniq) + st.lprev, st.lcount, st.lbytes
            need = cfg.long_min_unique
        else:
            unique, count, total = len(st.uniq) + st.prev, st.n, st.bytes
            need = cfg.min_unique
        avg_len = total / count if count else 0.0
        rand = self.randomness(st.samples)
        if unique < need or avg_len < cfg.min_avg_len or rand < cfg.min_randomness:
            return
        payload_ratio = st.payload / st.n if st.n else 0.0
        u = min(1.0, unique / (4 * need))
        score = (0.35 * rand + 0.3 * u + 0.2 * min(1.0, avg_len / 60)
                 + 0.15 * payload_ratio)
        if slow:
            score = max(score, 0.6)
        self.report(Detection(
            ts=ts, kind=self.kind, tenant=tenant, client_ip=client, domain=reg,
            score=score, key=(self.kind, tenant, client, reg),
            evidence={
                "pattern": "low_and_slow" if slow else "burst",
                "window_s": cfg.long_window_s if slow else cfg.window_s,
                "unique_subdomains": unique,
                "queries": count,
                "avg_sub_len": round(avg_len, 1),
                "randomness": round(rand, 3),
                "payload_qtype_ratio": round(payload_ratio, 3),
                "samples": [f"{s}.{reg}" for s in st.samples[:5]],
            },
        ))

    def on_watermark(self, watermark: int) -> None:
        lw = watermark // self.lwin
        for key in [k for k, st in self.pairs.items() if st.lw < lw - 1]:
            del self.pairs[key]
