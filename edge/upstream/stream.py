"""TCP and DNS-over-TLS upstreams: one reused connection, pipelined queries matched by ID."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct

from dnsflow.edge.upstream.base import (
    Upstream,
    UpstreamAddr,
    UpstreamError,
    check_reply,
    question_bytes,
    reply_matches,
)
from dnsflow.tasks import cancel_and_wait


class StreamUpstream(Upstream):
    def __init__(self, addr: UpstreamAddr, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(addr)
        self._ssl = ssl_context
        if addr.scheme == "tls" and ssl_context is None:
            self._ssl = ssl.create_default_context()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._questions: dict[bytes, bytes] = {}
        self.mismatched = 0
        self._reader_task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self.connects = 0

    async def _ensure(self, timeout: float) -> asyncio.StreamWriter:
        async with self._connect_lock:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    self.addr.host, self.addr.port, ssl=self._ssl,
                    server_hostname=(self.addr.sni or self.addr.host) if self._ssl else None,
                ), timeout)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                raise UpstreamError(f"{self.name}: connect failed ({exc!r})") from None
            self.connects += 1
            self._reader, self._writer = reader, writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
            return writer

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        err: BaseException = UpstreamError(f"{self.name}: connection closed")
        try:
            while True:
                head = await reader.readexactly(2)
                (ln,) = struct.unpack("!H", head)
                msg = await reader.readexactly(ln)
                fut = self._pending.get(msg[:2])
                if fut is not None and not fut.done():
                    if reply_matches(self._questions[msg[:2]], msg):
                        fut.set_result(msg)
                    else:  # wrong question for this ID: keep waiting for the right one
                        self.mismatched += 1
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError) as exc:
            err = UpstreamError(f"{self.name}: connection lost ({exc!r})")
        except asyncio.CancelledError:
            pass
        finally:
            if self._reader is reader:
                self._writer = None
                self._reader = None
            for fut in list(self._pending.values()):
                if not fut.done():
                    fut.set_exception(err)

    async def query(self, packet: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Exception | None = None
        for _attempt in range(2):  # one reconnect if the reused connection was closed
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            writer = await self._ensure(remaining)
            qid = random.getrandbits(16).to_bytes(2, "big")
            while qid in self._pending:
                qid = random.getrandbits(16).to_bytes(2, "big")
            msg = qid + packet[2:]
            fut: asyncio.Future[bytes] = loop.create_future()
            self._pending[qid] = fut
            self._questions[qid] = question_bytes(msg)
            try:
                writer.write(struct.pack("!H", len(msg)) + msg)
                reply = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
                check_reply(msg, reply)
                return reply
            except TimeoutError:
                raise UpstreamError(f"{self.name}: timeout after {timeout:.1f}s") from None
            except UpstreamError as exc:
                last = exc
            except OSError as exc:
                last = UpstreamError(f"{self.name}: {exc!r}")
            finally:
                self._pending.pop(qid, None)
                self._questions.pop(qid, None)
        raise last or UpstreamError(f"{self.name}: timeout after {timeout:.1f}s")

    async def close(self) -> None:
        await cancel_and_wait(self._reader_task, quiet=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = None
