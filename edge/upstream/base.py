"""Upstream addresses and the client interface every transport implements."""

from __future__ import annotations

import abc

from dnsflow.upstream_url import DEFAULT_PORTS, UpstreamURL, parse_upstream_url, redact_url


class UpstreamError(RuntimeError):
    """No usable answer from an upstream (timeout, refused, garbage)."""


# The grammar is the core's (one for the edge's configuration and for policies).
UpstreamAddr = UpstreamURL
__all__ = ["DEFAULT_PORTS", "Upstream", "UpstreamAddr", "UpstreamError", "check_reply",
           "parse_upstream", "question_bytes", "redact_url", "reply_matches"]


def parse_upstream(text: str) -> UpstreamAddr:
    """``udp://1.2.3.4:53``, ``tcp://..``, ``tls://host:853@sni``, ``https://host/dns-query``,
    or a bare ``host[:port]`` (UDP): :func:`dnsflow.upstream_url.parse_upstream_url`."""
    return parse_upstream_url(text.strip(), bare=True)


class Upstream(abc.ABC):
    """One upstream server; ``query`` returns the raw answer with the query's ID."""

    def __init__(self, addr: UpstreamAddr) -> None:
        self.addr = addr
        self.name = str(addr)

    @abc.abstractmethod
    async def query(self, packet: bytes, timeout: float) -> bytes: ...

    async def close(self) -> None:
        return None


def reply_matches(question: bytes, reply: bytes) -> bool:
    """Whether ``reply`` (ID already matched) answers a query with this question (its name
    case-insensitive, type and class exact): QR set and one question equal to ours, or a
    header-only error reply (some servers send FORMERR/REFUSED without the question; the
    pool then tries the next upstream). A forged or stray datagram fails this and the
    transports keep waiting for the genuine reply."""
    if len(reply) < 12 or not reply[2] & 0x80:
        return False
    qd = (reply[4] << 8) | reply[5]
    if qd == 0:
        return bool(reply[3] & 0x0F) and not any(reply[6:12])
    if qd != 1:
        return False
    end = 12 + len(question)
    return (len(reply) >= end and reply[end - 4:end] == question[-4:]
            and reply[12:end - 4].lower() == question[:-4].lower())


def question_bytes(packet: bytes) -> bytes:
    """Name, type and class of a query packet (uncompressed, one question)."""
    return packet[12:12 + _qlen(packet)]


def check_reply(query: bytes, reply: bytes) -> None:
    """The reply answers this query: same ID, QR set, same question (case-insensitive)."""
    if len(reply) < 12 or reply[:2] != query[:2] or not reply_matches(question_bytes(query),
                                                                      reply):
        raise UpstreamError("reply does not match the query")


def _qlen(packet: bytes) -> int:
    off = 12
    while packet[off]:
        off += 1 + packet[off]
    return off + 1 - 12 + 4
