"""Frame Streams listeners (unix socket, TCP): one asyncio protocol per sending resolver.

The reader never waits on anything but the socket: frames are decoded and paired inside
``data_received`` and events go to the publisher's bounded queue, which spools or drops
(counted) rather than block. While a read is being processed the sender's socket buffer
fills; dnstap senders (unbound, dnsdist, CoreDNS) then drop in their own logging queue and
never stall resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsflow.edge.listeners.sockets import split_hostport
from dnsflow.edge.tap.frames import (
    ACCEPT,
    AGAIN,
    CONTENT_TYPE,
    FINISH,
    READY,
    START,
    STOP,
    Control,
    FrameError,
    FrameReader,
    Scanner,
    encode_control,
)

log = logging.getLogger(__name__)

OnFrame = Callable[[bytes, "Connection"], None]
OnFrames = Callable[[list[bytes], "Connection"], None]
MakeScanner = Callable[["Connection"], "Scanner | None"]


@dataclass(frozen=True)
class Endpoint:
    """``unix:PATH`` or ``tcp:HOST:PORT`` (port 0: any free port)."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        kind, sep, rest = text.partition(":")
        if kind == "unix" and sep and rest:
            return cls("unix", path=rest)
        if kind == "tcp" and sep and rest:
            try:
                host, port = split_hostport(rest, -1)
            except ValueError:
                port = -1
            if not 0 <= port <= 65535:
                raise ValueError(f"--listen {text!r}: expected tcp:HOST:PORT with a port "
                                 f"number")
            return cls("tcp", host=host, port=port)
        raise ValueError(f"--listen {text!r}: expected unix:PATH or tcp:HOST:PORT")

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"tcp:[{self.host}]:{self.port}" if ":" in self.host else (
            f"tcp:{self.host}:{self.port}")


class Connection(asyncio.Protocol):
    """One sender: the handshake, then data frames to ``on_frames`` until STOP."""

    def __init__(self, listener: TapListener, number: int) -> None:
        self.listener = listener
        self.reader = FrameReader()
        self.state = "ready"       # ready -> start -> data -> stopped
        self.label = f"{listener.endpoint}#{number}"
        self.frames = 0
        self.transport: asyncio.Transport | None = None
        self.scan: Scanner | None = None  # from START on: the listener's scanner, if any

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.label = f"{peer[0]}:{peer[1]}"
        self.listener.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.closed(self)

    def data_received(self, data: bytes) -> None:
        """Every complete frame of this read: the data frames between control frames go to
        ``on_frames`` as one list (one call per read, not per frame)."""
        reader = self.reader
        try:
            frames, ctl = reader.take(data, self.scan)
            while True:
                if frames:
                    if self.state != "data":
                        raise FrameError(f"data frame before START (state {self.state})")
                    self.frames += len(frames)
                    self.listener.on_frames(frames, self)
                if ctl is None:
                    return
                if ctl is AGAIN:  # the scanner's turn, after these frames
                    frames, ctl = reader.take(b"", self.scan)
                    continue
                if type(ctl) is FrameError:
                    raise ctl
                self._control(ctl)  # type: ignore[arg-type]
                if self.state == "stopped":
                    return
                frames, ctl = reader.take(b"", self.scan)
        except FrameError as exc:
            self.listener.protocol_errors += 1
            log.error("dnstap %s (%s): %s; closing the connection", self.label,
                      self.listener.endpoint, exc)
            self._close()

    def _control(self, ctl: Control) -> None:
        if ctl.kind == READY and self.state == "ready":
            if CONTENT_TYPE not in ctl.content_types and ctl.content_types:
                raise FrameError(f"sender offers {ctl.content_types!r}, not {CONTENT_TYPE!r}")
            self._write(encode_control(ACCEPT, (CONTENT_TYPE,)))
            self.state = "start"
        elif ctl.kind == START and self.state in ("ready", "start"):  # "ready": unidirectional
            if ctl.content_types and CONTENT_TYPE not in ctl.content_types:
                raise FrameError(f"sender starts {ctl.content_types!r}, not {CONTENT_TYPE!r}")
            self.state = "data"
            if self.listener.scanner is not None:
                self.scan = self.listener.scanner(self)
        elif ctl.kind == STOP:
            self._write(encode_control(FINISH))
            self.state = "stopped"
            self._close()
        else:
            raise FrameError(f"unexpected {ctl.name} frame (state {self.state})")

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.state = "stopped"
        if self.transport is not None:
            self.transport.close()


class TapListener:
    """One ``--listen`` endpoint and its connections."""

    def __init__(self, endpoint: Endpoint, on_frame: OnFrame | None = None, *,
                 on_frames: OnFrames | None = None, scanner: MakeScanner | None = None
                 ) -> None:
        """``on_frames(frames, conn)`` gets each read's data frames as one list (the tap's
        reader); ``on_frame(frame, conn)`` one at a time. ``scanner(conn)``, called when a
        sender starts its data, may give a :class:`Scanner` that takes frames before they
        are split (the tap's adjacent pairs)."""
        self.endpoint = endpoint
        if on_frames is None:
            assert on_frame is not None

            def on_frames(frames: list[bytes], conn: Connection, one: OnFrame = on_frame
                          ) -> None:
                for f in frames:
                    one(f, conn)
        self.on_frames = on_frames
        self.scanner = scanner
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[Connection] = set()
        self.accepted = 0
        self.protocol_errors = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        if ep.kind == "unix":
            path = Path(ep.path)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):  # a previous run's socket
                    path.unlink()
            self.server = await loop.create_unix_server(self._connection, ep.path)
            # whoever can connect can write events for any client address: owner and group
            # only (run the tap in the resolver's group, e.g. unbound's, to let it connect)
            os.chmod(ep.path, 0o660)
        else:
            self.server = await loop.create_server(self._connection, ep.host, ep.port)
            port = self.server.sockets[0].getsockname()[1]
            self.endpoint = Endpoint("tcp", host=ep.host, port=port)

    def _connection(self) -> Connection:
        self.accepted += 1
        return Connection(self, self.accepted)

    def opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        log.info("dnstap sender connected on %s: %s", self.endpoint, conn.label)

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        log.info("dnstap sender %s on %s gone after %d frames", conn.label, self.endpoint,
                 conn.frames)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn._close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None
        if self.endpoint.kind == "unix":
            with contextlib.suppress(OSError):
                os.unlink(self.endpoint.path)

    def status(self) -> dict[str, Any]:
        return {"listen": str(self.endpoint), "connections": len(self.connections),
                "accepted": self.accepted, "protocol_errors": self.protocol_errors}
