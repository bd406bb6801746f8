"""One dnstap frame -> :class:`TapMessage`: what pairing and the event need, nothing more.

Measured before choosing (``python -m bench.tap --decode-only``, unbound-like messages): the
generated ``dnstap_pb2`` of the ``dnstap-pb`` package on protobuf's upb backend parses a
message and reads its fields in ~1.0 µs, a pure-Python varint decoder in ~4.0 µs. DNS
messages are read with the edge's wire helpers (:mod:`dnsflow.edge.wire`): ``dnslib``'s
``DNSRecord.parse`` takes ~26 µs a response, the edge's strict ``parse_response`` ~3.7 µs,
and reading only the question and the answer section here ~1.5 µs; the ``answers`` text is
the edge's own (``"A 10.0.0.1"``), so tap and edge events look alike.

Work is done once and late: a query needs only its key (DNS ID, client, question bytes); the
name's text, the transport and the responder are computed when the event is built. The
reader's usual case, a client query and its response, takes :mod:`dnsflow.edge.tap.fast`
instead, which memoises what repeats and builds no :class:`TapMessage`.
"""

from __future__ import annotations

import socket

from dnstap_pb import dnstap_pb2

from dnsflow.edge import wire

# dnstap Message.Type
AUTH_QUERY, AUTH_RESPONSE, RESOLVER_QUERY, RESOLVER_RESPONSE = 1, 2, 3, 4
CLIENT_QUERY, CLIENT_RESPONSE, FORWARDER_QUERY, FORWARDER_RESPONSE = 5, 6, 7, 8
STUB_QUERY, STUB_RESPONSE = 9, 10
_QUERIES = frozenset((AUTH_QUERY, RESOLVER_QUERY, CLIENT_QUERY, FORWARDER_QUERY, STUB_QUERY))
_RESPONSES = frozenset((AUTH_RESPONSE, RESOLVER_RESPONSE, CLIENT_RESPONSE, FORWARDER_RESPONSE,
                        STUB_RESPONSE))
# the resolver serving a client (client side) vs the resolver asking an upstream
CLIENT_SIDE = frozenset((AUTH_QUERY, AUTH_RESPONSE, CLIENT_QUERY, CLIENT_RESPONSE))

# SocketProtocol -> the schema's transport; DNSCrypt rides UDP/TCP, DoQ is encrypted like DoT
TRANSPORTS = {1: "udp", 2: "tcp", 3: "dot", 4: "doh", 5: "udp", 6: "tcp", 7: "dot"}

_Dnstap = dnstap_pb2.Dnstap
_U16 = wire.U16
_RR = wire.RR_FIXED
_skip = wire.skip_name
_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET


class DecodeError(ValueError):
    """A frame that is not a usable dnstap message; the reason names what is wrong."""


class TapMessage:
    """One dnstap query or response, decoded once (plain slots). The reader's fast path
    (:mod:`dnsflow.edge.tap.fast`) builds none for the usual client query/response pair;
    this is the general form (resolver-side messages, orphans, timeouts, tests)."""

    __slots__ = ("answers", "client_addr", "client_port", "identity", "kind", "protocol",
                 "qid", "query_us", "question", "rcode", "response", "response_us",
                 "server_addr", "server_port", "wire_errors")

    def __init__(self, kind: int, identity: str, client: tuple[bytes, int], qid: int,
                 question: bytes) -> None:
        self.kind = kind
        self.response = kind in _RESPONSES
        self.identity = identity          # the sender's dnstap identity ("" when not sent)
        # query_address (4 or 16 bytes, or b"") and query_port: who asked
        self.client_addr, self.client_port = client
        self.qid = qid
        self.question = question          # lower-case name, type, class: part of the key
        self.protocol = 1
        self.server_addr = b""            # response_address/port: who answered
        self.server_port = 0
        self.query_us = 0                 # query_time in µs since the epoch, 0 when not sent
        self.response_us = 0
        self.rcode = ""
        self.answers: list[str] = []
        self.wire_errors = 0              # 1: the answer section did not parse (rcode kept)

    @property
    def client_side(self) -> bool:
        return self.kind in CLIENT_SIDE

    @property
    def client_ip(self) -> str:
        return ip_text(self.client_addr)

    @property
    def qname(self) -> str:
        return names(self.question)[0]

    @property
    def qtype(self) -> str:
        return names(self.question)[1]

    @property
    def transport(self) -> str:
        return TRANSPORTS.get(self.protocol, "udp")

    @property
    def server(self) -> str:
        ip = ip_text(self.server_addr)
        return f"{ip}:{self.server_port}" if ip else ""

    def key(self, edge: str) -> tuple[str, int, bytes, int, bytes]:
        """What a query and its response share: sender, DNS ID, client address (raw) and
        port, question. The fast path builds the same tuple from the same fields."""
        return (edge, self.qid, self.client_addr, self.client_port, self.question)


_IP_MEMO: dict[bytes, str] = {}
_NAME_MEMO: dict[bytes, tuple[str, str]] = {}


def names(question: bytes) -> tuple[str, str]:
    """(qname, qtype) text of a question; memoised, as names repeat."""
    got = _NAME_MEMO.get(question)
    if got is None:
        if not question:
            return "", ""
        got = (wire.wire_to_text(question),
               wire.qtype_name(_U16.unpack_from(question, len(question) - 4)[0]))
        if len(_NAME_MEMO) >= 65_536:
            _NAME_MEMO.clear()
        _NAME_MEMO[question] = got
    return got


def ip_text(raw: bytes) -> str:
    text = _IP_MEMO.get(raw)
    if text is None:
        if len(raw) == 4:
            text = socket.inet_ntop(socket.AF_INET, raw)
        elif len(raw) == 16:
            text = socket.inet_ntop(socket.AF_INET6, raw)
        elif not raw:
            text = ""
        else:
            raise DecodeError(f"address of {len(raw)} bytes")
        if len(_IP_MEMO) >= 65_536:
            _IP_MEMO.clear()
        _IP_MEMO[raw] = text
    return text


def _question(msg: bytes) -> tuple[int, bytes, int]:
    """(ID, lower-case question bytes, offset past the question) of a DNS message."""
    if len(msg) < 12:
        raise DecodeError(f"DNS message of {len(msg)} bytes (shorter than a header)")
    if not msg[5] and not msg[4]:  # QDCOUNT 0 (e.g. a FORMERR answer): no question
        return _U16.unpack_from(msg)[0], b"", 12
    try:
        end = wire.read_qname(msg, 12) + 4
    except wire.WireError as exc:
        raise DecodeError(f"DNS question: {exc}") from None
    if end > len(msg):
        raise DecodeError("DNS question truncated")
    return _U16.unpack_from(msg)[0], msg[12:end].lower(), end


def _answers(msg: bytes, off: int) -> list[str]:
    """The answer section as the edge writes it in events (``"A 10.0.0.1"``)."""
    out: list[str] = []
    n = len(msg)
    for _ in range(_U16.unpack_from(msg, 6)[0]):
        off = _skip(msg, off)
        rtype, _cls, _ttl, rdlen = _RR.unpack_from(msg, off)
        rd = off + 10
        off = rd + rdlen
        if off > n:
            raise wire.WireError("record data truncated")
        if rtype == wire.T_A and rdlen == 4:  # the common case, in C
            out.append("A " + _ntop(_AF_INET, msg[rd:off]))
            continue
        text, _ = wire._rdata_text(msg, rtype, rd, rdlen)
        out.append(f"{wire.qtype_name(rtype)} {text}")
    return out


def response_info(msg: bytes) -> tuple[bytes, str, list[str], int]:
    """(lower-case question, rcode, answers, wire_errors) of a DNS response message."""
    _qid, question, end = _question(msg)
    rcode = wire.rcode_name(msg[3] & 0x0F)
    try:
        return question, rcode, _answers(msg, end), 0
    except (wire.WireError, ValueError, IndexError):  # struct.error is a ValueError
        return question, rcode, [], 1  # the header's rcode stands; the answers are unknown


def decode(raw: bytes) -> TapMessage | None:
    """Decode one dnstap frame; None for records that are not DNS queries or responses
    (TOOL/UPDATE types, non-MESSAGE records). Raises :class:`DecodeError` otherwise."""
    try:
        d = _Dnstap.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError, or a missing required field
        raise DecodeError(f"not a dnstap protobuf message ({exc})") from None
    if d.type != 1:
        return None
    m = d.message  # an absent message reads as type 0: skipped below
    kind = m.type
    if kind in _QUERIES:
        msg = m.query_message
    elif kind in _RESPONSES:
        msg = m.response_message
    else:
        return None
    if not msg:
        raise DecodeError(f"dnstap {dnstap_pb2.Message.Type.Name(kind)} without its "
                          f"DNS message")
    addr = m.query_address
    ip_text(addr)  # 4, 16 or 0 bytes, else a DecodeError
    if kind in _RESPONSES:
        question, rcode, answers, werr = response_info(msg)
        qid = _U16.unpack_from(msg)[0]
    else:
        qid, question, _end = _question(msg)
    out = TapMessage(kind, d.identity.decode("utf-8", "replace"), (addr, m.query_port), qid,
                     question)
    out.protocol = m.socket_protocol
    out.server_addr = m.response_address
    out.server_port = m.response_port
    sec = m.query_time_sec
    if sec:
        out.query_us = sec * 1_000_000 + m.query_time_nsec // 1000
    if out.response:
        sec = m.response_time_sec
        if sec:
            out.response_us = sec * 1_000_000 + m.response_time_nsec // 1000
        out.rcode, out.answers, out.wire_errors = rcode, answers, werr
    return out
