"""Helpers for the tap's unit tests: dnstap messages as senders build them, and a Frame
Streams sender speaking the bidirectional handshake over a unix socket or TCP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import dns.message
import dns.rrset
import pytest
from dnstap_pb import dnstap_pb2

from dnsflow.edge.tap import frames


def make_dnstap(kind: int, qname: str = "web.shop.test", *, qid: int = 4660,
                client: str = "127.0.0.2", port: int = 40000, rcode: int = 0,
                answer: str | None = "10.0.0.1", t_us: int = 1_700_000_000_000_000,
                protocol: int = 1, identity: bytes = b"unbound-1", qtype: str = "A",
                query_time_in_response: bool = False) -> bytes:
    """One serialised dnstap record (CLIENT_QUERY=5, CLIENT_RESPONSE=6, ...)."""
    q = dns.message.make_query(qname, qtype)
    q.id = qid
    d = dnstap_pb2.Dnstap(identity=identity, version=b"test", type=1)
    m = d.message
    m.type = kind
    fam = socket.AF_INET6 if ":" in client else socket.AF_INET
    m.socket_family = 2 if fam == socket.AF_INET6 else 1
    m.socket_protocol = protocol
    m.query_address = socket.inet_pton(fam, client)
    m.response_address = socket.inet_pton(fam, "::1" if fam == socket.AF_INET6 else "127.0.0.1")
    m.query_port = port
    m.response_port = 53
    sec, usec = divmod(t_us, 1_000_000)
    if kind % 2:  # queries have odd numbers
        m.query_time_sec, m.query_time_nsec = sec, usec * 1000
        m.query_message = q.to_wire()
    else:
        r = dns.message.make_response(q)
        r.set_rcode(rcode)
        if answer and rcode == 0:
            r.answer.append(dns.rrset.from_text(qname.rstrip(".") + ".", 60, "IN", qtype, answer))
        m.response_time_sec, m.response_time_nsec = sec, usec * 1000
        if query_time_in_response:
            m.query_time_sec, m.query_time_nsec = sec, 0
        m.response_message = r.to_wire()
    return d.SerializeToString()


async def fstrm_send(address: str | tuple[str, int], payloads: list[bytes], *,
                     bidirectional: bool = True, chunk: int = 0) -> bytes:
    """Connect, hand-shake, send ``payloads`` as data frames, STOP; returns what the
    receiver wrote (ACCEPT ... FINISH). ``chunk`` > 0 splits the stream into writes of
    that size, as a slow sender would."""
    if isinstance(address, str):
        reader, writer = await asyncio.open_unix_connection(address)
    else:
        reader, writer = await asyncio.open_connection(*address)
    got = b""
    try:
        if bidirectional:
            writer.write(frames.encode_control(frames.READY, (frames.CONTENT_TYPE,)))
            await writer.drain()
            got += await asyncio.wait_for(reader.read(4096), 5)
        stream = frames.encode_control(frames.START, (frames.CONTENT_TYPE,)) + b"".join(
            frames.encode_data(p) for p in payloads) + frames.encode_control(frames.STOP)
        step = chunk or len(stream)
        for i in range(0, len(stream), step):
            writer.write(stream[i:i + step])
            await writer.drain()
        if bidirectional:
            got += await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()
    return got


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def dnstap() -> Callable[..., bytes]:
    return make_dnstap


@pytest.fixture
def send() -> Callable[..., Awaitable[bytes]]:
    return fstrm_send


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    return wait_for
