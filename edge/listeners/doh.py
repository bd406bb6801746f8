"""DNS over HTTPS (RFC 8484): GET ?dns=<base64url> and POST application/dns-message, over
HTTP/2 (negotiated by ALPN, the version RFC 8484 recommends; many streams per connection)
and HTTP/1.1 (keep-alive), with the ``h2`` and ``h11`` protocol state machines.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import logging
import ssl
from typing import Any
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

from dnsflow.edge import wire
from dnsflow.edge.listeners.budget import (
    ConnectionBudget,
    GuardedListener,
    GuardedProtocol,
    Limits,
)
from dnsflow.edge.listeners.sockets import Bind
from dnsflow.edge.metrics import answer_sizes
from dnsflow.edge.resolver import Resolver

log = logging.getLogger(__name__)

CT = "application/dns-message"
Reply = tuple[int, list[tuple[str, str]], bytes]
H2_MAX_STREAMS = 100   # SETTINGS_MAX_CONCURRENT_STREAMS we announce
H2_RESET_CREDIT = 100  # client resets (net of streams it let finish) before GOAWAY


def _plain(status: int, text: str) -> Reply:
    return status, [("content-type", "text/plain")], (text + "\n").encode()


class DohListener(GuardedListener):
    def __init__(self, resolver: Resolver, bind: Bind, *, ssl_context: ssl.SSLContext | None,
                 limits: Limits | None = None, path: str = "/dns-query") -> None:
        """``limits`` (budget and timeouts, counters: one per listener) default to a budget
        of 2048 connections and a 30 s idle timeout."""
        super().__init__(bind, ssl_context,
                         limits or Limits(ConnectionBudget(2048), idle_timeout=30.0))
        self.resolver = resolver
        self.sizes = answer_sizes(resolver, "doh")
        self.path = path
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2", "http/1.1"])
        self.requests = {"h2": 0, "http/1.1": 0}
        # hostile HTTP, counted (and logged once per kind)
        self.counters = {"h2_rapid_reset_goaway": 0, "h2_resets": 0, "bad_headers": 0,
                         "protocol_errors": 0}
        self._logged: set[str] = set()

    def once(self, kind: str, msg: str, *args: Any) -> None:
        """Count a hostile-input event; log the first of each kind only (no tracebacks)."""
        self.counters[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(msg + " (further ones are only counted: doh_%s in status())",
                        *args, kind)

    def connection(self) -> _Conn:
        return _Conn(self)

    def status(self) -> dict[str, Any]:
        return {"transport": "doh", "port": self.port, "open": len(self.conns),
                "handshaking": len(self.handshakes), **self.limits.counters,
                **self.counters, "requests_h2": self.requests["h2"],
                "requests_http1": self.requests["http/1.1"]}

    async def stop(self, grace: float = 3.0) -> None:
        await self.stop_accepting([t for c in self.conns for t in c.tasks], grace)
        for c in list(self.conns):
            c.close()
        for c in list(self.handshakes):
            c.evict()
        self.server = None

    # -- the DNS part, shared by both HTTP versions -------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes,
               ip: str) -> Reply | Any:
        path, _, query = target.partition("?")
        if path != self.path:
            return _plain(404, f"not found: use {self.path}")
        if method == "GET":
            values = parse_qs(query).get("dns")
            if not values:
                return _plain(400, "missing dns parameter")
            param = values[0]
            try:
                # strict (validate=True): the lenient decoder skips characters outside the
                # alphabet and would answer whatever the rest decodes to (found by fuzzing)
                msg = base64.b64decode(param.rstrip("=") + "=" * (-len(param.rstrip("=")) % 4),
                                       altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                return _plain(400, "dns parameter is not base64url")
        elif method == "POST":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != CT:
                return _plain(415, f"content-type must be {CT}")
            msg = body
        else:
            return _plain(405, "use GET or POST")
        if not msg or len(msg) > 65535:
            return _plain(400, "empty or oversized DNS message")
        r = self.resolver.answer(msg, ip, "doh")
        if inspect.iscoroutine(r):
            return self._finish(r)
        return self._reply(r)

    async def _finish(self, coro: Any) -> Reply:
        return self._reply(await coro)

    def _reply(self, r: bytes | None) -> Reply:
        if r is None:  # a DROP policy: nothing a DNS client could use
            return _plain(400, "query dropped by policy")
        self.sizes[(len(r) - 1) >> 4] += 1
        headers = [("content-type", CT), ("content-length", str(len(r)))]
        try:
            resp = wire.parse_response(r)
            if resp.min_ttl is not None:
                headers.append(("cache-control", f"max-age={resp.min_ttl}"))
        except wire.WireError:
            pass
        return 200, headers, r


class _Conn(GuardedProtocol):
    """One connection: picks HTTP/2 or HTTP/1.1 from ALPN, then delegates."""

    def __init__(self, listener: DohListener) -> None:
        super().__init__(listener.limits)
        self.l = listener
        self.tasks: set[asyncio.Task[Any]] = set()
        self.proto: _H2 | _H1 | None = None

    def started(self) -> None:
        sslobj = self.transport.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        self.l.conns.add(self)
        self.proto = _H2(self) if alpn == "h2" else _H1(self)

    def stopped(self) -> None:
        self.l.conns.discard(self)

    def partial(self) -> bool:
        return self.proto is not None and self.proto.partial()

    def busy(self) -> bool:
        return bool(self.tasks)

    def blocked(self) -> bool:
        return self.write_paused or (self.proto is not None and self.proto.blocked())

    def resume(self) -> None:
        if self.proto is not None and not self.blocked():
            self.proto.resume()

    def data_received(self, data: bytes) -> None:
        assert self.proto is not None
        self.proto.feed(data)
        if self.transport is not None and self.proto.partial():
            self.arm_deadline()

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.overflowing()

    def run(self, reply: Any, done: Any) -> asyncio.Task[Any] | None:
        """Deliver a reply now, or when its upstream coroutine finishes."""
        if not inspect.isawaitable(reply):
            done(reply)
            return None
        task = asyncio.ensure_future(reply)
        self.tasks.add(task)

        def finished(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            done(_plain(500, "internal error") if exc is not None else t.result())
            if exc is not None:
                log.error("DoH query from %s failed: %r", self.ip, exc)

        task.add_done_callback(finished)
        return task


class _H2:
    def __init__(self, conn: _Conn) -> None:
        self.c = conn
        # headers stay bytes: a value that is not UTF-8 is the request's problem (a 400),
        # not an exception out of the protocol machine
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: H2_MAX_STREAMS})
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.unsent: dict[int, bytes] = {}
        self.reset_credit = H2_RESET_CREDIT
        self.h2.initiate_connection()
        self.c.write(self.h2.data_to_send())

    def partial(self) -> bool:
        return bool(self.streams) or bool(getattr(self.h2.incoming_buffer, "_data", b""))

    def blocked(self) -> bool:
        return False

    def resume(self) -> None:
        pass

    def feed(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.c.l.once("protocol_errors", "DoH h2 protocol error from %s: %s", self.c.ip,
                          exc)
            self.c.write(self.h2.data_to_send())
            self.c.close()
            return
        except Exception as exc:  # h2 rejecting input in a way it does not classify
            self.c.l.once("protocol_errors", "DoH h2 input from %s rejected: %r", self.c.ip,
                          exc)
            self.c.transport.abort()
            return
        ended: list[int] = []
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = (_headers(ev.headers), bytearray())
            elif isinstance(ev, h2.events.DataReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    if len(st[1]) + len(ev.data) > 65535:
                        self.h2.reset_stream(ev.stream_id)
                        self.streams.pop(ev.stream_id, None)
                    else:
                        st[1].extend(ev.data)
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended.append(ev.stream_id)  # answered after this read: a reset may follow
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
                self.unsent.pop(ev.stream_id, None)
                if ev.remote_reset:
                    self.c.l.counters["h2_resets"] += 1
                    self.reset_credit -= 1
                    if self.reset_credit <= 0:
                        self._calm()
                        return
            elif isinstance(ev, h2.events.WindowUpdated):
                self._flush()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.c.write(self.h2.data_to_send())
                self.c.close()
                return
        for sid in ended:
            self._request(sid)
        self.c.write(self.h2.data_to_send())

    def _calm(self) -> None:
        """Rapid reset (CVE-2023-44487): GOAWAY ENHANCE_YOUR_CALM, then close."""
        self.c.l.once("h2_rapid_reset_goaway", "DoH client %s reset more streams than it "
                      "let finish: GOAWAY ENHANCE_YOUR_CALM", self.c.ip)
        self.streams.clear()
        self.unsent.clear()
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.c.write(self.h2.data_to_send())
        self.c.close()

    def _request(self, sid: int) -> None:
        st = self.streams.pop(sid, None)
        if st is None or self.c.transport is None:
            return
        headers, body = st
        self.c.l.requests["h2"] += 1
        self.c.progress()
        if any(v is None for v in headers.values()):
            self.c.l.once("bad_headers", "DoH request from %s with a header that is not "
                          "UTF-8: 400", self.c.ip)
            self._respond(sid, _plain(400, "header is not UTF-8"))
            return
        reply = self.c.l.handle(headers.get(":method", ""), headers.get(":path", ""),
                                headers, bytes(body), self.c.ip)
        self.c.run(reply, lambda r, sid=sid: self._respond(sid, r))

    def _respond(self, sid: int, reply: Reply) -> None:
        status, headers, body = reply
        try:
            self.h2.send_headers(sid, [(":status", str(status)), *headers])
        except h2.exceptions.H2Error:
            return  # the stream is gone (reset by the client)
        # a stream the client let finish earns back the credit a reset costs
        self.reset_credit = min(H2_RESET_CREDIT, self.reset_credit + 1)
        self.unsent[sid] = body
        self._flush()
        self.c.write(self.h2.data_to_send())

    def _flush(self) -> None:
        for sid, body in list(self.unsent.items()):
            try:
                window = min(self.h2.local_flow_control_window(sid),
                             self.h2.max_outbound_frame_size)
                while body and window > 0:
                    chunk, body = body[:window], body[window:]
                    self.h2.send_data(sid, chunk)
                    window = min(self.h2.local_flow_control_window(sid),
                                 self.h2.max_outbound_frame_size)
                if body:
                    self.unsent[sid] = body
                else:
                    self.h2.end_stream(sid)
                    del self.unsent[sid]
            except h2.exceptions.H2Error:
                self.unsent.pop(sid, None)


def _headers(raw: Any) -> dict[str, str | None]:
    """h2 header bytes → text; a value that is not UTF-8 becomes None (answered 400)."""
    out: dict[str, str | None] = {}
    for k, v in raw:
        name = k.decode("latin-1").lower() if isinstance(k, bytes) else k.lower()
        if isinstance(v, bytes):
            try:
                out[name] = v.decode("utf-8")
            except UnicodeDecodeError:
                out[name] = None
        else:
            out[name] = v
    return out


class _H1:
    """HTTP/1.1 with keep-alive; one request at a time (reading pauses while one runs).

    Pipelined requests answered from memory are handled in one loop, never by recursion
    (3,000 of them once raised RecursionError)."""

    def __init__(self, conn: _Conn) -> None:
        self.c = conn
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
        self.req: h11.Request | None = None
        self.body = bytearray()
        self.busy = False
        self.looping = False

    def partial(self) -> bool:
        if self.busy:
            return False
        return (self.h11.their_state is h11.SEND_BODY
                or bool(self.h11.trailing_data[0]))

    def blocked(self) -> bool:
        return self.busy

    def resume(self) -> None:
        self._events()

    def feed(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._events()

    def _events(self) -> None:
        if self.looping:
            return  # the loop below is already running further up the stack
        self.looping = True
        try:
            while not self.busy and not self.c.write_paused and self.c.transport is not None:
                try:
                    ev = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    self._send_error(exc.error_status_hint, str(exc))
                    return
                if ev is h11.NEED_DATA or ev is h11.PAUSED:
                    return
                if isinstance(ev, h11.Request):
                    self.req = ev
                    self.body = bytearray()
                elif isinstance(ev, h11.Data):
                    self.body.extend(ev.data)
                    if len(self.body) > 65535:
                        self._send_error(413, "request body too large")
                        return
                elif isinstance(ev, h11.EndOfMessage):
                    self._request()
                elif isinstance(ev, h11.ConnectionClosed):
                    self.c.close()
                    return
        finally:
            self.looping = False
            self.c.update_reading()

    def _request(self) -> None:
        req = self.req
        assert req is not None
        self.busy = True
        self.c.progress()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        self.c.l.requests["http/1.1"] += 1
        reply = self.c.l.handle(req.method.decode("latin-1"), req.target.decode("latin-1"),
                                headers, bytes(self.body), self.c.ip)
        self.c.run(reply, self._respond)
        self.c.update_reading()

    def _respond(self, reply: Reply) -> None:
        status, headers, body = reply
        try:
            self.c.write(self.h11.send(h11.Response(status_code=status, headers=headers)))
            self.c.write(self.h11.send(h11.Data(data=body)))
            self.c.write(self.h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            self.c.close()
            return
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            self.c.close()
            return
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:
            self.c.close()
            return
        self.busy = False
        self._events()  # a no-op when called from inside the loop: it just continues

    def _send_error(self, status: int, text: str) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            body = (text + "\n").encode()
            self.c.write(self.h11.send(h11.Response(status_code=status, headers=[
                ("content-type", "text/plain"), ("content-length", str(len(body))),
                ("connection", "close")])))
            self.c.write(self.h11.send(h11.Data(data=body)))
            self.c.write(self.h11.send(h11.EndOfMessage()))
        self.c.close()
