"""recvmmsg/sendmmsg through ctypes: one system call per batch of datagrams, not per datagram.

Why: Python's ``socket`` module has no recvmmsg/sendmmsg, and on this kind of host the fixed
cost of a UDP system call (entry, exit, the Python wrapper, the exception for EAGAIN) is a
visible share of a ~10 µs cache hit; the per-datagram kernel work stays, the rest is paid
once per batch. Datagrams land in preallocated slots (no allocation per receive), answers
are sent from their own bytes (a memoised hit's ID straight from the receive slot, then its
stored tail: nothing is copied or concatenated), and a reply goes to the address the kernel
wrote for its query, so no address object is built for a hit.

Linux on 64-bit only (``available()``); the UDP listener falls back to recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import errno
import operator
import os
import socket
import struct
import sys
from typing import Any

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SLOT = 4096  # bytes per receive slot; a datagram filling it is taken as too long (dropped)
NAME = 32  # bytes per source-address slot (sockaddr_in6 is 28)
_ADDRS_MAX = 100_000  # decoded sender addresses kept
# where a bytes object's data starts (CPython: after the header; checked by available())
_BYTES_DATA = bytes.__basicsize__ - 1


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
    probe = b"dnsflow-mmsg-probe"
    if ctypes.string_at(id(probe) + _BYTES_DATA, len(probe)) != probe:
        return False  # answers are sent from their bytes objects' buffers, in place
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


Addr = tuple[Any, ...]  # a source address as ``socket.recvfrom`` gives it


class MsgBatch:
    """Up to ``n`` datagrams received with one ``recvmmsg`` and their answers sent with one
    ``sendmmsg``, through buffers allocated once and reused for every batch.

    The typed surface (no offsets, no ctypes outside this module): :meth:`recv` receives,
    :meth:`received` gives each datagram without its 2-byte ID and its sender (lists
    indexed by datagram), :meth:`datagram` one whole datagram, :meth:`sender_keys` the raw
    per-sender keys response rate limiting hashes, :meth:`send` sends answers to the
    senders of the datagrams they answer, and :meth:`reply` rebuilds one answer as bytes.

    Answers are not copied: each message's two iovecs point at the datagram's ID in the
    receive buffer and at the answer's bytes (or at a whole answer), which the caller's
    list keeps alive until :meth:`send` returns.
    """

    def __init__(self, n: int = 64, family: int = socket.AF_INET) -> None:
        self.n = n
        self.ipv4 = family == socket.AF_INET
        namelen = 16 if self.ipv4 else 28  # sockaddr_in / sockaddr_in6
        self._namelen = namelen
        lib = _load()
        self._recvmmsg = lib.recvmmsg
        self._sendmmsg = lib.sendmmsg
        self._rbuf = ctypes.create_string_buffer(n * SLOT)
        self._names = ctypes.create_string_buffer(n * NAME)
        self._nmv = memoryview(self._names).cast("B")
        self._rmsgs = (_Mmsghdr * n)()
        riov = self._riov = (_Iovec * n)()
        rbase, nbase = ctypes.addressof(self._rbuf), ctypes.addressof(self._names)
        for i in range(n):
            riov[i].base = rbase + i * SLOT
            riov[i].len = SLOT
            h = self._rmsgs[i].hdr
            h.name = nbase + i * NAME
            h.namelen = NAME
            h.iov = ctypes.addressof(riov[i])
            h.iovlen = 1
        # plain integer views over the headers: reading/writing one field is one index
        self._r32 = (ctypes.c_uint32 * (16 * n)).from_buffer(self._rmsgs)
        # answer k: iovec 2k = the ID of datagram k (in the receive buffer), 2k+1 = the rest
        self._smsgs = (_Mmsghdr * n)()
        siov = self._siov = (_Iovec * (2 * n))()
        for k in range(n):
            h = self._smsgs[k].hdr
            h.iov = ctypes.addressof(siov[2 * k])
            h.iovlen = 2
            h.name = nbase + k * NAME  # to the sender of datagram k unless send() re-points
            h.namelen = namelen
        self._s64 = (ctypes.c_uint64 * (8 * n)).from_buffer(self._smsgs)
        self._siov64 = (ctypes.c_uint64 * (4 * n)).from_buffer(self._siov)
        self._n64 = (ctypes.c_uint64 * (n * NAME // 8)).from_buffer(self._names)
        self._name_ptr = [nbase + i * NAME for i in range(n)]
        self._id_ptr = [rbase + i * SLOT for i in range(n)]
        self._restore_ids()
        self._offs = [i * SLOT for i in range(n)]
        self._starts = [i * SLOT + 2 for i in range(n)]
        self._noffs = [i * NAME for i in range(n)]
        self._addrs: dict[Any, Addr] = {}  # raw sender -> address tuple, decoded once
        self._used = 0

    def _restore_ids(self) -> None:
        siov64, ids = self._siov64, self._id_ptr
        for k in range(self.n):
            siov64[4 * k] = ids[k]
            siov64[4 * k + 1] = 2

    def recv(self, fd: int) -> int:
        """Receive the datagrams now waiting (up to ``n``) without blocking; how many (0:
        none). Errors other than EAGAIN/EINTR raise OSError."""
        r32 = self._r32
        for i in range(self._used):  # the kernel shrank namelen to the address it wrote
            r32[16 * i + 2] = NAME
        got = self._recvmmsg(fd, self._rmsgs, self.n, MSG_DONTWAIT, None)
        if got < 0:
            self._used = 0
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        self._used = got
        return got

    def received(self, count: int) -> tuple[list[bytes | None], list[Addr]]:
        """For datagrams 0..count-1 of the last :meth:`recv`: each without its first two
        bytes (the DNS ID; None for a datagram that filled its slot: longer than any DNS
        query, to be dropped), and its sender."""
        lens = self._r32[14:16 * count:16]  # every msg_len in one slice
        # C-level loops: slicing the ctypes buffer gives bytes in one step
        rest: list[bytes | None] = list(map(self._rbuf.__getitem__, map(
            slice, self._starts[:count], map(operator.add, self._offs[:count], lens))))
        if max(lens) >= SLOT:
            for i, ln in enumerate(lens):
                if ln >= SLOT:
                    rest[i] = None
        keys = self.sender_keys(count)
        senders = list(map(self._addrs.get, keys))
        if None in senders:
            for i, a in enumerate(senders):
                if a is None:
                    senders[i] = self._decode(i, keys[i])
        return rest, senders

    def sender_keys(self, count: int) -> list[Any]:
        """One hashable per datagram, equal for equal senders: for IPv4 the first 8 bytes of
        the sockaddr_in as a little-endian integer (``rrl.key_v4`` takes it), for IPv6 the
        raw sockaddr_in6 (``rrl.key_v6``)."""
        if self.ipv4:
            return self._n64[0:4 * count:4]
        names = self._names
        return [names[o:o + 28] for o in self._noffs[:count]]

    def _decode(self, i: int, key: Any) -> Addr:
        o = i * NAME
        addr = decode_name(bytes(self._nmv[o:o + self._namelen]))
        if len(self._addrs) >= _ADDRS_MAX:
            self._addrs.clear()
        self._addrs[key] = addr
        return addr

    def datagram(self, i: int) -> bytes:
        """Datagram ``i`` of the last :meth:`recv`, whole."""
        o = i * SLOT
        return self._rbuf[o:o + min(self._r32[16 * i + 14], SLOT)]

    def reply(self, to: int, data: bytes) -> bytes:
        """One answer of a :meth:`send` list as the bytes that go out."""
        return data if to >= 0 else self.datagram(~to)[:2] + data

    def send(self, fd: int, to: list[int], replies: list[bytes]) -> int:
        """Send ``replies[k]`` to the sender of datagram ``to[k]`` of the last :meth:`recv`,
        all in one call. ``to[k]`` is ``i`` when the reply is a whole answer, ``~i`` when it
        is the answer after its ID (a memoised hit): datagram i's own ID goes first.
        Returns how many the kernel took, from the first (0: none now). Errors other than
        EAGAIN/EINTR raise OSError (one bad destination fails the whole call: send them one
        by one to find it)."""
        siov64, s64 = self._siov64, self._s64
        ids, names = self._id_ptr, self._name_ptr
        moved = False
        k = 0
        for i, r in zip(to, replies, strict=True):
            a = 4 * k
            if i < 0:  # ID from the datagram, then r
                i = ~i
                if i != k:
                    siov64[a] = ids[i]
                    s64[8 * k] = names[i]
                    moved = True
                siov64[a + 2] = id(r) + _BYTES_DATA
                siov64[a + 3] = len(r)
            else:  # r whole in the first iovec, nothing in the second
                siov64[a] = id(r) + _BYTES_DATA
                siov64[a + 1] = len(r)
                siov64[a + 3] = 0
                if i != k:
                    s64[8 * k] = names[i]
                moved = True
            k += 1
        got = self._sendmmsg(fd, self._smsgs, k, MSG_DONTWAIT)
        if moved:  # back to: answer k = ID of datagram k, to the sender of datagram k
            for j in range(k):
                siov64[4 * j] = ids[j]
                siov64[4 * j + 1] = 2
                s64[8 * j] = names[j]
        if got < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return got
