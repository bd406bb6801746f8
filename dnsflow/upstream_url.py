"""The upstream URL grammar: one parser for the edge's configuration and for policies.

``udp://host[:port]``, ``tcp://host[:port]``, ``tls://host[:port][@sni]``,
``https://host[:port][/path]`` (``dot://`` and ``doh://`` are aliases of ``tls://`` and
``https://``). The edge's own configuration also takes a bare ``host[:port]`` (UDP), as
resolv.conf gives them (``bare=True``); policies always name the scheme. The CRD patterns in
``policies/crd.py`` restate this grammar for the API server and are tested against it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = ("udp", "tcp", "tls", "https", "dot", "doh")
ALIASES = {"dot": "tls", "doh": "https"}
DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
DOH_PATH = "/dns-query"

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")


class UpstreamURLError(ValueError):
    """An upstream address outside the grammar; the message names it (credentials hidden)."""


@dataclass(frozen=True, slots=True)
class UpstreamURL:
    scheme: str       # udp | tcp | tls | https (aliases resolved)
    host: str
    port: int
    sni: str = ""     # tls: the name the certificate must carry (default: the host)
    url: str = ""     # https: the whole URL, path included

    def __str__(self) -> str:
        """The display name (logs, metrics, events): never the URL's credentials."""
        if self.scheme == "https":
            return redact_url(self.url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        sni = f"@{self.sni}" if self.sni and self.sni != self.host else ""
        return f"{self.scheme}://{host}:{self.port}{sni}"


def redact_url(text: str) -> str:
    """The URL without its userinfo (``https://user:pw@host/`` -> ``https://host/``)."""
    if "://" not in text:
        return text.rsplit("@", 1)[-1] if "@" in text.split("/", 1)[0] else text
    scheme, rest = text.split("://", 1)
    authority, sep, path = rest.partition("/")
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{sep}{path}"


def check_hostname(name: str, what: str) -> None:
    """An IP address or a host name of letters, digits, '-' and '_' labels (IDNs as
    punycode), at most 253 characters."""
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    if len(name) > 253 or not _HOSTNAME.fullmatch(name.lower()):
        raise UpstreamURLError(f"{what}: {name!r} is not a valid host name")


def parse_upstream_url(text: str, *, bare: bool = False) -> UpstreamURL:
    """Parse and check one upstream address; :class:`UpstreamURLError` names what is wrong.
    ``bare``: a ``host[:port]`` without a scheme is UDP (the edge's configuration)."""
    if not isinstance(text, str):
        raise UpstreamURLError(f"upstream {text!r}: expected udp://, tcp://, tls:// or https://")
    raw = text
    if not raw.strip():
        raise UpstreamURLError("empty upstream address")
    if "://" not in raw:
        if not bare:
            raise UpstreamURLError(f"upstream {redact_url(raw)!r}: expected udp://, tcp://, "
                                   "tls:// or https://")
        raw = "udp://" + raw
    given, rest = raw.split("://", 1)
    shown = f"upstream {redact_url(raw)!r}"
    if given not in SCHEMES:
        raise UpstreamURLError(f"{shown}: unknown scheme {given!r} "
                               "(use udp, tcp, tls (dot) or https (doh))")
    scheme = ALIASES.get(given, given)
    sni = ""
    if scheme == "tls" and "@" in rest:
        rest, sni = rest.rsplit("@", 1)
        if not sni:
            raise UpstreamURLError(f"{shown}: empty SNI after '@'")
        check_hostname(sni, shown)
    parts = urlsplit(f"{scheme}://{rest}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise UpstreamURLError(f"{shown}: bad port ({exc})") from None
    if not host:
        raise UpstreamURLError(f"{shown}: missing host")
    if port == 0:
        raise UpstreamURLError(f"{shown}: port 0")
    if scheme != "https" and parts.path not in ("", "/"):
        raise UpstreamURLError(f"{shown}: a path is only allowed for https://")
    check_hostname(host, shown)
    url = ""
    if scheme == "https":
        url = f"https://{rest}"
        if not parts.path:
            url = url.rstrip("/") + DOH_PATH
    return UpstreamURL(scheme, host, port or DEFAULT_PORTS[scheme],
                       sni or (host if scheme == "tls" else ""), url)
