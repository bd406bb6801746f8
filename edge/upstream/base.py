"""Upstream addresses and the client interface every transport implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from urllib.parse import urlsplit


class UpstreamError(RuntimeError):
    """No usable answer from an upstream (timeout, refused, garbage)."""


@dataclass(frozen=True, slots=True)
class UpstreamAddr:
    scheme: str       # udp | tcp | tls | https
    host: str
    port: int
    sni: str = ""
    url: str = ""

    def __str__(self) -> str:
        if self.scheme == "https":
            return redact_url(self.url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        sni = f"@{self.sni}" if self.sni and self.sni != self.host else ""
        return f"{self.scheme}://{host}:{self.port}{sni}"


DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


def redact_url(text: str) -> str:
    """The URL without its userinfo (``https://user:pw@host/`` -> ``https://host/``): the
    upstream's display name goes into metrics labels, logs and events."""
    if "://" not in text:
        return text.rsplit("@", 1)[-1] if "@" in text.split("/", 1)[0] else text
    scheme, rest = text.split("://", 1)
    authority, sep, path = rest.partition("/")
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{sep}{path}"


def parse_upstream(text: str) -> UpstreamAddr:
    """``udp://1.2.3.4:53``, ``tcp://..``, ``tls://host:853@sni``, ``https://host/dns-query``,
    or a bare ``host[:port]`` (UDP)."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty upstream address")
    if "://" not in raw:
        raw = "udp://" + raw
    scheme = raw.split("://", 1)[0].lower()
    if scheme in ("dot",):
        scheme = "tls"
    if scheme == "doh":
        scheme = "https"
    shown = redact_url(raw)
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"upstream {shown!r}: scheme must be udp, tcp, tls or https")
    sni = ""
    rest = raw.split("://", 1)[1]
    if scheme == "tls" and "@" in rest:
        rest, sni = rest.rsplit("@", 1)
    parts = urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"upstream {shown!r}: bad port") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"upstream {shown!r}: missing host")
    url = raw if scheme == "https" else ""
    if scheme == "https" and not parts.path:
        url = raw.rstrip("/") + "/dns-query"
    return UpstreamAddr(scheme, host, port, sni or (host if scheme == "tls" else ""), url)


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
