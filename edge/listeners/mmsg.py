"""recvmmsg/sendmmsg through ctypes: one system call per batch of datagrams, not per datagram.

Why: Python's ``socket`` module has no recvmmsg/sendmmsg, and on this kind of host the fixed
cost of a UDP system call (entry, exit, the Python wrapper, the exception for EAGAIN) is a
visible share of a ~10 µs cache hit; the per-datagram kernel work stays, the rest is paid
once per batch. Datagrams land in preallocated slots (no allocation per receive), answers
are copied into preallocated send slots, and a reply goes to the address the kernel wrote
for its query, so no address object is built for a hit.

Linux on 64-bit only (``available()``); the UDP listener falls back to recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Any

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SLOT = 4096  # bytes per receive slot; a datagram filling it is taken as too long (dropped)
OUT_SLOT = 4096  # bytes per answer slot; longer answers go out with a plain sendto
NAME = 32  # bytes per source-address slot (sockaddr_in6 is 28)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_libc: Any = None


def _load() -> Any:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        for fn in (lib.recvmmsg, lib.sendmmsg):
            fn.restype = ctypes.c_int
        lib.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_void_p]
        lib.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        _libc = lib
    return _libc


def available() -> bool:
    """True where the layout below is right (Linux, 64-bit) and libc has both calls."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    if ctypes.sizeof(_Mmsghdr) != 64:
        return False
    try:
        _load()
    except (OSError, AttributeError):
        return False
    return True


def decode_name(raw: bytes) -> tuple[Any, ...]:
    """A sockaddr as the tuple ``socket.recvfrom`` would give."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flow, = struct.unpack("!I", raw[4:8])
    scope = int.from_bytes(raw[24:28], sys.byteorder)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope


class MsgBatch:
    """Receive and send slots for up to ``n`` datagrams, reused for every batch."""

    def __init__(self, n: int = 64, namelen: int = 16) -> None:
        self.n = n
        self.namelen = namelen  # of the socket's family: 16 (IPv4) or 28 (IPv6)
        lib = _load()
        self._recvmmsg = lib.recvmmsg
        self._sendmmsg = lib.sendmmsg
        self.rbuf = ctypes.create_string_buffer(n * SLOT)
        self.rmv = memoryview(self.rbuf).cast("B")
        self.names = ctypes.create_string_buffer(n * NAME)
        self.nmv = memoryview(self.names).cast("B")
        self.rmsgs = (_Mmsghdr * n)()
        riov = self.riov = (_Iovec * n)()
        rbase, nbase = ctypes.addressof(self.rbuf), ctypes.addressof(self.names)
        self.nbase = nbase
        for i in range(n):
            riov[i].base = rbase + i * SLOT
            riov[i].len = SLOT
            h = self.rmsgs[i].hdr
            h.name = nbase + i * NAME
            h.namelen = NAME
            h.iov = ctypes.addressof(riov[i])
            h.iovlen = 1
        # plain integer views over the headers: reading/writing one field is one index
        self.r32 = (ctypes.c_uint32 * (16 * n)).from_buffer(self.rmsgs)
        self.sbuf = ctypes.create_string_buffer(n * OUT_SLOT)
        self.smv = memoryview(self.sbuf).cast("B")
        self.smsgs = (_Mmsghdr * n)()
        siov = self.siov = (_Iovec * n)()
        sbase = ctypes.addressof(self.sbuf)
        for i in range(n):
            siov[i].base = sbase + i * OUT_SLOT
            h = self.smsgs[i].hdr
            h.iov = ctypes.addressof(siov[i])
            h.iovlen = 1
            # answer slot i goes to the sender of datagram i unless the caller re-points it
            h.name = nbase + i * NAME
            h.namelen = namelen
        self.s64 = (ctypes.c_uint64 * (8 * n)).from_buffer(self.smsgs)
        self.s32 = (ctypes.c_uint32 * (16 * n)).from_buffer(self.smsgs)
        self.siov64 = (ctypes.c_uint64 * (2 * n)).from_buffer(self.siov)
        self.n64 = (ctypes.c_uint64 * (n * NAME // 8)).from_buffer(self.names)
        self._used = 0

    def recv(self, fd: int) -> int:
        """Datagrams now waiting (0..n) without blocking; -1 with ctypes errno on error."""
        r32 = self.r32
        for i in range(self._used):  # the kernel shrank namelen to the address it wrote
            r32[16 * i + 2] = NAME
        got = self._recvmmsg(fd, self.rmsgs, self.n, MSG_DONTWAIT, None)
        self._used = max(got, 0)
        return got

    def restore_names(self, count: int) -> None:
        """Point answer slots 0..count-1 back at datagram slots 0..count-1."""
        s64, nbase = self.s64, self.nbase
        for k in range(count):
            s64[8 * k] = nbase + k * NAME

    def send(self, fd: int, count: int) -> int:
        """Send slots 0..count-1 (filled by the caller); how many the kernel took, or -1."""
        return self._sendmmsg(fd, self.smsgs, count, MSG_DONTWAIT)
