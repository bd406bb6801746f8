"""Upstream addresses and the client interface every transport implements."""

from __future__ import annotations

import abc
import struct
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
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        sni = f"@{self.sni}" if self.sni and self.sni != self.host else ""
        return f"{self.scheme}://{host}:{self.port}{sni}"


DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


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
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"upstream {text!r}: scheme must be udp, tcp, tls or https")
    sni = ""
    rest = raw.split("://", 1)[1]
    if scheme == "tls" and "@" in rest:
        rest, sni = rest.rsplit("@", 1)
    parts = urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"upstream {text!r}: bad port") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"upstream {text!r}: missing host")
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


def check_reply(query: bytes, reply: bytes) -> None:
    """The reply answers this query: same ID, QR set, same question (case-insensitive)."""
    if len(reply) < 12 or reply[:2] != query[:2] or not reply[2] & 0x80:
        raise UpstreamError("reply does not match the query")
    qd = struct.unpack_from("!H", reply, 4)[0]
    if qd == 1:
        qlen = _qlen(query)
        if reply[12:12 + qlen].lower() != query[12:12 + qlen].lower():
            raise UpstreamError("reply question differs from the query")


def _qlen(packet: bytes) -> int:
    off = 12
    while packet[off]:
        off += 1 + packet[off]
    return off + 1 - 12 + 4
