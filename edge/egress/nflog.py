"""Dropped (and would-be-dropped) connection attempts from the ruleset's ``log group N``:
an nfnetlink_log socket read on the event loop, each packet turned into (prefix, source,
destination, protocol, destination port).

Why NFLOG and not the kernel log or ``nft monitor``: kernel log lines are not emitted from
network namespaces other than the host's (``nf_log_all_netns``) and need parsing; ``nft
monitor trace`` needs ``meta nftrace`` on every packet. NFLOG is per namespace, carries the
rule's prefix and the packet's first bytes, and costs nothing when nobody drops.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4   # 1/100 s a packet may wait to be batched (kernel default: 1 s)
NFULA_CFG_QTHRESH = 5   # packets batched into one message at most
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
_PROTOS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}
COPY_BYTES = 64  # IP header + the ports
FLUSH_CS = 10    # an attempt is evented within 0.1 s
BATCH = 32


@dataclass(frozen=True, slots=True)
class Attempt:
    prefix: str
    src: str
    dst: str
    protocol: str
    port: int


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _config(group: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                       NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse_packet(payload: bytes) -> tuple[str, str, str, int] | None:
    """(src, dst, protocol, dport) of an IPv4/IPv6 packet's first bytes, or None."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = ipaddress.IPv4Address(payload[12:16]), ipaddress.IPv4Address(payload[16:20])
        l4 = payload[ihl:]
    elif version == 6 and len(payload) >= 40:
        proto = payload[6]
        src, dst = ipaddress.IPv6Address(payload[8:24]), ipaddress.IPv6Address(payload[24:40])
        l4 = payload[40:]
    else:
        return None
    port = struct.unpack_from("!H", l4, 2)[0] if proto in (6, 17, 132) and len(l4) >= 4 else 0
    return str(src), str(dst), _PROTOS.get(proto, str(proto)), port


def parse_messages(data: bytes) -> list[Attempt]:
    """Every NFULNL_MSG_PACKET in one netlink datagram."""
    out: list[Attempt] = []
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if mtype == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            prefix, payload = "", b""
            a = off + 16 + 4  # after nlmsghdr and nfgenmsg
            end = off + length
            while a + 4 <= end:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                value = data[a + 4:a + alen]
                akind &= 0x7FFF
                if akind == NFULA_PREFIX:
                    prefix = value.rstrip(b"\0").decode("ascii", "replace").strip()
                elif akind == NFULA_PAYLOAD:
                    payload = value
                a += (alen + 3) & ~3
            pkt = parse_packet(payload)
            if pkt is not None:
                out.append(Attempt(prefix, *pkt))
        off += (length + 3) & ~3
    return out


class NflogReader:
    """Binds NFLOG ``group`` in this network namespace; calls ``on_attempt`` per packet."""

    def __init__(self, group: int, on_attempt: Callable[[Attempt], None]) -> None:
        self.group = group
        self.on_attempt = on_attempt
        self.sock: socket.socket | None = None
        self.received = 0
        self.errors = 0

    def open(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            s.bind((0, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.send(_config(self.group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), 1))
            self._ack(s)
            mode = struct.pack("!IBB", COPY_BYTES, NFULNL_COPY_PACKET, 0)
            s.send(_config(self.group, _attr(NFULA_CFG_MODE, mode)
                           + _attr(NFULA_CFG_TIMEOUT, struct.pack("!I", FLUSH_CS))
                           + _attr(NFULA_CFG_QTHRESH, struct.pack("!I", BATCH)), 2))
            self._ack(s)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s

    @staticmethod
    def _ack(s: socket.socket) -> None:
        s.settimeout(2.0)
        data = s.recv(65536)
        if len(data) >= 20 and struct.unpack_from("=H", data, 4)[0] == NLMSG_ERROR:
            err = struct.unpack_from("=i", data, 16)[0]
            if err != 0:
                raise OSError(-err, f"NFLOG bind: {errno.errorcode.get(-err, err)}")

    def start(self) -> None:
        self.open()
        assert self.sock is not None
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self.sock is not None
        for _ in range(64):  # bounded per wake-up
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.errors += 1  # ENOBUFS: the kernel dropped some; keep reading
                return
            for attempt in parse_messages(data):
                self.received += 1
                self.on_attempt(attempt)

    def stop(self) -> None:
        if self.sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            except RuntimeError:
                pass
            self.sock.close()
            self.sock = None
