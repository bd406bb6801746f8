"""The commonest dnstap shape, read straight from the stream: a query and then its response.

A resolver answering from its cache or its local data logs CLIENT_QUERY and, right after it
on the same connection, the CLIENT_RESPONSE (unbound with one thread: every pair). For that
shape :class:`AdjacentPairs` takes both frames with one regular-expression match over the
read's bytes, Frame Streams headers included: no frame split, no protobuf object, no waiting
table. The pattern is compiled per sender from its fixed opening (identity and version
fields) and, with back-references, already requires what pairing asks of the two frames
(the same client address, port, server and transport; the same DNS ID). The response's
question is compared with the query's here. The tap's whole path then costs ~60 % of the
instructions per event of the per-frame path (``python -m bench.tap --callgrind``: 47 504 →
29 503), the pair itself a fraction of that.

Exactness before speed: each frame's length from its Frame Streams header, its dnstap
``message`` length and its DNS message length must all agree with what the pattern matched,
so a DNS payload that happens to contain frame-like bytes (a client chooses its query name)
can never shift a frame boundary or a field: any mismatch leaves the bytes to the per-frame
path (:mod:`.fast`, then :func:`.decode`), which takes everything this does not, in order.
The event is byte-identical to the per-frame path's (same memos, same encoder).
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from dnsflow.edge.tap.fast import sender_name

if TYPE_CHECKING:
    from dnsflow.edge.tap.fast import FastPath
    from dnsflow.edge.tap.server import Connection


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# a length that fits in one or two varint bytes (< 16 KiB): every dnstap frame in practice
_LEN = {_varint(n): n for n in range(1 << 14)}
# the same, plus the varint's own size: a field's bytes after its tag
_LEN_AND_SIZE = {raw: n + len(raw) for raw, n in _LEN.items()}
# exactly the keys of _LEN: the shortest encodings (``0x85 0x00``, 5 in two bytes, is valid
# protobuf too, but left to the per-frame path)
_LEN_RE = rb"([\x00-\x7f]|[\x80-\xff][\x01-\x7f])"
_PORT_RE = rb"[\x80-\xff]{0,2}[\x00-\x7f]"
# seconds since 1970 as a five-byte varint (2^28 .. 2^35: 1978 to 3058): never zero
_SEC_RE = rb"([\x80-\xff]{4}[\x01-\x7f])"
# the query's DNS message after ID and flags: up to the query frame's last field (type,
# ``0x7801``) and the response frame's header. Written out as "bytes but 0x78, or 0x78 not
# followed by that" rather than lazily (``.*?``): the same match at a third of the engine's
# work; a DNS message that holds those four bytes itself is left to the per-frame path.
_BODY_RE = rb"[^\x78]*(?:\x78(?!\x01\x00\x00)[^\x78]*)*"
_U32 = struct.Struct("!I")
_MAX_PREFIX = 255  # identity + version + extra fields: longer openings stay per-frame
_MAX_MISSES = 256  # frames left to the per-frame path after repeated misses, at most
_NEVER = 1 << 62   # misses after a fault: no further try on that connection

log = logging.getLogger(__name__)


def _varint_value(raw: bytes) -> int:
    v = s = 0
    for b in raw:
        v |= (b & 0x7F) << s
        s += 7
    return v


def opening(frame: bytes) -> bytes | None:
    """The bytes before a dnstap frame's ``message`` field (tag 14: ``0x72``) when only
    identity, version and extra (short bytes fields 1-3) come first, else None."""
    got = _opening_and_identity(frame)
    return got[0] if got is not None else None


def _opening_and_identity(frame: bytes) -> tuple[bytes, bytes] | None:
    """:func:`opening`, and the identity field's value in it (``b""``: none)."""
    i, n = 0, len(frame)
    ident = b""
    while i + 1 < n:
        tag = frame[i]
        if tag == 0x72:
            return (frame[:i], ident) if i <= _MAX_PREFIX else None
        if tag not in (0x0A, 0x12, 0x1A) or frame[i + 1] > 0x7F:
            return None
        if tag == 0x0A:
            ident = frame[i + 2:i + 2 + frame[i + 1]]
        i += 2 + frame[i + 1]
    return None


def pair_pattern(prefix: bytes, family: int = 1) -> re.Pattern[bytes]:
    """Two Frame Streams data frames, query then response, of a sender whose frames open
    with ``prefix``, from a client of address ``family`` (1 IPv4, 2 IPv6: one pattern per
    family costs the engine less than a pattern for both); for ``fullmatch`` over exactly
    the two frames their headers announce.
    Groups: 1 the query's message length, 2 its socket fields (family, protocol, addresses,
    ports: the response repeats them), 3 protocol and client address, 4 client port, 5-6
    query time, 7 DNS length, 8 DNS ID, 9 the query after ID and flags, 10 the response's
    message length, 11-12 response time, 13 DNS length, 14 the response after its ID."""
    p = re.escape(prefix)
    addr = rb"\x04.{4}" if family == 1 else rb"\x10.{16}"
    # (an optional field as ``(?:field|)``: a branch costs the engine less than a repeat)
    sock = (rb"(\x10" + bytes([family]) + rb"\x18([\x01-\x07]\x22" + addr + rb")(?:\x2a"
            + addr + rb"|)\x30(" + _PORT_RE + rb")(?:\x38" + _PORT_RE + rb"|))")
    query = (rb"\x00\x00.." + p + rb"\x72" + _LEN_RE + rb"\x08[\x01\x05]" + sock
             + rb"\x40" + _SEC_RE + rb"\x4d(.{4})\x52" + _LEN_RE + rb"(..)..(" + _BODY_RE
             + rb")\x78\x01")
    response = (rb"\x00\x00.." + p + rb"\x72" + _LEN_RE + rb"\x08[\x02\x06]\2"
                + rb"(?:\x40[\x80-\xff]{4}[\x01-\x7f]\x4d.{4}|)"  # the query's time, again
                + rb"\x60" + _SEC_RE + rb"\x6d(.{4})\x72" + _LEN_RE + rb"\8(.*)\x78\x01")
    return re.compile(query + response, re.DOTALL)


class AdjacentPairs:
    """One connection's scanner for :meth:`FrameReader.take`: ``__call__(buf, off)`` takes
    the run of adjacent query/response pairs at ``off`` and returns the offset after it
    (``off`` itself: nothing taken, the per-frame path reads on)."""

    def __init__(self, fast: FastPath, conn: Connection) -> None:
        self.fast = fast
        self.conn = conn
        self.prefix: bytes | None = None
        self.edge = ""
        # fullmatch of the family seen last, then of the other (see pair_pattern)
        self._match: Callable[[bytes, int, int], re.Match[bytes] | None] | None = None
        self._other: Callable[[bytes, int, int], re.Match[bytes] | None] | None = None
        self._fixed = 0       # a frame's bytes besides its message field: prefix, tag, 0x7801
        self._secs: dict[bytes, int] = {}
        self._clients: dict[bytes, tuple[bytes, bytes]] = {}
        self._generation = -1
        self._client_side = False
        self.misses = 0       # frames split before the next try (FrameReader.take)
        self._backoff = 1
        self._free = 0        # misses at a response frame since the last pair (see _missed)

    def _learn(self, buf: bytes, off: int) -> bool:
        """Compile the pattern for the sender of the frame at ``off`` (its opening)."""
        n = int.from_bytes(buf[off:off + 4], "big")
        got = _opening_and_identity(buf[off + 4:off + 4 + n]) if n else None
        if got is None:
            return False
        prefix, ident = got
        if prefix != self.prefix:
            self.prefix = prefix
            # the sender's name as the per-frame path gives it; that it logs its clients
            # is known once a pair is taken
            self.edge = sender_name(ident, self.conn)
            self._client_side = False
            self._match = pair_pattern(prefix, 1).fullmatch
            self._other = pair_pattern(prefix, 2).fullmatch
            self._fixed = len(prefix) + 3
            self._clients.clear()
        return True

    def _missed(self, buf: bytes, off: int) -> None:
        """Nothing taken at the frame at ``off``: it is split, and frames after it up to the
        next try ``backoff`` frames on (1, 2, 4, ... 256 after repeated misses: a sender
        that interleaves costs a try per 256 frames). A miss at a response is the wrong
        phase: the next try is an odd number of frames on, at the query of a pair in a
        query/response alternation, and the first few (per pair taken) are free."""
        response = self._response_at(buf, off)
        if response and self._free < 4:
            self._free += 1
            self.misses = 0
            return
        skip = self._backoff
        self._backoff = min(skip * 2, _MAX_MISSES)
        self.misses = skip if response and skip % 2 == 0 else skip - 1

    def _response_at(self, buf: bytes, off: int) -> bool:
        """Whether the complete frame at ``off``, of the learned sender, is a response."""
        i = off + 4 + len(self.prefix or b"")
        end = off + 4 + int.from_bytes(buf[off:off + 4], "big")
        if end > len(buf) or i + 5 > end or buf[i] != 0x72:
            return False
        i += 2 if buf[i + 1] < 0x80 else 3
        return buf[i] == 0x08 and buf[i + 1] in (2, 4, 6, 8, 10, 12, 14)

    def __call__(self, buf: bytes, off: int) -> int:
        n = len(buf)
        unpack = _U32.unpack_from
        match = self._match
        if match is None or not buf.startswith(self.prefix, off + 4):  # type: ignore[arg-type]
            if off + 4 > n or off + 4 + unpack(buf, off)[0] > n:
                return off  # not all here yet: the next read decides
            if not self._learn(buf, off):
                self._missed(buf, off)
                return off
            match = self._match
            assert match is not None
        other = self._other
        fast = self.fast
        questions = fast._questions
        answers = fast._answers
        clients = self._clients
        ident = fast.identity
        if ident.generation != self._generation:
            clients.clear()
            self._generation = ident.generation
        secs = self._secs
        lens = _LEN
        spans = _LEN_AND_SIZE
        pending = fast.pairer.pending
        orphans = fast.pairer._orphans
        fixed = self._fixed
        edge = self.edge
        rml_at = fixed + 2  # the response's message length: after header, prefix and tag
        start = off
        short = False  # stopped at a pair not all here yet, or another sender's: not a miss
        from_bytes = int.from_bytes  # a local: half the cost of the attribute per call
        recs: list[tuple[bytes, bytes]] = []
        recs_append = recs.append
        werrs = 0
        try:
            while True:
                if off + 8 > n:
                    short = True
                    break
                qlen = unpack(buf, off)[0]
                rpos = off + 4 + qlen
                if rpos + 4 > n:
                    short = True
                    break
                end = rpos + 4 + unpack(buf, rpos)[0]
                if end > n:
                    short = True
                    break
                m = match(buf, off, end)
                if m is None:
                    m = other(buf, off, end)  # type: ignore[misc]
                    if m is None:
                        # another sender's frame (a relay that merges several): learn it now
                        short = (off != start
                                 and not buf.startswith(self.prefix, off + 4))  # type: ignore[arg-type]
                        break
                    match, other = other, match  # its clients' family, first from now on
                    self._match, self._other = match, other
                (qml, _sock, client, port, qs, qn, qdl, qid, qrest, rml, rs, rn, rdl,
                 rrest) = m.groups()
                # every length the frames state must be what was matched (see the module doc):
                # the query ends where the response's header is, each message and DNS message
                # is as long as it says
                if (m.start(10) != rpos + rml_at
                        or spans[qml] != qlen - fixed
                        or spans[rml] != end - rpos - 4 - fixed
                        or lens[qdl] != len(qrest) + 4 or lens[rdl] != len(rrest) + 2):
                    break
                question = questions.get(qrest)
                if question is None:
                    question = fast._question(qid + b"\0\0" + qrest)
                    if question is None:
                        break
                ans = answers.get(rrest)
                if ans is None:
                    ans = fast._answer(qid + rrest)
                    if ans is None:
                        break
                if ans[0] != question:
                    break
                if pending or orphans:  # a query of the same key waits, or its response came
                    key = (edge, qid[0] << 8 | qid[1], client[3:], _varint_value(port), question)
                    if key in pending or key in orphans:
                        break  # the per-frame path: a retransmission, or a late query
                q_us = secs.get(qs)
                if q_us is None:
                    q_us = self._sec(qs)
                q_us += from_bytes(qn, "little") // 1000
                r_us = secs.get(rs)
                if r_us is None:
                    r_us = self._sec(rs)
                latency = r_us + from_bytes(rn, "little") // 1000 - q_us
                if latency < 0:
                    latency = 0
                cl = clients.get(client)
                if cl is None:
                    cl = self._client(client)
                recs_append((cl[0], b'{"ts":%d,"latency_us":%d%b%b'
                             % (q_us, latency, cl[1], ans[1])))
                werrs += ans[2]
                off = end
        except Exception:  # a fault here must not cost the sender's frames or its connection
            log.exception("dnstap %s: reading adjacent pairs failed; this connection's frames "
                          "go the per-frame way from now on", self.conn.label)
            self.misses = _NEVER
            return start
        if off == start:
            if not short:
                self._missed(buf, off)
            return off
        self._backoff = 1
        self._free = 0
        # the frame where the run stopped on a mismatch is the per-frame path's
        self.misses = 0 if short else 1
        n = len(recs)
        fast.adjacent += n
        svc = fast.svc
        if not self._client_side:  # its resolver-side messages are not events now
            svc._client_side.add(self.edge)
            self._client_side = True
        svc.publisher.emit_records(recs)  # type: ignore[union-attr]
        svc.frames += 2 * n
        svc.wire_errors += werrs
        fast.pairer.paired += n
        fast.builder.built += n
        self.conn.frames += 2 * n
        return off

    def _sec(self, raw: bytes) -> int:
        if len(self._secs) >= 4096:
            self._secs.clear()
        self._secs[raw] = us = _varint_value(raw) * 1_000_000
        return us

    def _client(self, raw: bytes) -> tuple[bytes, bytes]:
        """``raw``: protocol, then the address field (tag, length, address)."""
        got = self.fast._client(self.edge, raw[3:], raw[0])
        if len(self._clients) >= 65_536:
            self._clients.clear()
        self._clients[raw] = got
        return got
