"""DNS wire format for the harness, the tests and the benchmarks: a plain A query built by hand
(a load generator spends nothing on dnspython per query) and the two-byte length framing of
DNS over TCP (RFC 1035 4.2.2), which every TCP client here must undo the same way."""

from __future__ import annotations

import struct


def a_query(name: str, qid: int) -> bytes:
    """An IN A query for ``name`` (recursion desired) with message ID ``qid``."""
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def tcp_frame(message: bytes) -> bytes:
    """One message as sent over TCP: its length, then the message."""
    return struct.pack("!H", len(message)) + message


def split_tcp_frames(buf: bytes) -> tuple[list[bytes], bytes]:
    """The complete messages at the start of ``buf`` (TCP framing removed), and what is left
    of ``buf`` after them: the start of a message still arriving."""
    out: list[bytes] = []
    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
        ln = struct.unpack("!H", buf[:2])[0]
        out.append(buf[2:2 + ln])
        buf = buf[2 + ln:]
    return out, buf
