"""Hostile clients against the listeners (issue #11): slowloris and connection exhaustion
over TCP/DoT/DoH, silent TLS connections, pipelining without reading, HTTP/2 rapid reset,
invalid UTF-8 headers, thousands of pipelined HTTP/1.1 requests, UDP response rate limiting.

Real sockets on 127.0.0.1 (a second client is 127.0.0.2); every loop bounded in count and
time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import struct
import time

import dns.flags
import dns.message
import h2.config
import h2.connection
import h2.errors
import h2.events

from dnsflow.edge.listeners import stream

Q = dns.message.make_query("example.com", "A").to_wire()
WRITE_HIGH = 64 * 1024  # edge.listeners.budget.WRITE_HIGH (imported lazily: the test must
# also run, and fail, against the listeners from before the budget existed)


def framed(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


async def tcp_ask(port: int, wire: bytes, source: str = "127.0.0.1",
                  timeout: float = 3.0) -> dns.message.Message:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0)), timeout)
    try:
        writer.write(framed(wire))
        (ln,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))
        return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(ln), timeout))
    finally:
        writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closed (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:  # (an OSError: test it first)
        return False
    except OSError:
        return True


def client_tls(svc, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(svc.tls_cert_path))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(alpn)
    return ctx


# -- connection exhaustion -----------------------------------------------------------------

async def test_tcp_slowloris_cannot_lock_out_other_clients(start_edge, monkeypatch) -> None:
    """40 connections from 127.0.0.1 dripping a byte every 0.3 s (more than the budget of
    32): 127.0.0.2 is still answered over TCP, and every dripping connection is closed by the
    read deadline although bytes keep arriving (before: each byte re-armed the idle timer)."""
    monkeypatch.setattr(stream, "MAX_CONNECTIONS", 32)  # the old hard-coded cap, same size
    svc = await start_edge(max_connections=32, max_connections_per_client=8,
                           tcp_read_timeout=1.0, idle_timeout=10.0)
    port = svc.status()["tcp_port"]
    conns = []
    for _ in range(40):
        with contextlib.suppress(OSError):
            conns.append(await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=("127.0.0.1", 0)))
    msg = framed(Q)
    stop = asyncio.Event()

    async def drip(writer: asyncio.StreamWriter) -> None:
        for i in range(len(msg) - 1):  # never the last byte
            if stop.is_set() or writer.is_closing():
                return
            with contextlib.suppress(OSError):
                writer.write(msg[i:i + 1])
            await asyncio.sleep(0.3)

    drips = [asyncio.ensure_future(drip(w)) for _, w in conns]
    try:
        await asyncio.sleep(0.3)
        r = await tcp_ask(port, Q, source="127.0.0.2")
        assert r.answer, "a second client is locked out"
        t0 = time.monotonic()
        closed = await asyncio.gather(*[closed_within(rd, 4.0) for rd, _ in conns])
        assert all(closed), f"{closed.count(False)} dripping connections still open"
        assert time.monotonic() - t0 < 4.0
        st = svc.status()["connections"]
        tcp = st["listeners"][0]
        assert tcp["read_timeouts"] >= 1 and st["refused_client"] >= 1
        assert st["open"] <= 1
    finally:
        stop.set()
        for d in drips:
            d.cancel()
        for _, w in conns:
            w.close()


async def test_full_budget_evicts_the_heaviest_client(start_edge, monkeypatch) -> None:
    """One address holds the whole budget with idle connections: a newcomer from another
    address takes its oldest connection instead of being refused."""
    monkeypatch.setattr(stream, "MAX_CONNECTIONS", 8)
    svc = await start_edge(max_connections=8, max_connections_per_client=8)
    port = svc.status()["tcp_port"]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    await asyncio.sleep(0.1)
    try:
        r = await tcp_ask(port, Q, source="127.0.0.2")
        assert r.answer
        assert svc.status()["connections"]["evicted"] >= 1
        assert await closed_within(held[0][0], 2.0)
    finally:
        for _, w in held:
            w.close()


async def test_silent_connections_to_tls_ports_are_closed_and_charged(start_edge) -> None:
    """A raw TCP connect to DoT/DoH that never starts TLS is closed within the handshake
    timeout (before: held 60 s), and DoH connections count in the shared budget (before: no
    cap at all): beyond the per-client share, a connection is refused at once."""
    svc = await start_edge(dot_listen="127.0.0.1:0", doh_listen="127.0.0.1:0",
                           tls_handshake_timeout=0.5, max_connections_per_client=4)
    st = svc.status()
    for key in ("dot_port", "doh_port"):
        reader, writer = await asyncio.open_connection("127.0.0.1", st[key])
        t0 = time.monotonic()
        assert await closed_within(reader, 3.0), key
        assert time.monotonic() - t0 < 2.0
        writer.close()
    doh = [await asyncio.open_connection("127.0.0.1", st["doh_port"]) for _ in range(6)]
    try:
        refused = await asyncio.gather(*[closed_within(r, 0.3) for r, _ in doh])
        assert refused.count(True) == 2
        conns = svc.status()["connections"]
        assert conns["refused_client"] >= 2
        timeouts = sum(x["handshake_timeouts"] for x in conns["listeners"])
        assert timeouts >= 2
    finally:
        for _, w in doh:
            w.close()


async def test_pipelining_without_reading_pauses_and_stays_bounded(start_edge) -> None:
    """A client writes ~1.5 MB of queries and never reads: the edge stops reading from it
    once its unsent answers pass the high-water mark, its buffers stay bounded (before: the
    write buffer grew with every query), and without progress it is closed when idle."""
    svc = await start_edge(idle_timeout=2.0)
    port = svc.status()["tcp_port"]
    await tcp_ask(port, Q)  # cached: from now on every query is answered at once
    lst = svc.listeners[1]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, ("127.0.0.1", port))
    mine = s.getsockname()
    for _ in range(100):
        found = [c for c in lst.conns if c.transport is not None
                 and c.transport.get_extra_info("peername") == mine]
        if found:
            break
        await asyncio.sleep(0.02)
    (conn,) = found
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                        4096)
    chunk = framed(Q) * 2000
    max_wbuf = max_rbuf = 0
    paused_seen = False
    sent = 0
    deadline = time.monotonic() + 8
    try:
        while sent < 1_500_000 and time.monotonic() < deadline:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                await asyncio.sleep(0.02)
            except OSError:
                break
            await asyncio.sleep(0)
            if conn.transport is not None:
                max_wbuf = max(max_wbuf, conn.transport.get_write_buffer_size())
                max_rbuf = max(max_rbuf, len(conn.buf))
                paused_seen = paused_seen or not getattr(conn, "reading", True)
            if conn.transport is None:
                break
        assert max_wbuf <= WRITE_HIGH + 4096, max_wbuf
        assert paused_seen, "the edge never stopped reading from a client that does not read"
        assert max_rbuf <= 512 * 1024, max_rbuf
        t0 = time.monotonic()
        while conn.transport is not None and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.1)
        assert conn.transport is None, "a stalled client keeps its connection"
        assert svc.status()["connections"]["listeners"][0]["write_paused"] >= 1
    finally:
        s.close()


# -- HTTP/2 and HTTP/1.1 -------------------------------------------------------------------

async def h2_connect(svc, **cfg):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", svc.status()["doh_port"], ssl=client_tls(svc, ["h2"]),
        server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, **cfg))
    c.initiate_connection()
    writer.write(c.data_to_send())
    return reader, writer, c


def get_headers(wire: bytes, extra: list | None = None) -> list:
    b64 = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
    return [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
            (":path", f"/dns-query?dns={b64}"), *(extra or [])]


async def test_h2_rapid_reset_gets_goaway_and_spares_the_upstream(start_edge, upstream
                                                                   ) -> None:
    """1,000 HEADERS+RST_STREAM pairs for names that are not cached: GOAWAY
    ENHANCE_YOUR_CALM arrives after a bounded number, and the upstream sees at most a bounded
    number of queries (before: no GOAWAY, and every reset stream asked the upstream)."""
    upstream.delay = 0.2
    svc = await start_edge(doh_listen="127.0.0.1:0")
    reader, writer, c = await h2_connect(svc)
    before = upstream.count()
    sid = 1
    goaway = None
    try:
        for _batch in range(20):
            for _ in range(50):
                q = dns.message.make_query(f"r{sid}.example.com", "A").to_wire()
                c.send_headers(sid, get_headers(q), end_stream=True)
                c.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                sid += 2
            with contextlib.suppress(OSError):
                writer.write(c.data_to_send())
            with contextlib.suppress(TimeoutError, ConnectionError):
                data = await asyncio.wait_for(reader.read(65535), 0.05)
                for ev in c.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        goaway = ev
            if goaway is not None or reader.at_eof():
                break
        for _ in range(40):
            if goaway is not None or reader.at_eof():
                break
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(reader.read(65535), 0.1)
                for ev in c.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        goaway = ev
        assert goaway is not None, "no GOAWAY after a reset flood"
        assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert sid // 2 <= 300, "GOAWAY came late"
        await asyncio.sleep(0.5)
        assert upstream.count() - before <= 120
        assert svc.status()["connections"]["listeners"][-1]["h2_rapid_reset_goaway"] == 1
    finally:
        writer.close()


async def test_h2_invalid_utf8_header_is_a_400_logged_once(start_edge, caplog) -> None:
    """Three requests with a header value that is not UTF-8: three 400s on a connection
    that stays usable, one log line, no traceback (before: a traceback per request)."""
    svc = await start_edge(doh_listen="127.0.0.1:0")
    caplog.set_level(logging.DEBUG)
    reader, writer, c = await h2_connect(svc, validate_outbound_headers=False,
                                         normalize_outbound_headers=False)
    statuses: dict[int, int] = {}
    try:
        for sid in (1, 3, 5):
            c.send_headers(sid, [(k.encode(), v.encode()) for k, v in get_headers(Q)]
                           + [(b"x-bad", b"\xff\xfe\xc3")], end_stream=True)
        c.send_headers(7, get_headers(Q), end_stream=True)  # a good one after them
        writer.write(c.data_to_send())
        async with asyncio.timeout(5):
            while len(statuses) < 4:
                data = await reader.read(65535)
                assert data, "connection closed"
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        statuses[ev.stream_id] = int(dict(ev.headers)[b":status"])
                writer.write(c.data_to_send())
    finally:
        writer.close()
    assert statuses == {1: 400, 3: 400, 5: 400, 7: 200}
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    mentions = [r for r in caplog.records if "UTF-8" in r.getMessage()]
    assert len(mentions) == 1
    assert svc.status()["connections"]["listeners"][-1]["bad_headers"] == 3


async def test_3000_pipelined_http1_requests_are_answered(start_edge, caplog) -> None:
    """3,000 pipelined HTTP/1.1 requests on one connection: all answered, no
    RecursionError (before: each answer from memory recursed into the next request)."""
    svc = await start_edge(doh_listen="127.0.0.1:0")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", svc.status()["doh_port"], ssl=client_tls(svc, ["http/1.1"]),
        server_hostname="localhost")
    b64 = base64.urlsafe_b64encode(Q).rstrip(b"=").decode()
    req = f"GET /dns-query?dns={b64} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode()
    n = 3000
    writer.write(req * n)
    got = b""
    try:
        async with asyncio.timeout(30):
            while got.count(b"HTTP/1.1 200") < n:
                data = await reader.read(1 << 20)
                assert data, f"closed after {got.count(b'HTTP/1.1 200')} answers"
                got += data
    finally:
        writer.close()
    assert got.count(b"HTTP/1.1 200") == n
    assert not [r for r in caplog.records if "Recursion" in r.getMessage()
                or (r.exc_info and r.exc_info[0] is RecursionError)]


# -- UDP response rate limiting --------------------------------------------------------------

def udp_burst(port: int, n: int, source: str = "127.0.0.1") -> list[dns.message.Message]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for i in range(n):
            q = dns.message.make_query("example.com", "A")
            q.id = i
            s.sendto(q.to_wire(), ("127.0.0.1", port))
        s.settimeout(0.5)
        out = []
        with contextlib.suppress(TimeoutError):
            while len(out) < n:
                out.append(dns.message.from_wire(s.recv(4096)))
        return out


async def test_rrl_limits_answers_per_prefix_with_slip(start_edge) -> None:
    """40 queries at once with rrl_rate 5: about 5 answers, every 2nd limited one a TC=1
    reply with no records, the rest dropped; counted in status() and /metrics; another /32
    prefix keeps its own budget (before: every query answered, no such knob)."""
    svc = await start_edge(rrl_rate=5, rrl_slip=2, rrl_ipv4_prefix=32)
    port = svc.status()["udp_port"]
    replies = await asyncio.to_thread(udp_burst, port, 40)
    full = [r for r in replies if not r.flags & dns.flags.TC]
    tc = [r for r in replies if r.flags & dns.flags.TC]
    assert 3 <= len(full) <= 7, len(full)
    assert 14 <= len(tc) <= 19 and all(not r.answer for r in tc), len(tc)
    rrl = svc.status()["rrl"]
    assert rrl["enabled"] and rrl["dropped"] >= 14 and rrl["slipped"] == len(tc)
    other = await asyncio.to_thread(udp_burst, port, 3, "127.0.0.2")
    assert len(other) == 3 and all(not r.flags & dns.flags.TC for r in other)
    text = svc.metrics.render().decode()
    assert 'dnsflow_edge_rrl_responses_total{action="dropped"' in text
    assert "dnsflow_edge_connections_open" in text


async def test_rrl_is_off_by_default(start_edge) -> None:
    svc = await start_edge()
    replies = await asyncio.to_thread(udp_burst, svc.status()["udp_port"], 40)
    assert len(replies) == 40 and not any(r.flags & dns.flags.TC for r in replies)
    assert svc.status()["rrl"] == {"enabled": False}


def test_rrl_keys_and_truncated_reply() -> None:
    from dnsflow.edge.rrl import ResponseRateLimiter, tc_reply

    r = ResponseRateLimiter(10, v4_prefix=24, v6_prefix=56)
    a = socket.inet_aton("192.0.2.77")
    word = int.from_bytes(struct.pack("=H", socket.AF_INET) + b"\x12\x34" + a, "little")
    assert r.key_v4(word) == r.key_ip("192.0.2.1") != r.key_ip("192.0.3.1")
    six = socket.inet_pton(socket.AF_INET6, "2001:db8:0:ab12::1")
    sa6 = b"\x0a\x00\x00\x35\x00\x00\x00\x00" + six + b"\x00" * 4
    assert r.key_v6(sa6) == r.key_ip("2001:db8:0:ab00::9") != r.key_ip("2001:db8:0:ac00::1")
    q = dns.message.make_query("Example.COM", "AAAA", want_dnssec=True)
    msg = dns.message.from_wire(tc_reply(q.to_wire()))
    assert msg.id == q.id and msg.flags & dns.flags.TC and msg.flags & dns.flags.QR
    assert msg.question == q.question and not msg.answer
    assert tc_reply(b"\x00" * 11) is None and tc_reply(q.to_wire()[:20]) is None
    # bucket: burst answers, then limited with slip 2; refills with time
    b = ResponseRateLimiter(2, slip=2)
    verdicts = [b.check(1, 100.0) for _ in range(6)]
    assert verdicts == [0, 0, 1, 2, 1, 2]
    assert b.check(1, 101.0) == 0


def test_budget_fairness_unit() -> None:
    from dnsflow.edge.listeners.budget import WRITE_HIGH as high
    from dnsflow.edge.listeners.budget import ConnectionBudget

    assert high == WRITE_HIGH

    class C:
        def __init__(self, ip):
            self.ip, self.evicted = ip, False

        def evict(self):
            self.evicted = True

    b = ConnectionBudget(4, 3)
    a = [C("a") for _ in range(3)]
    assert all(b.admit(c, "a") for c in a)
    assert not b.admit(C("a"), "a")          # per-client cap
    assert b.admit(C("b"), "b")              # 4 of 4
    c = C("c")
    assert b.admit(c, "c") and a[0].evicted  # full: the heaviest client's oldest goes
    assert b.admit(C("d"), "d") and a[1].evicted  # a still held 2: it gives one more
    assert not b.admit(C("e"), "e")          # one each now: refused
    b.release(c, "c")
    assert b.total == 3 and b.status()["evicted"] == 2


async def test_doh_dns_parameter_must_be_strict_base64url(start_edge) -> None:
    """Characters outside base64url are a 400, not skipped (the lenient decoder answered
    whatever the rest decoded to; found by bench.edge_fuzz)."""
    import httpx

    svc = await start_edge(doh_listen="127.0.0.1:0")
    url = f"https://localhost:{svc.status()['doh_port']}/dns-query"
    b64 = base64.urlsafe_b64encode(Q).rstrip(b"=").decode()
    async with httpx.AsyncClient(verify=client_tls(svc, ["http/1.1"])) as c:
        assert (await c.get(url, params={"dns": b64})).status_code == 200
        assert (await c.get(url, params={"dns": "!!" + b64})).status_code == 400
