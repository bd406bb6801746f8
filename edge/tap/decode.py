"""One dnstap frame -> :class:`TapMessage`: what pairing and the event need, nothing more.

Measured before choosing (``python -m bench.tap --decode-only``, 2000 unbound-like messages):
the generated ``dnstap_pb2`` of the ``dnstap-pb`` package on protobuf's upb backend parses a
message and reads its fields in ~1.0 µs, a pure-Python varint decoder in ~4.0 µs. DNS
messages are read with the edge's own wire parser (:mod:`dnsflow.edge.wire`, ~4.4 µs a
response with its answers, against ~26 µs for ``dnslib.DNSRecord.parse``), which also gives
``answers`` exactly the text the edge's own events carry (``"A 10.0.0.1"``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from dnsflow.edge import wire
from dnstap_pb import dnstap_pb2

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


class DecodeError(ValueError):
    """A frame that is not a usable dnstap message; the reason names what is wrong."""


@dataclass(slots=True)
class TapMessage:
    """One dnstap query or response, decoded once."""

    kind: int                 # dnstap Message.Type
    response: bool
    identity: str             # the sender's dnstap identity ("" when it sends none)
    transport: str
    client_ip: str            # query_address: who asked
    client_port: int
    server: str               # response_address:port: who answered (the upstream, resolver side)
    qid: int
    question: bytes           # lower-case question (name, type, class): part of the pair key
    qname: str
    qtype: str
    query_us: int = 0         # query_time in µs since the epoch, 0 when not sent
    response_us: int = 0
    rcode: str = ""
    answers: list[str] = field(default_factory=list)
    wire_errors: int = 0      # 1 when the response did not parse strictly (rcode from header)

    @property
    def client_side(self) -> bool:
        return self.kind in CLIENT_SIDE

    def key(self, edge: str) -> tuple[str, int, str, int, bytes]:
        """What a query and its response share: sender, DNS ID, client address and port,
        question."""
        return (edge, self.qid, self.client_ip, self.client_port, self.question)


_IP_MEMO: dict[bytes, str] = {}


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


def _us(sec: int, nsec: int) -> int:
    return sec * 1_000_000 + nsec // 1000 if sec else 0


def _question(msg: bytes) -> tuple[int, bytes, str, str]:
    """(ID, lower-case question bytes, qname, qtype) of a DNS message."""
    if len(msg) < 12:
        raise DecodeError(f"DNS message of {len(msg)} bytes (shorter than a header)")
    qid = _U16.unpack_from(msg)[0]
    if not msg[5] and not msg[4]:  # QDCOUNT 0 (e.g. a FORMERR answer): no question
        return qid, b"", "", ""
    try:
        qname, end = wire.read_name(msg, 12)
        if end + 4 > len(msg):
            raise wire.WireError("question truncated")
    except wire.WireError as exc:
        raise DecodeError(f"DNS question: {exc}") from None
    return qid, msg[12:end + 4].lower(), qname, wire.qtype_name(_U16.unpack_from(msg, end)[0])


def decode(raw: bytes) -> TapMessage | None:
    """Decode one dnstap frame; None for messages that are not DNS queries or responses
    (TOOL/UPDATE types, non-MESSAGE records). Raises :class:`DecodeError` otherwise."""
    try:
        d = _Dnstap.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError, or a missing required field
        raise DecodeError(f"not a dnstap protobuf message ({exc})") from None
    if d.type != 1 or not d.HasField("message"):
        return None
    m = d.message
    kind = m.type
    if kind in _QUERIES:
        is_resp = False
        msg = m.query_message
    elif kind in _RESPONSES:
        is_resp = True
        msg = m.response_message
    else:
        return None
    if not msg:
        raise DecodeError(f"dnstap {dnstap_pb2.Message.Type.Name(kind)} without its "
                          f"DNS message")
    qid, question, qname, qtype = _question(msg)
    server = ip_text(m.response_address)
    out = TapMessage(
        kind=kind, response=is_resp, identity=d.identity.decode("utf-8", "replace"),
        transport=TRANSPORTS.get(m.socket_protocol, "udp"),
        client_ip=ip_text(m.query_address), client_port=m.query_port,
        server=f"{server}:{m.response_port}" if server else "",
        qid=qid, question=question, qname=qname, qtype=qtype,
        query_us=_us(m.query_time_sec, m.query_time_nsec),
        response_us=_us(m.response_time_sec, m.response_time_nsec))
    if is_resp:
        try:
            r = wire.parse_response(msg)
            out.rcode = wire.rcode_name(r.rcode)
            out.answers = r.answers
        except wire.WireError:
            # a response the edge would not relay still has a header: keep its rcode
            out.rcode = wire.rcode_name(msg[3] & 0x0F)
            out.wire_errors = 1
    return out
