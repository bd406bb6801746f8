"""The reader's hot path: one read's frames -> paired events, without building messages.

A resolver logging its clients sends, per query, a CLIENT_QUERY and a CLIENT_RESPONSE
(AUTH_* for an authoritative server). For those, :class:`FastPath` does per frame only what
the event needs, and memoises what repeats:

* the query: its key (sender, DNS ID, client address and port, lower-case question) and its
  time; the question comes from a memo keyed by the DNS message after ID and flags, so a
  repeated question is not parsed again. The query waits as its raw frame (decoded only if
  it must be an event alone: timeout, eviction, retransmission).
* the response: question, rcode and answers come from a memo keyed by the DNS message after
  its ID (identical answers to different clients: one parse), already as the event's JSON
  from ``"qname"`` to the end. The client's part (identity, address, transport) is a memo
  keyed by sender, address and transport, dropped when the identity table changes.
* the event is the two parts joined into its record (``(key, json)``, what
  :func:`events.encode` gives); one read's records go to the publisher as one queue item
  (``emit_records``), which librdkafka's ``_messages`` turns into ``produce_batch``
  messages in one comprehension.

Everything else (resolver-side messages, orphan responses, late or repeated queries, a full
table, frames that do not decode, the first sight of an unusual message) goes to the
general path (:meth:`TapService.on_frame`: :func:`decode`, :class:`Pairer`,
:class:`EventBuilder`), which uses the same keys and the same event encoder
(:func:`events.client_part`/:func:`events.answer_part`), so the two paths mix freely and
give byte-identical events.

Measured with ``python -m bench.tap --callgrind`` (instructions per event, in bench/RESULTS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from dnsflow.edge.tap.decode import (
    TRANSPORTS,
    DecodeError,
    _Dnstap,
    _question,
    ip_text,
    names,
    response_info,
)
from dnsflow.edge.tap.events import answer_part, client_part
from dnsflow.schema import now_us

if TYPE_CHECKING:
    from dnsflow.edge.identity import IdentityTable
    from dnsflow.edge.tap.events import EventBuilder
    from dnsflow.edge.tap.pairing import Pairer
    from dnsflow.edge.tap.server import Connection
    from dnsflow.edge.telemetry import EventPublisher


class TapHost(Protocol):
    """What the fast path uses of the tap service (``service.TapService``): its parts, the
    general path for frames it does not take, and the counters it adds to. A protocol, so
    the service and its fast path do not import each other."""

    pairer: Pairer | None
    builder: EventBuilder | None
    identity: IdentityTable
    publisher: EventPublisher | None
    frames: int
    wire_errors: int
    _client_side: set[str]

    def on_frame(self, frame: bytes, conn: Connection) -> None: ...

_MEMO_MAX = 65_536
# dnstap Message.Type of the client side: AUTH_QUERY 1, AUTH_RESPONSE 2, CLIENT_QUERY 5,
# CLIENT_RESPONSE 6 (queries odd, responses even)
_FAST_KINDS = frozenset((1, 2, 5, 6))


def sender_name(ident: bytes, conn: Connection) -> str:
    """The event's ``edge`` for a sender: its dnstap identity, else the connection."""
    return ident.decode("utf-8", "replace") if ident else conn.label


class FastPath:
    """``__call__(frames, conn)``: every frame of one read, in order."""

    def __init__(self, svc: TapHost) -> None:
        assert svc.pairer is not None and svc.builder is not None
        self.svc = svc
        self.pairer = svc.pairer
        self.builder = svc.builder
        self.identity = svc.identity
        self._edges: dict[bytes, str] = {}     # dnstap identity -> edge
        self._questions: dict[bytes, bytes] = {}  # query after the header -> question
        self._answers: dict[bytes, tuple[bytes, bytes, int]] = {}  # response after the ID
        self._clients: dict[tuple[str, bytes, int], tuple[bytes, bytes]] = {}
        self._generation = -1
        self.adjacent = 0  # pairs taken from the stream by .adjacent.AdjacentPairs

    def __call__(self, frames: list[bytes], conn: Connection) -> None:
        svc = self.svc
        on_frame = svc.on_frame
        # this read's events, handed to the publisher as one item (emit_records); before a
        # frame goes to the general path, which emits on its own, what is ready goes first,
        # so events keep the order of their frames
        recs: list[tuple[bytes, bytes]] = []
        recs_append = recs.append
        emit_records = svc.publisher.emit_records  # type: ignore[union-attr]

        def slow(raw: bytes, conn: Connection) -> None:
            if recs:
                emit_records(recs.copy())
                recs.clear()
            on_frame(raw, conn)

        pairer = self.pairer
        pending = pairer.pending
        orphans = pairer._orphans
        max_pending = pairer.max_pending
        now = pairer.clock()
        edges = self._edges
        questions = self._questions
        answers = self._answers
        clients = self._clients
        if self.identity.generation != self._generation:
            clients.clear()
            self._generation = self.identity.generation
        from_string = _Dnstap.FromString
        fast_kinds = _FAST_KINDS
        fast = paired = werrs = 0
        for raw in frames:
            try:
                d = from_string(raw)
            except Exception:
                slow(raw, conn)  # counted and dead-lettered there
                continue
            m = d.message
            kind = m.type
            if d.type != 1 or kind not in fast_kinds:
                slow(raw, conn)
                continue
            ident = d.identity
            edge = edges.get(ident) if ident else None
            if edge is None:
                edge = self._edge(ident, conn)
            addr = m.query_address
            if len(addr) != 4 and len(addr) != 16:
                slow(raw, conn)
                continue
            if kind & 1:  # a query: its key, and it waits
                msg = m.query_message
                question = questions.get(msg[4:])
                if question is None:
                    question = self._question(msg)
                    if question is None:
                        slow(raw, conn)
                        continue
                key = (edge, msg[0] << 8 | msg[1], addr, m.query_port, question)
                if key in pending or len(pending) >= max_pending or (
                        orphans and key in orphans):
                    slow(raw, conn)  # retransmission, full table, or its response came first
                    continue
                sec = m.query_time_sec
                pending[key] = (now, sec * 1_000_000 + m.query_time_nsec // 1000 if sec else 0,
                                raw)
                fast += 1
                continue
            msg = m.response_message
            ans = answers.get(msg[2:])
            if ans is None:
                ans = self._answer(msg)
                if ans is None:
                    slow(raw, conn)
                    continue
            entry = pending.pop((edge, msg[0] << 8 | msg[1], addr, m.query_port, ans[0]), None)
            if entry is None:
                slow(raw, conn)  # an orphan: remembered there, for its late query
                continue
            q_us = entry[1]
            if not q_us:
                sec = m.query_time_sec  # dnsdist sends the query's time with the response
                q_us = sec * 1_000_000 + m.query_time_nsec // 1000 if sec else 0
            latency = 0
            if q_us:
                sec = m.response_time_sec
                if sec:
                    latency = sec * 1_000_000 + m.response_time_nsec // 1000 - q_us
                    if latency < 0:
                        latency = 0
            else:
                q_us = now_us()
            proto = m.socket_protocol
            client = clients.get((edge, addr, proto))
            if client is None:
                client = self._client(edge, addr, proto)
            # the record as the publisher writes it (events.encode)
            recs_append((client[0], b'{"ts":%d,"latency_us":%d%b%b'
                         % (q_us, latency, client[1], ans[1])))
            werrs += ans[2]
            paired += 1
            fast += 1
        if recs:
            emit_records(recs)
        svc.frames += fast
        svc.wire_errors += werrs
        pairer.paired += paired
        self.builder.built += paired

    # -- memo misses ------------------------------------------------------------------
    def _edge(self, ident: bytes, conn: Connection) -> str:
        edge = sender_name(ident, conn)
        self.svc._client_side.add(edge)  # its resolver-side messages are not events now
        if ident:
            if len(self._edges) >= _MEMO_MAX:
                self._edges.clear()
            self._edges[ident] = edge
        return edge

    def _question(self, msg: bytes) -> bytes | None:
        if len(msg) < 12 or not (msg[4] or msg[5]):
            return None  # no question: the general path says why
        try:
            question = _question(msg)[1]
        except DecodeError:
            return None
        memo = self._questions
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[msg[4:]] = question
        return question

    def _answer(self, msg: bytes) -> tuple[bytes, bytes, int] | None:
        if len(msg) < 12 or not (msg[4] or msg[5]):
            return None
        try:
            question, rcode, answers, werr = response_info(msg)
        except DecodeError:
            return None
        qname, qtype = names(question)
        got = (question, answer_part(qname, qtype, rcode, answers), werr)
        memo = self._answers
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[msg[2:]] = got
        return got

    def _client(self, edge: str, addr: bytes, proto: int) -> tuple[bytes, bytes]:
        ip = ip_text(addr)
        got = client_part(edge, self.identity.lookup(ip), ip, TRANSPORTS.get(proto, "udp"))
        if len(self._clients) >= _MEMO_MAX:
            self._clients.clear()
        self._clients[(edge, addr, proto)] = got
        return got

    def status(self) -> dict[str, Any]:
        return {"memo_questions": len(self._questions), "memo_answers": len(self._answers),
                "memo_clients": len(self._clients)}
