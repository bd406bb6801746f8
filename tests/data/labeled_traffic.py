"""Labeled DNS traffic for the streams evaluation, generated from public knowledge.

DGA families (own re-implementations of published algorithms and their documented shapes):

* ``necurs``   — 64-bit mixing PRNG seeded by date and sequence number, 7..21 letters from
                 a 25-letter alphabet, 43 TLDs (as documented in public DGA write-ups).
* ``ramnit``   — Park-Miller style LCG, 8..19 letters, one TLD.
* ``banjori``  — mutates the first four letters of a seed domain each step
                 (``earnestnessbiophysicalohax.com``), so most of the name stays English.
* ``conficker``— Conficker.C-style: 4..9 random letters over a large TLD set.
* ``cryptolocker`` — CryptoLocker-style: 12..15 letters from shifted/xor-ed date seeds.
* ``suppobox`` — dictionary DGA: two English words joined, ``.net``/``.com``.

Tunneling tools' encodings: ``iodine`` (base32 and base128-ish downstream labels under
``t.<domain>``), ``dnscat2`` (hex with a session prefix), ``dns2tcp`` (base64-ish with a
tool-specific prefix), and a ``lowslow`` exfiltration (base32 chunks every ~30 s for an hour).

Benign registered domains: the 500 popular domains of the npm ``top-sites`` package (MIT,
copied to ``benign_top_sites.txt``) and the Public Suffix List private-section registered
domains bundled with tldextract (``psl_private_domains``).
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import string
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent
LETTERS = string.ascii_lowercase
MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------- DGA families

def necurs(day: dt.date, count: int, magic: int = 9) -> list[str]:
    def mix(v: int) -> int:
        for i in range((v & 0x7F) + 21):
            v = (v + (((v * 7) ^ (v << 15)) + 8 * i - (v >> 5))) & MASK64
        return v

    tlds = [
        "tj", "in", "jp", "tw", "ac", "cm", "la", "mn", "so", "sh", "sc", "nu", "nf", "mu",
        "ms", "mx", "ki", "im", "cx", "cc", "tv", "bz", "me", "eu", "de", "ru", "co", "su",
        "pw", "kz", "sx", "us", "ug", "ir", "to", "ga", "com", "net", "org", "biz", "xxx",
        "pro", "bit",
    ]
    out = []
    for seq in range(count):
        n = mix(day.year)
        n = mix(n + day.month + 43690)
        n = mix(n + (day.day >> 2))
        n = mix(n + seq)
        n = mix(n + magic)
        name = []
        for i in range(n % 15 + 7):
            n = mix(n + i)
            name.append(chr(ord("a") + n % 25))
            n = mix(n + 0xABBEDF)
        out.append("".join(name) + "." + tlds[n % len(tlds)])
    return out


def ramnit(seed: int, count: int, tld: str = "com") -> list[str]:
    value = seed

    def rnd(mod: int) -> int:
        nonlocal value
        value = (16807 * (value % 127773) - 2836 * (value // 127773)) & 0xFFFFFFFF
        return value % mod

    out = []
    for _ in range(count):
        a = value
        length = rnd(12) + 8
        b = value
        out.append("".join(chr(ord("a") + rnd(25)) for _ in range(length)) + "." + tld)
        m = a * b
        value = (m + m // 2**32) % 2**32
    return out


def banjori(count: int, seed: str = "earnestnessbiophysicalohax.com") -> list[str]:
    def wrap(v: int) -> int:
        return ord("a") + (v - ord("a")) % 26

    out, d = [], [ord(c) for c in seed]
    for _ in range(count):
        d[0] = wrap(d[0] + d[3])
        d[1] = wrap(d[0] + 2 * d[1])
        d[2] = wrap(d[0] + d[2] - 1)
        d[3] = wrap(d[1] + d[2] + d[3])
        out.append("".join(map(chr, d)))
    return out


def conficker(day: dt.date, count: int) -> list[str]:
    rng = random.Random(day.toordinal() * 7919)
    tlds = [
        "com", "net", "org", "info", "biz", "ws", "cn", "cc", "de", "ch", "at", "ru", "in",
        "us", "eu", "jp", "kz", "tw", "hk", "nl", "pl", "be", "ca", "co.uk", "co.za", "mx",
        "br", "ag", "es",
    ]
    return [
        "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 9))) + "." + rng.choice(tlds)
        for _ in range(count)
    ]


def cryptolocker(day: dt.date, count: int) -> list[str]:
    out = []
    d, m, y = day.day, day.month, day.year
    tlds = [
        "com", "net", "biz", "ru", "org", "co.uk", "info",
    ]
    for i in range(count):
        dd, mm, yy = (d + i) & 0xFFFFFFFF, m, y + i
        name = []
        for _ in range(12 + (i % 4)):
            dd = (((dd ^ (dd << 13)) & 0xFFFFFFFF) >> 19) ^ ((dd & 0xFFFFFFFE) << 12)
            mm = (((mm ^ (mm << 2)) & 0xFFFFFFFF) >> 25) ^ ((mm & 0xFFFFFFF8) << 4)
            yy = (((yy ^ (yy << 3)) & 0xFFFFFFFF) >> 11) ^ ((yy & 0xFFFFFFF0) << 17)
            dd &= 0xFFFFFFFF
            mm &= 0xFFFFFFFF
            yy &= 0xFFFFFFFF
            name.append(LETTERS[(dd ^ mm ^ yy) % 25])
        out.append("".join(name) + "." + tlds[i % len(tlds)])
    return out


SUPPOBOX_WORDS = [
    "above", "action", "advance", "afraid", "against", "airplane", "almost", "alone",
    "already", "although", "always", "amount", "anger", "angry", "animal", "another",
    "answer", "appear", "apple", "around", "arrive", "article", "attempt", "banker",
    "became", "beside", "between", "breakfast", "brother", "brought", "building",
    "business", "children", "company", "condition", "consider", "continue", "country",
    "course", "cover", "danger", "daughter", "decide", "degree", "distant", "doctor",
    "during", "early", "either", "english", "enough", "evening", "every", "example",
    "expect", "family", "father", "figure", "finger", "finish", "follow", "forest",
    "forward", "friend", "further", "garden", "general", "gentle", "govern", "great",
    "ground", "happen", "heavy", "history", "however", "hundred", "husband", "include",
    "instead", "interest", "island", "itself", "kitchen", "knowledge", "language",
    "laughed", "leather", "letter", "little", "market", "matter", "measure", "member",
    "middle", "minute", "modern", "morning", "mother", "mountain", "nation", "nature",
    "neighbor", "nothing", "number", "office", "often", "order", "other", "paper", "party",
    "people", "perhaps", "picture", "please", "pleasant", "position", "possible", "present",
    "pretty", "probable", "problem", "produce", "public", "quarter", "question", "rather",
    "reason", "record", "remember", "result", "river", "sailing", "school", "season",
    "second", "several", "shoulder", "silver", "simple", "single", "sister", "soldier",
    "special", "spring", "square", "station", "stream", "strange", "street", "strong",
    "student", "subject", "sudden", "summer", "suppose", "surface", "system", "teacher",
    "thousand", "through", "together", "travel", "trouble", "value", "various", "village",
    "weather", "welcome", "western", "whether", "window", "winter", "without", "wonder",
    "yellow", "yesterday",
]


def suppobox(seed: int, count: int) -> list[str]:
    words = SUPPOBOX_WORDS
    out = []
    for c in range(count):
        nr = seed + c
        bits = [0] * 16
        for i, pos in enumerate((3, 9, 13, 6, 2, 4, 11, 7, 14, 1, 10, 5, 8, 12, 0)):
            bits[pos] = (nr >> i) & 1
        first = second = 0
        for i in range(7):
            first = (first << 1) ^ bits[i]
        for i in range(7, 15):
            second = (second << 1) ^ bits[i]
        out.append(words[first % len(words)] + words[(second + 0x80) % len(words)]
                   + (".net" if c % 3 else ".com"))
    return out


def dga_family(name: str, client_seed: int, count: int) -> list[str]:
    """``count`` domains of family ``name`` for one infected client (seeded per client)."""
    day = dt.date(2024, 1, 1) + dt.timedelta(days=client_seed % 365)
    if name == "necurs":
        return necurs(day, count, magic=client_seed % 16)
    if name == "ramnit":
        return ramnit(0xEF214BBF ^ client_seed, count)
    if name == "banjori":
        return [d for d in banjori(count + client_seed % 50)][-count:]
    if name == "conficker":
        return conficker(day, count)
    if name == "cryptolocker":
        return cryptolocker(day, count)
    if name == "suppobox":
        return suppobox(client_seed * 977, count)
    raise KeyError(name)


DGA_FAMILIES = ("necurs", "ramnit", "banjori", "conficker", "cryptolocker", "suppobox")


# ---------------------------------------------------------------- tunneling encodings

B128 = string.ascii_letters + string.digits + "-" + "".join(chr(c) for c in range(0xC0, 0xFF))


def iodine_name(rng: random.Random, domain: str, seq: int) -> str:
    """iodine: <type char><hex seq><base32 payload> split into 63-char labels under t.DOM."""
    payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(60, 110)))
    enc = base64.b32encode(payload).decode().rstrip("=").lower()
    data = "p" + format(seq & 0xFFF, "03x") + enc
    labels = [data[i : i + 63] for i in range(0, len(data), 63)]
    return ".".join([*labels, "t", domain])


def dnscat2_name(rng: random.Random, domain: str, seq: int) -> str:
    """dnscat2: hex-encoded packet (session id, seq, ack, data) in labels of up to 63."""
    packet = bytes(rng.getrandbits(8) for _ in range(rng.randint(30, 90)))
    hexed = (format(seq & 0xFFFF, "04x") + packet.hex())
    labels = [hexed[i : i + 63] for i in range(0, len(hexed), 63)]
    return ".".join([*labels, domain])


def dns2tcp_name(rng: random.Random, domain: str, seq: int) -> str:
    """dns2tcp: base64-ish (lower-cased, '+/' mapped) payload with a short header label."""
    payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(40, 100)))
    enc = base64.b64encode(payload).decode().rstrip("=").replace("+", "-").replace("/", "0")
    enc = enc.lower()
    labels = [enc[i : i + 63] for i in range(0, len(enc), 63)]
    return ".".join([format(seq & 0xFFFF, "x"), *labels, "ssh", domain])


def lowslow_name(rng: random.Random, domain: str, seq: int) -> str:
    """Slow exfiltration: one base32 chunk of a 'file' per query, sequence number label."""
    chunk = bytes(rng.getrandbits(8) for _ in range(20))
    return f"{base64.b32encode(chunk).decode().rstrip('=').lower()}.{seq}.{domain}"


TUNNEL_TOOLS = {
    # tool: (name maker, qtypes, seconds between queries)
    "iodine": (iodine_name, ("NULL", "NULL", "TXT", "CNAME"), 0.2),
    "dnscat2": (dnscat2_name, ("TXT", "CNAME", "MX"), 0.5),
    "dns2tcp": (dns2tcp_name, ("TXT", "KEY"), 0.3),
    "lowslow": (lowslow_name, ("A", "AAAA"), 30.0),
}


# ---------------------------------------------------------------- benign domains

def top_sites() -> list[str]:
    lines = (HERE / "benign_top_sites.txt").read_text().split()
    return [x for x in lines if x and not x.startswith("#")]


def psl_private_domains() -> list[str]:
    from dnsflow.streams.detectors.build_model import psl_private_registered

    return sorted(f"{d}.{suffix}" for d, suffix in psl_private_registered())


def event(ts_us: int, tenant: str, client: str, qname: str, qtype: str = "A",
          rcode: str = "NOERROR", **extra: object) -> dict[str, object]:
    """One event in the schema with plausible defaults."""
    ev: dict[str, object] = {
        "v": 1, "ts": ts_us, "edge": "edge-1", "tenant": tenant, "namespace": tenant,
        "client_ip": client, "transport": "udp", "qname": qname, "qtype": qtype,
        "rcode": rcode, "answers": [] if rcode != "NOERROR" else ["192.0.2.1"],
        "latency_us": 800, "cache": "miss", "decision": "allow", "rule": "",
        "policy_version": 1, "upstream": "udp://127.0.0.1:53",
    }
    ev.update(extra)
    return ev


def iter_names(tool: str, seed: int, domain: str, count: int) -> Iterator[str]:
    make = TUNNEL_TOOLS[tool][0]
    rng = random.Random(seed)
    for i in range(count):
        yield make(rng, domain, i)


# ---------------------------------------------------------------- evaluation scenario

def benign_pool() -> list[str]:
    """Benign registered domains: popular sites plus PSL private-section domains."""
    import tldextract

    ext = tldextract.TLDExtract(suffix_list_urls=(), include_psl_private_domains=False)
    out: set[str] = set()
    for name in top_sites() + psl_private_domains():
        r = ext(name)
        if r.domain and r.suffix:
            out.add(f"{r.domain}.{r.suffix}")
    return sorted(out)


CDNS = ("cloudfront.net", "akamaihd.net", "azureedge.net", "fastly.net", "s3.amazonaws.com",
        "googleusercontent.com", "edgekey.net")
BENIGN_SUBS = ("www", "api", "cdn", "static", "login", "mail", "img", "m", "app", "auth")


def scenario(seed: int = 7, minutes: int = 70, benign_clients: int = 120,
             infected_per_family: int = 20, tunnels_per_tool: int = 10,
             t0: int = 1_699_999_980_000_000, dga_interval_s: float = 2.0,
             dga_names: int = 60) -> tuple[list[dict[str, object]], dict[str, str]]:
    """A tenant's traffic with ground truth: ``(events sorted by ts, {client: label})``.

    Labels: ``benign``, ``dga:<family>``, ``tunnel:<tool>``. Every client, infected or not,
    also makes ordinary queries (popular domains with subdomains, the odd NXDOMAIN typo,
    Kubernetes search-path NXDOMAINs). Every sixth benign client is a hard negative: twice
    as chatty, 5 % typos, and 30 % hashed CDN/cloud hostnames.
    """
    rng = random.Random(seed)
    pool = benign_pool()
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(pool))]
    rng.shuffle(pool)
    span_us = minutes * 60 * 1_000_000
    events: list[dict[str, object]] = []
    truth: dict[str, str] = {}

    def background(client: str, per_min: float, typo: float = 0.005, cdn: float = 0.0) -> None:
        n = int(per_min * minutes)
        picks = rng.choices(pool, weights, k=n)
        for reg in picks:
            ts = t0 + rng.randrange(span_us)
            r = rng.random()
            if r < 0.15:
                name = f"{rng.choice(('db', 'cache', 'api'))}.default.svc.cluster.local"
                events.append(event(ts, "corp", client, name, rcode="NXDOMAIN"))
                continue
            if r < 0.15 + cdn:  # hashed CDN/cloud hostnames (look-alikes of tunnels/DGAs)
                h = "".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(12, 40)))
                events.append(event(ts, "corp", client, f"{h}.{rng.choice(CDNS)}"))
                continue
            name = f"{rng.choice(BENIGN_SUBS)}.{reg}" if r < 0.7 else reg
            rcode = "NOERROR"
            if rng.random() < typo:  # a typo
                i = rng.randrange(len(name))
                name = name[:i] + rng.choice(LETTERS) + name[i + 1:]
                rcode = "NXDOMAIN"
            events.append(event(ts, "corp", client, name, rcode=rcode,
                                cache="hit" if rng.random() < 0.6 else "miss"))

    octet = 0

    def new_client() -> str:
        nonlocal octet
        octet += 1
        return f"10.{octet // 250}.{octet % 250}.{rng.randint(1, 250)}"

    for i in range(benign_clients):
        c = new_client()
        truth[c] = "benign"
        if i % 6 == 0:  # hard negatives: sloppy, chatty clients full of CDN hashes
            background(c, 60, typo=0.05, cdn=0.3)
        else:
            background(c, 30)
    for family in DGA_FAMILIES:
        for k in range(infected_per_family):
            c = new_client()
            truth[c] = f"dga:{family}"
            background(c, 10)
            names = dga_family(family, seed * 1000 + k, dga_names)
            start = t0 + rng.randrange(span_us // 2)
            live = rng.randrange(len(names))
            gap = int(dga_interval_s * 1_000_000)
            for i, name in enumerate(names):  # walking the list, one name per interval
                ts = start + i * gap + rng.randrange(min(gap, 500_000))
                events.append(event(ts, "corp", c, name,
                                    rcode="NOERROR" if i == live else "NXDOMAIN"))
    for tool, (make, qtypes, gap) in TUNNEL_TOOLS.items():
        for k in range(tunnels_per_tool):
            c = new_client()
            truth[c] = f"tunnel:{tool}"
            background(c, 10)
            domain = f"{''.join(rng.choice(LETTERS) for _ in range(8))}-relay.net"
            n = int(min(span_us * 0.9 / (gap * 1e6), 300 if gap < 5 else 10_000))
            start = t0 + (rng.randrange(span_us - int(n * gap * 1e6)) if gap < 5 else 0)
            trng = random.Random(seed * 31 + k)
            for i in range(n):
                ts = start + int(i * gap * 1e6) + rng.randrange(100_000)
                events.append(event(ts, "corp", c, make(trng, domain, i),
                                    qtype=qtypes[i % len(qtypes)]))
    events.sort(key=lambda e: e["ts"])  # type: ignore[arg-type, return-value]
    return events, truth
