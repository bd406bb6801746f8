"""``--connect ADDR:PORT[/PROTO]`` and ``--since 24h`` as the egress commands read them:
parsed once, with errors that quote the flag and say what form is expected."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PROTOCOLS = ("tcp", "udp", "sctp")
_TARGET = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:/\[\]]+)):(?P<port>[^/]+)"
                     r"(?:/(?P<proto>\w+))?$")
_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TargetError(ValueError):
    """A bad ``--connect`` or ``--since`` value; the message names the flag and the value."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a client wants to connect: an address (canonical text), a port, a protocol."""

    ip: str
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}/{self.protocol}"


def parse_target(text: str) -> Target:
    """``1.2.3.4:443``, ``1.2.3.4:443/udp``, ``[2001:db8::1]:443/tcp`` (default tcp)."""
    where = f"--connect {text!r}"
    m = _TARGET.match(text.strip())
    if not m:
        raise TargetError(f"{where}: expected ADDRESS:PORT[/tcp|udp|sctp] "
                          "(IPv6 in brackets: [2001:db8::1]:443)")
    host = m.group("v6") or m.group("v4")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise TargetError(f"{where}: {host!r} is not an IP address (egress rules allow the "
                          "addresses DNS answers held, so ask about one)") from None
    if not m.group("port").isdigit() or not 1 <= int(m.group("port")) <= 65535:
        raise TargetError(f"{where}: port {m.group('port')!r} is not 1..65535")
    proto = (m.group("proto") or "tcp").lower()
    if proto not in PROTOCOLS:
        raise TargetError(f"{where}: protocol {m.group('proto')!r} is not tcp, udp or sctp")
    return Target(str(ip), int(m.group("port")), proto)


def parse_since(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` -> seconds."""
    m = _SPAN.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise TargetError(f"--since {text!r}: expected a positive number with s, m, h or d "
                          "(e.g. 24h)")
    return int(m.group(1)) * _UNIT[m.group(2)]
