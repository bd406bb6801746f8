"""DNS-over-HTTPS upstream (RFC 8484 POST) through one reused httpx client (HTTP/2 if offered)."""

from __future__ import annotations

import ssl

import httpx

from dnsflow.edge.upstream.base import Upstream, UpstreamAddr, UpstreamError, check_reply


def _userinfo(url: str) -> str:
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    return authority.rsplit("@", 1)[0] + "@" if "@" in authority else ""


class DohUpstream(Upstream):
    def __init__(self, addr: UpstreamAddr, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(addr)
        verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._client = httpx.AsyncClient(http2=True, verify=verify, timeout=5.0)
        self._secret = _userinfo(addr.url)   # never in an error text (logs, status)

    def _clean(self, text: str) -> str:
        return text.replace(self._secret, "") if self._secret else text

    async def query(self, packet: bytes, timeout: float) -> bytes:
        msg = b"\x00\x00" + packet[2:]  # RFC 8484 4.1: ID 0 for cache friendliness
        try:
            resp = await self._client.post(
                self.addr.url, content=msg, timeout=timeout,
                headers={"content-type": "application/dns-message",
                         "accept": "application/dns-message"})
        except httpx.TimeoutException:
            raise UpstreamError(f"{self.name}: timeout after {timeout:.1f}s") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(self._clean(f"{self.name}: {exc!r}")) from None
        if resp.status_code != 200:
            raise UpstreamError(f"{self.name}: HTTP {resp.status_code}")
        reply = resp.content
        check_reply(msg, reply)
        return packet[:2] + reply[2:]

    async def close(self) -> None:
        await self._client.aclose()
