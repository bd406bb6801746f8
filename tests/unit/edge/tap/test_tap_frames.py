"""Frame Streams: framing, the handshake a real sender does, and what a broken peer gets."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from dnsflow.edge.tap import frames
from dnsflow.edge.tap.server import Endpoint, TapListener


def test_frames_split_anywhere_come_out_whole() -> None:
    payloads = [b"a" * n for n in (1, 7, 300, 70_000)]
    stream = (frames.encode_control(frames.READY, (frames.CONTENT_TYPE,))
              + frames.encode_control(frames.START, (frames.CONTENT_TYPE,))
              + b"".join(frames.encode_data(p) for p in payloads)
              + frames.encode_control(frames.STOP))
    for step in (1, 3, 4096, len(stream)):
        r = frames.FrameReader()
        out = [f for i in range(0, len(stream), step) for f in r.feed(stream[i:i + step])]
        ctl = [f.kind for f in out if isinstance(f, frames.Control)]
        assert ctl == [frames.READY, frames.START, frames.STOP]
        assert [f for f in out if isinstance(f, bytes)] == payloads
        assert out[0].content_types == [frames.CONTENT_TYPE]
        assert r.pending == 0


def test_oversized_and_malformed_frames_are_errors() -> None:
    with pytest.raises(frames.FrameError, match="data frame of"):
        list(frames.FrameReader(max_data=100).feed(frames.encode_data(b"x" * 101)))
    with pytest.raises(frames.FrameError, match="control frame of"):
        list(frames.FrameReader().feed(b"\0\0\0\0\0\0\x10\0"))
    with pytest.raises(frames.FrameError, match="runs past"):
        list(frames.FrameReader().feed(b"\0\0\0\0\0\0\0\x0c\0\0\0\x04\0\0\0\x01\0\0\0\x09"))


@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_handshake_accept_then_finish(tmp_path: Path, kind: str, send) -> None:
    got: list[bytes] = []
    ep = Endpoint.parse(f"unix:{tmp_path}/t.sock" if kind == "unix" else "tcp:127.0.0.1:0")
    lst = TapListener(ep, lambda f, conn: got.append(f))
    await lst.start()
    try:
        if kind == "unix":  # not world-writable: a connection can claim any client address
            assert stat.S_IMODE(os.stat(ep.path).st_mode) == 0o660
        addr = ep.path if kind == "unix" else ("127.0.0.1", lst.endpoint.port)
        reply = await send(addr, [b"one", b"two"])
        r = frames.FrameReader()
        ctl = list(r.feed(reply))
        assert [c.kind for c in ctl] == [frames.ACCEPT, frames.FINISH]
        assert ctl[0].content_types == [frames.CONTENT_TYPE]
        assert got == [b"one", b"two"]
        # unidirectional senders (START first, no READY) are read too
        await send(addr, [b"three"], bidirectional=False)
        for _ in range(100):
            if len(got) == 3:
                break
            await asyncio.sleep(0.02)
        assert got[-1] == b"three"
    finally:
        await lst.stop()
    if kind == "unix":
        assert not Path(ep.path).exists()


async def test_several_senders_at_once(tmp_path: Path, send) -> None:
    got: list[tuple[bytes, str]] = []
    lst = TapListener(Endpoint.parse(f"unix:{tmp_path}/t.sock"),
                      lambda f, conn: got.append((f, conn.label)))
    await lst.start()
    try:
        await asyncio.gather(*(send(str(tmp_path / "t.sock"), [b"s%d-%d" % (s, i)
                                                             for i in range(200)], chunk=97)
                               for s in range(5)))
    finally:
        await lst.stop()
    assert len(got) == 1000
    assert len({label for _, label in got}) == 5
    for s in range(5):  # each sender's frames in its order
        mine = [f for f, _ in got if f.startswith(b"s%d-" % s)]
        assert mine == [b"s%d-%d" % (s, i) for i in range(200)]


async def test_wrong_content_type_and_garbage_close_only_that_connection(
        tmp_path: Path, send) -> None:
    path = str(tmp_path / "t.sock")
    got: list[bytes] = []
    lst = TapListener(Endpoint.parse(f"unix:{path}"), lambda f, conn: got.append(f))
    await lst.start()
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(frames.encode_control(frames.READY, (b"protobuf:other",)))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed, nothing accepted
        writer.close()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(frames.encode_data(b"data before any START"))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
        # the listener still serves the next sender
        await send(path, [b"fine"])
        assert got == [b"fine"]
        assert lst.status()["protocol_errors"] == 2
    finally:
        await lst.stop()


@pytest.mark.parametrize("bad", ["udp:1.2.3.4:5", "unix:", "tcp:127.0.0.1", "tcp:h:x", "x"])
def test_bad_listen_syntax_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        Endpoint.parse(bad)
