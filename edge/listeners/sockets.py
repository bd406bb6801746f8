"""Sockets bound with SO_REUSEPORT so ``--workers N`` processes share one port."""

from __future__ import annotations

import socket
from typing import NamedTuple


class Bind(NamedTuple):
    """Where a listener listens: host, port (0: any free one) and whether ``--workers``
    processes share it (SO_REUSEPORT)."""

    host: str
    port: int
    reuse_port: bool = True


def split_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or "0.0.0.0", int(port)
    if text.count(":") > 1:  # bare IPv6
        return text, default_port
    return text, default_port


def bind_socket(host: str, port: int, kind: int, reuse_port: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                except OSError:
                    pass
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(1024)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s
