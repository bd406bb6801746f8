"""Just enough DNS wire format for the hot path, without building message objects.

Why not dnslib/dnspython here: a cache hit must cost a few microseconds, so the edge reads the
header and the question with ``struct`` and slices, and patches cached answers in place. Full
parsing (RR walk with name decompression) happens only on a cache miss, in :func:`parse_response`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010
OPCODE_MASK = 0x7800

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS"}

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
          47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 64: "SVCB", 65: "HTTPS", 99: "SPF",
          252: "AXFR", 251: "IXFR", 255: "ANY", 257: "CAA"}
QTYPE_NUM = {v: k for k, v in QTYPES.items()}

T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_MX, T_TXT, T_AAAA, T_SRV, T_OPT = (
    1, 2, 5, 6, 12, 15, 16, 28, 33, 41)
T_DNAME, T_AXFR, T_IXFR = 39, 252, 251
C_IN, C_CH, C_ANY = 1, 3, 255
MAX_UDP = 1232           # DNS Flag Day 2020: the largest UDP answer unless configured
MAX_CACHE_TTL = 86_400   # default cap on every TTL the edge passes on (unbound cache-max-ttl)
# query types a client may not ask (unbound answers these FORMERR too): none, OPT, TKEY,
# TSIG, MAILB, MAILA and the meta range 128-248 (RFC 6895 3.1)
_META_QTYPES = frozenset((0, 41, 249, 250, 253, 254, *range(128, 249)))


def qtype_name(num: int) -> str:
    return QTYPES.get(num) or f"TYPE{num}"


def rcode_name(num: int) -> str:
    return RCODES.get(num) or f"RCODE{num}"


class WireError(ValueError):
    """A packet that does not parse; ``rcode`` says how to answer (or None to drop)."""

    def __init__(self, reason: str, rcode: int | None = FORMERR,
                 query: Query | None = None) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.query = query   # header and question as far as they parsed (to echo them)


@dataclass(slots=True)
class Query:
    """The parts of a query the edge needs, read without decoding the whole message."""

    raw: bytes
    id: int
    flags: int
    qwire: bytes          # question name as sent (client's letter case), ends with b"\\0"
    qtype: int
    qclass: int
    qend: int             # offset just past the question
    edns: bool = False
    udp_size: int = 512
    do: bool = False
    edns_version: int = 0

    @property
    def question(self) -> bytes:
        return self.raw[12:self.qend]


def read_qname(buf: bytes, off: int) -> int:
    """Offset past an uncompressed name at ``off`` (question names are never compressed)."""
    n = len(buf)
    start = off
    while True:
        if off >= n:
            raise WireError("question name runs past the end of the packet")
        ln = buf[off]
        if ln == 0:
            off += 1
            break
        if ln & 0xC0:
            raise WireError("compressed or extended label in the question")
        off += 1 + ln
        if off - start > 255:
            raise WireError("question name longer than 255 octets")
    if off - start > 255:
        raise WireError("question name longer than 255 octets")
    return off


def skip_name(buf: bytes, off: int) -> int:
    """Offset past a possibly compressed name (pointers end it)."""
    n = len(buf)
    for _ in range(128):
        if off >= n:
            raise WireError("name runs past the end of the packet")
        ln = buf[off]
        if ln == 0:
            return off + 1
        if ln & 0xC0 == 0xC0:
            if off + 2 > n:
                raise WireError("truncated compression pointer")
            return off + 2
        if ln & 0xC0:
            raise WireError("unknown label type")
        off += 1 + ln
    raise WireError("name has too many labels")


def parse_query(raw: bytes) -> Query:
    """Header, question and EDNS of a query, strictly: every byte must parse. Raises
    :class:`WireError` (rcode None = drop; ``query`` set when the question parsed, so the
    reply can echo it and its EDNS)."""
    if len(raw) < 12:
        raise WireError("shorter than a DNS header", None)
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(raw)
    if flags & QR:
        raise WireError("a response, not a query", None)
    opcode = (flags & OPCODE_MASK) >> 11
    if opcode != 0 and qd == 0:
        raise WireError(f"opcode {opcode} not implemented", NOTIMP)
    if qd != 1:
        raise WireError(f"{qd} questions (exactly one is supported)")
    qend = read_qname(raw, 12)
    if qend + 4 > len(raw):
        raise WireError("question truncated")
    qtype, qclass = struct.unpack_from("!HH", raw, qend)
    qwire = raw[12:qend]
    qend += 4
    q = Query(raw, qid, flags, qwire, qtype, qclass, qend)
    bad = NOTIMP if opcode != 0 else FORMERR
    off = qend
    n = len(raw)
    try:
        for i in range(an + ns + ar):
            name_off = off
            off = skip_name(raw, off)
            if off + 10 > n:
                raise WireError("record truncated", bad, q)
            rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(raw, off)
            off += 10 + rdlen
            if off > n:
                raise WireError("record data truncated", bad, q)
            if rtype == T_OPT:
                if i < an + ns:
                    raise WireError("OPT record outside the additional section", bad, q)
                if q.edns:
                    raise WireError("more than one OPT record", bad, q)
                if raw[name_off] != 0:
                    raise WireError("OPT record owner is not the root", bad, q)
                q.edns = True
                q.udp_size = max(512, min(rclass, 65535))
                q.edns_version = (ttl >> 16) & 0xFF
                q.do = bool(ttl & 0x8000)
    except WireError as exc:
        exc.rcode, exc.query = bad, q
        raise
    if opcode != 0:
        raise WireError(f"opcode {opcode} not implemented", NOTIMP, q)
    if off != n:
        raise WireError(f"{n - off} bytes after the last record", FORMERR, q)
    if flags & TC:
        raise WireError("TC bit set in a query", FORMERR, q)
    if an:
        raise WireError("records in the answer section of a query", FORMERR, q)
    if qtype in _META_QTYPES:
        raise WireError(f"query type {qtype} cannot be asked", FORMERR, q)
    if qclass not in (C_IN, C_CH, C_ANY):  # never forwarded; REFUSED as unbound does
        raise WireError(f"query class {qclass} is not served", REFUSED, q)
    if qtype in (T_AXFR, T_IXFR):
        raise WireError("zone transfers are not served", REFUSED, q)
    return q


def opt_record(udp_size: int = 1232, do: bool = False, ext_rcode: int = 0) -> bytes:
    """An OPT pseudo-record with no options (cookies are never echoed from cache)."""
    return b"\x00" + RR_FIXED.pack(T_OPT, udp_size, (ext_rcode << 24) | (0x8000 if do else 0), 0)


def error_response(q: Query, rcode: int, *, ra: bool = True, authority: bytes = b"",
                   ns_count: int = 0) -> bytes:
    """A reply with the client's question (its case) and ID, no answers, the given rcode."""
    ext = 0
    if rcode > 15:
        ext, rcode = rcode >> 4, rcode & 0xF
    flags = QR | (q.flags & (OPCODE_MASK | RD | CD)) | (RA if ra else 0) | rcode
    ar = 1 if q.edns else 0
    head = HEADER.pack(q.id, flags, 1, 0, ns_count, ar)
    tail = opt_record(1232, q.do, ext) if q.edns else b""
    return head + q.raw[12:q.qend] + authority + tail


def formerr_from_raw(raw: bytes, rcode: int = FORMERR) -> bytes | None:
    """FORMERR (or ``rcode``) for a packet whose question cannot be echoed: the ID, no
    question. None = drop."""
    if len(raw) < 12 or raw[2] & 0x80:
        return None
    qid, flags = struct.unpack_from("!HH", raw)
    flags = QR | (flags & (OPCODE_MASK | RD)) | RA | rcode
    return HEADER.pack(qid, flags, 0, 0, 0, 0)


def echoable(q: Query) -> bool:
    """Whether a reply may carry this question: in an UPDATE (opcode 5) it is the zone
    section, which must name a SOA of a real class (RFC 2136 2.3)."""
    if (q.flags & OPCODE_MASK) >> 11 == 5:
        return q.qtype == 6 and q.qclass not in (254, 255)
    return True


def chaos_answer(q: Query, text: str) -> bytes:
    """A CH TXT answer the edge gives itself (``version.bind``, ``id.server``...)."""
    data = text.encode()[:255]
    rr = b"\xc0\x0c" + RR_FIXED.pack(T_TXT, C_CH, 0, len(data) + 1) + bytes((len(data),)) + data
    flags = QR | AA | RA | (q.flags & (RD | CD))
    head = HEADER.pack(q.id, flags, 1, 1, 0, 1 if q.edns else 0)
    return head + q.raw[12:q.qend] + rr + (opt_record(MAX_UDP, q.do) if q.edns else b"")


def upstream_query(q: Query, qid: int, qwire: bytes | None = None) -> bytes:
    """The query the edge sends upstream: lower-case name, fresh ID, clean EDNS (no cookie).

    EDNS only when the client used it: a reply to a client without OPT must carry none
    (RFC 6891), and the cache key keeps the two kinds apart. CD and AD are the client's
    (RFC 6840 5.7: AD=1 in a query asks a validating upstream for the AD bit)."""
    flags = (q.flags & (RD | CD | AD)) | RD
    head = HEADER.pack(qid, flags, 1, 0, 0, 1 if q.edns else 0)
    name = (qwire if qwire is not None else q.qwire).lower()
    opt = opt_record(1232, q.do) if q.edns else b""
    return head + name + struct.pack("!HH", q.qtype, q.qclass) + opt


def make_query(name: str, qtype: int, qid: int = 0, rd: bool = True) -> bytes:
    """A plain query (health checks, probes)."""
    return (HEADER.pack(qid, RD if rd else 0, 1, 0, 0, 1) + name_to_wire(name)
            + struct.pack("!HH", qtype, 1) + opt_record(1232))


def name_to_wire(name: str) -> bytes:
    name = name.rstrip(".")
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        b = label.encode("idna") if not label.isascii() else label.encode()
        if not 0 < len(b) < 64:
            raise WireError(f"bad label {label!r} in {name!r}")
        out.append(len(b))
        out += b
    out.append(0)
    return bytes(out)


def wire_to_text(qwire: bytes) -> str:
    """Uncompressed wire name -> lower-case presentation without trailing dot."""
    labels = []
    off = 0
    while True:
        ln = qwire[off]
        if ln == 0:
            break
        labels.append(qwire[off + 1:off + 1 + ln])
        off += 1 + ln
    text = b".".join(labels).decode("latin-1").lower()
    return text


def read_name(buf: bytes, off: int) -> tuple[str, int]:
    """Decompress a name; returns (lower-case text without trailing dot, offset past it)."""
    labels: list[bytes] = []
    end = -1
    n = len(buf)
    for _ in range(128):
        if off >= n:
            raise WireError("name runs past the end of the packet")
        ln = buf[off]
        if ln == 0:
            if end < 0:
                end = off + 1
            return b".".join(labels).decode("latin-1").lower(), end
        if ln & 0xC0 == 0xC0:
            if off + 2 > n:
                raise WireError("truncated pointer")
            if end < 0:
                end = off + 2
            ptr = U16.unpack_from(buf, off)[0] & 0x3FFF
            if ptr >= off:
                raise WireError("forward compression pointer")
            off = ptr
            continue
        labels.append(buf[off + 1:off + 1 + ln])
        off += 1 + ln
    raise WireError("compression loop")


@dataclass(slots=True)
class Response:
    """What the edge needs from an upstream answer: rcode, TTL positions, names, answers."""

    rcode: int
    flags: int
    ttl_offsets: list[int] = field(default_factory=list)   # every non-OPT RR TTL field
    min_ttl: int | None = None                              # over answer+authority RRs
    negative_ttl: int | None = None                         # RFC 2308: min(SOA ttl, minimum)
    answers: list[str] = field(default_factory=list)        # "A 10.0.0.1", "CNAME x.y"
    answer_ips: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)          # owners/targets for isolation
    truncated: bool = False
    an_count: int = 0
    ttls: list[int] = field(default_factory=list)           # as clamped, per ttl_offsets
    ttl_fixed: bool = False                                 # a TTL was clamped in place
    edns: bool = False


def _name_in_rdata(buf: bytes, off: int, end: int) -> tuple[str, int]:
    name, p = read_name(buf, off)
    if p > end:
        raise WireError("name runs past its record data")
    return name, p


def _rdata_text(buf: bytes, rtype: int, off: int, rdlen: int) -> tuple[str, str | None]:
    """Presentation of common rdata, plus the target name when it is a name. Raises
    :class:`WireError` when the rdata of a known type does not fill its length exactly."""
    end = off + rdlen
    if rtype == T_A:
        if rdlen != 4:
            raise WireError("A record data is not 4 octets")
        return ".".join(str(b) for b in buf[off:end]), None
    if rtype == T_AAAA:
        if rdlen != 16:
            raise WireError("AAAA record data is not 16 octets")
        return str(ipaddress.IPv6Address(buf[off:end])), None
    if rtype in (T_CNAME, T_PTR, T_NS, T_DNAME):
        name, p = _name_in_rdata(buf, off, end)
        if p != end:
            raise WireError("bytes after the name in record data")
        return name, name
    if rtype == T_MX:
        if rdlen < 3:
            raise WireError("MX record data too short")
        pref = U16.unpack_from(buf, off)[0]
        name, p = _name_in_rdata(buf, off + 2, end)
        if p != end:
            raise WireError("bytes after the MX exchange")
        return f"{pref} {name}", name
    if rtype == T_SRV:
        if rdlen < 7:
            raise WireError("SRV record data too short")
        prio, weight, port = struct.unpack_from("!HHH", buf, off)
        name, p = _name_in_rdata(buf, off + 6, end)
        if p != end:
            raise WireError("bytes after the SRV target")
        return f"{prio} {weight} {port} {name}", name
    if rtype == T_SOA:
        _, p = _name_in_rdata(buf, off, end)
        _, p = _name_in_rdata(buf, p, end)
        if p + 20 != end:
            raise WireError("SOA record data has the wrong length")
        return buf[off:end].hex(), None
    if rtype == T_TXT:
        if rdlen < 1:
            raise WireError("empty TXT record data")
        parts = []
        p = off
        while p < end:
            ln = buf[p]
            if p + 1 + ln > end:
                raise WireError("TXT string runs past its record data")
            parts.append(buf[p + 1:p + 1 + ln].decode("utf-8", "replace"))
            p += 1 + ln
        return " ".join(f'"{s}"' for s in parts), None
    return buf[off:end].hex(), None


def question_of(packet: bytes) -> bytes:
    """The question bytes (name, type, class) of a packet we built (one question)."""
    return packet[12:read_qname(packet, 12) + 4]


def parse_response(buf: bytes, question: bytes | None = None,
                   max_ttl: int = MAX_CACHE_TTL) -> Response:
    """Walk and validate every RR of an upstream answer once (cache-miss path only).

    Strict: one question (equal to ``question``, name case-insensitive, when given), every
    record and its data inside the packet, known rdata exactly filling its length, at most
    one OPT (in the additional section, owned by the root), no bytes after the last record.
    TTLs with the top bit set count as 0 (RFC 2181 8) and none exceeds ``max_ttl``; the
    clamped values are in ``ttls`` (``ttl_fixed`` when :func:`fix_reply` must write them).
    Raises :class:`WireError` for anything else: such a reply is neither relayed nor cached.
    """
    try:
        return _parse_response(buf, question, max_ttl)
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"malformed response: {exc}") from None


def _parse_response(buf: bytes, question: bytes | None, max_ttl: int) -> Response:
    n = len(buf)
    if n < 12:
        raise WireError("response shorter than a header")
    _, flags, qd, an, ns, ar = HEADER.unpack_from(buf)
    if not flags & QR:
        raise WireError("not a response")
    if qd != 1:
        raise WireError(f"{qd} questions in the response")
    rcode = flags & 0xF
    r = Response(rcode=rcode, flags=flags, truncated=bool(flags & TC), an_count=an)
    off = skip_name(buf, 12) + 4
    if off > n:
        raise WireError("question truncated")
    if question is not None and (
            buf[12:off - 4].lower() != question[:-4].lower() or buf[off - 4:off] != question[-4:]):
        raise WireError("the response's question is not the query's")
    opt = False
    unpack_rr = RR_FIXED.unpack_from
    for section, count in ((0, an), (1, ns), (2, ar)):
        for _ in range(count):
            owner, noff = read_name(buf, off)
            if noff + 10 > n:
                raise WireError("record truncated")
            rtype, _rclass, ttl, rdlen = unpack_rr(buf, noff)
            rdoff = noff + 10
            off = rdoff + rdlen
            if off > n:
                raise WireError("record data truncated")
            if rtype == T_OPT:
                if section != 2 or opt or owner:
                    raise WireError("misplaced or repeated OPT record")
                opt = r.edns = True
                r.rcode = rcode | (((ttl >> 24) & 0xFF) << 4)
                continue
            text, target = _rdata_text(buf, rtype, rdoff, rdlen)
            if ttl > max_ttl:
                ttl = 0 if ttl & 0x80000000 else max_ttl
                r.ttl_fixed = True
            r.ttl_offsets.append(noff + 4)
            r.ttls.append(ttl)
            if section < 2:
                r.min_ttl = ttl if r.min_ttl is None else min(r.min_ttl, ttl)
            if section == 0:
                r.answers.append(f"{qtype_name(rtype)} {text}")
                r.names.append(owner)
                if target:
                    r.names.append(target)
                if rtype in (T_A, T_AAAA):
                    r.answer_ips.append(text)
            elif section == 1 and rtype == T_SOA:
                _, p = read_name(buf, rdoff)
                _, p = read_name(buf, p)
                minimum = U32.unpack_from(buf, p + 16)[0]
                r.negative_ttl = min(ttl, minimum)
    if off != n:
        raise WireError(f"{n - off} bytes after the last record")
    return r


def fix_reply(buf: bytes, resp: Response, q: Query) -> bytes:
    """The edge's own header on an upstream reply, written once per miss (the cache stores
    the result, so hits pay nothing): the edge is a recursive service, so RA=1 and AA=0
    whatever the upstream said; CD is the client's; AD only when the upstream set it and
    the client asked with AD or DO (RFC 6840 5.7/5.8); the clamped TTLs."""
    f = resp.flags
    flags = QR | (f & (TC | 0x000F)) | (q.flags & (RD | CD)) | RA
    if f & AD and (q.flags & AD or q.do):
        flags |= AD
    if flags == f and not resp.ttl_fixed:
        return buf
    out = bytearray(buf)
    U16.pack_into(out, 2, flags)
    resp.flags = flags
    if resp.ttl_fixed:
        for o, t in zip(resp.ttl_offsets, resp.ttls, strict=True):
            U32.pack_into(out, o, t)
        resp.ttl_fixed = False
    return bytes(out)


def truncate(resp: bytes, q: Query) -> bytes:
    """Header + question (+ OPT) with TC=1 so the client retries over TCP (RFC 1035/6891)."""
    flags = U16.unpack_from(resp, 2)[0] | TC
    head = HEADER.pack(q.id, flags, 1, 0, 0, 1 if q.edns else 0)
    return head + q.raw[12:q.qend] + (opt_record(1232, q.do) if q.edns else b"")


def ptr_to_ip(qname: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4`` (and ip6.arpa nibbles), else None."""
    if qname.endswith(".in-addr.arpa"):
        parts = qname[: -len(".in-addr.arpa")].split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            return ".".join(reversed(parts))
        return None
    if qname.endswith(".ip6.arpa"):
        nibbles = qname[: -len(".ip6.arpa")].split(".")
        if len(nibbles) == 32:
            try:
                h = "".join(reversed(nibbles))
                return str(ipaddress.IPv6Address(int(h, 16)))
            except ValueError:
                return None
    return None
