"""Fuzz the edge's listeners: structured and mutated DNS packets over UDP and TCP, and DoH
requests over HTTP/2 and HTTP/1.1; every reply must parse and answer the query that caused
it, the edge must not crash, and its memory must stay bounded.

    python -m bench.edge_fuzz [--packets 100000] [--doh 10000] [--seconds 600] [--seed 1]

Starts an edge in-process (its own event loop in a thread, the in-memory bus) with the
in-process authoritative server of ``edge.testing`` as its upstream. Structured queries are
drawn with hypothesis (names, types, classes, header bits, EDNS size/version/flags/options,
odd section counts); the bulk are random byte mutations of those (flips, cuts, insertions,
duplicated spans, compression pointers, count fields) plus raw random bytes. UDP keeps a
window of sockets each with one packet outstanding; TCP sends 1-16 framed packets per
connection from a few threads; DoH mixes GET and POST, valid and mutated, over one HTTP/2
client and one HTTP/1.1 client (httpx).

Counted: ``malformed`` = a reply that dnspython cannot parse, without QR, or whose ID is not
the query's (a 200 DoH reply likewise; a DoH 5xx also counts); ``crashes`` = an exception
logged by the edge (ERROR with a traceback, asyncio's "Fatal error"/"Exception in callback"),
a listener error counter moving, or the edge no longer answering; ``unanswered`` = a query
(QR=0, >= 12 bytes) that got no reply within the timeout (reported, not a failure: the
edge drops packets it cannot answer safely). RSS of this process (edge + clients) at start
(after warm-up), end and peak. Prints last:
``bench edge_fuzz: udp_packets=.. tcp_packets=.. doh_requests=.. crashes=0 malformed=0 ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import random
import resource
import selectors
import socket
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from harness.dnswire import split_tcp_frames, tcp_frame

ZONE = [
    "example.com. 60 IN A 192.0.2.1",
    "www.example.com. 60 IN CNAME example.com.",
    "example.com. 60 IN AAAA 2001:db8::1",
    "_sip._udp.example.com. 60 IN SRV 0 5 5060 sip.example.com.",
    "web.shop.svc.cluster.local. 300 IN A 10.96.1.10",
    *[f'big.example.com. 60 IN TXT "{"x" * 200}-{i}"' for i in range(8)],
]
SEEDS = [
    dns.message.make_query("example.com", "A").to_wire(),
    dns.message.make_query("WWW.Example.COM.", "AAAA", use_edns=0, payload=4096).to_wire(),
    dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=65535).to_wire(),
    dns.message.make_query("_sip._udp.example.com", "SRV", want_dnssec=True).to_wire(),
    dns.message.make_query("1.0.0.127.in-addr.arpa", "PTR").to_wire(),
    dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire(),
]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- packets ----------------------------------------------------------------------------

def structured_packets(n: int, seed: int) -> list[bytes]:
    """``n`` (about) structured queries drawn by hypothesis."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    label = st.one_of(st.sampled_from(["example", "com", "www", "big", "shop", "svc",
                                       "cluster", "local", "in-addr", "arpa", "xn--bcher-kva",
                                       "_tcp", "*"]),
                      st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1,
                              max_size=63),
                      st.binary(min_size=1, max_size=63))
    names = st.lists(label, min_size=0, max_size=12)
    rdtype = st.one_of(st.sampled_from([1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 43, 46, 48, 64,
                                        65, 99, 251, 252, 255, 256, 65535]),
                       st.integers(0, 65535))
    option = st.one_of(
        st.builds(lambda d: dns.edns.GenericOption(10, d), st.binary(min_size=8, max_size=40)),
        st.builds(lambda d: dns.edns.GenericOption(8, d), st.binary(max_size=20)),
        st.builds(lambda c, d: dns.edns.GenericOption(c, d), st.integers(0, 65535),
                  st.binary(max_size=30)))
    out: list[bytes] = []

    def build(labels: list[Any], qtype: int, qclass: int, flags: int, opcode: int,
              edns: int | None, payload: int, ednsflags: int, options: list[Any],
              qid: int, tweak: tuple[int, int, int] | None) -> bytes | None:
        try:
            parts = [x if isinstance(x, bytes) else x.encode() for x in labels]
            name = dns.name.Name([*parts, b""])
            m = dns.message.make_query(name, qtype, qclass, use_edns=edns, payload=payload,
                                       ednsflags=ednsflags, options=options or None)
            m.id = qid
            m.flags = flags & 0x87B0 | (opcode << 11)
            wire = m.to_wire()
        except Exception:
            return None
        if tweak is not None:  # odd section counts over a valid body
            wire = wire[:4] + struct.pack("!HHH", *tweak)[:6] + wire[10:]
        return wire

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(names, rdtype, st.sampled_from([1, 1, 1, 3, 4, 254, 255, 2]),
           st.integers(0, 0xFFFF), st.sampled_from([0, 0, 0, 1, 2, 4, 5, 15]),
           st.sampled_from([None, 0, 0, 1]), st.sampled_from([0, 1, 512, 1232, 4096, 65535]),
           st.sampled_from([0, 0x8000, 0xFFFF]), st.lists(option, max_size=3),
           st.integers(0, 0xFFFF),
           st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 3),
                                          st.integers(0, 3))))
    def collect(labels: Any, qtype: Any, qclass: Any, flags: Any, opcode: Any, edns: Any,
                payload: Any, ednsflags: Any, options: Any, qid: Any, tweak: Any) -> None:
        w = build(labels, qtype, qclass, flags, opcode, edns, payload, ednsflags, options,
                  qid, tweak)
        if w is not None:
            out.append(w)

    random.seed(seed)
    collect()
    return out


class Mutator:
    def __init__(self, pool: list[bytes], seed: int) -> None:
        self.pool = pool + SEEDS
        self.r = random.Random(seed)

    def __call__(self) -> bytes:
        r = self.r
        k = r.random()
        if k < 0.3:
            return r.choice(self.pool)
        if k < 0.4:
            return r.randbytes(r.randrange(0, 600))
        b = bytearray(r.choice(self.pool))
        for _ in range(r.randrange(1, 6)):
            op = r.randrange(8)
            if not b:
                b = bytearray(r.randbytes(12))
            pos = r.randrange(len(b))
            if op == 0:
                b[pos] = r.randrange(256)
            elif op == 1:
                b[pos] ^= 1 << r.randrange(8)
            elif op == 2:
                del b[pos:pos + r.randrange(1, 16)]
            elif op == 3:
                b[pos:pos] = r.randbytes(r.randrange(1, 16))
            elif op == 4:  # a compression pointer anywhere
                b[pos:pos + 2] = struct.pack("!H", 0xC000 | r.randrange(0, max(1, len(b))))
            elif op == 5 and len(b) >= 12:  # section counts
                i = 4 + 2 * r.randrange(4)
                b[i:i + 2] = struct.pack("!H", r.choice([0, 1, 2, 255, 0xFFFF]))
            elif op == 6:
                span = bytes(b[pos:pos + r.randrange(1, 32)])
                b[pos:pos] = span * r.randrange(1, 4)
            else:
                del b[r.randrange(len(b)):]
        if r.random() < 0.5 and len(b) >= 3:
            b[2] &= 0x7F  # mostly queries (QR=0), so a reply is expected
        return bytes(b[:4000])


def expects_reply(pkt: bytes) -> bool:
    return len(pkt) >= 12 and not pkt[2] & 0x80


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.malformed = 0
        self.unanswered = 0
        self.samples: list[str] = []

    def bad(self, what: str, pkt: bytes, reply: bytes | None) -> None:
        with self.lock:
            self.malformed += 1
            if len(self.samples) < 5:
                self.samples.append(f"{what}: query={pkt[:80].hex()} "
                                    f"reply={(reply or b'')[:80].hex()}")

    def check(self, pkt: bytes, reply: bytes) -> None:
        try:
            msg = dns.message.from_wire(reply, ignore_trailing=False)
        except Exception as exc:
            self.bad(f"unparsable ({type(exc).__name__}: {exc})", pkt, reply)
            return
        if not msg.flags & dns.flags.QR:
            self.bad("no QR", pkt, reply)
        elif reply[:2] != pkt[:2]:
            self.bad("wrong ID", pkt, reply)


# -- the edge ---------------------------------------------------------------------------

class CrashLog(logging.Handler):
    """Counts what a crash looks like in the logs: tracebacks, asyncio fatal errors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.exc_info or "Fatal error" in msg or "Exception in callback" in msg:
            self.count += 1
            if len(self.samples) < 5:
                self.samples.append(f"{record.name}: {msg[:200]}"
                                    + (f" [{record.exc_info[1]!r}]" if record.exc_info
                                       else ""))


class Edge:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.svc: Any = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       daemon=True)

    async def _main(self) -> None:
        from dnsflow.bus.memory import MemoryBus
        from dnsflow.edge.service import build
        from dnsflow.settings import Settings
        from dnsflow.topics import Topics
        from harness.fake_upstream import FakeUpstream

        up = FakeUpstream(ZONE, soa_zone="example.com")
        await up.start()
        self.svc = build(Settings(home=self.home, topic_prefix="t."), MemoryBus(Topics("t.")),
                         listen="127.0.0.1:0", doh_listen="127.0.0.1:0",
                         upstreams=[up.address], upstream_timeout=0.5, name="fuzz",
                         cache_size=20_000)[0]
        await self.svc.start()
        self.stop_ev = asyncio.Event()
        self.ready.set()
        await self.stop_ev.wait()
        await self.svc.stop()
        await up.stop()

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the edge did not start")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_ev.set)
        self.thread.join(20)

    def errors(self) -> int:
        st = self.svc.status()
        return sum(u.get("errors", 0) for u in st["udp_listeners"])


# -- transports ---------------------------------------------------------------------------

def run_udp(port: int, gen: Mutator, n: int, until: float, tally: Tally,
            window: int = 48, timeout: float = 1.0) -> int:
    sel = selectors.DefaultSelector()
    free = []
    for _ in range(window):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        free.append(s)
    busy: dict[socket.socket, tuple[bytes, float]] = {}
    sent = 0
    try:
        while (sent < n or busy) and time.monotonic() < until + timeout:
            while free and sent < n and time.monotonic() < until:
                s = free.pop()
                pkt = gen()
                with contextlib.suppress(OSError):
                    s.send(pkt)
                sent += 1
                wait = timeout if expects_reply(pkt) else 0.05
                busy[s] = (pkt, time.monotonic() + wait)
                sel.register(s, selectors.EVENT_READ)
            for key, _ in sel.select(0.02):
                s = key.fileobj
                try:
                    reply = s.recv(65535)
                except OSError:
                    continue
                pkt, _ = busy.pop(s)
                sel.unregister(s)
                free.append(s)
                if not expects_reply(pkt):
                    tally.bad("reply to a packet that is not a query", pkt, reply)
                else:
                    tally.check(pkt, reply)
            now = time.monotonic()
            for s, (pkt, due) in list(busy.items()):
                if now >= due:
                    del busy[s]
                    sel.unregister(s)
                    if expects_reply(pkt):
                        tally.unanswered += 1
                    # a fresh socket: a late reply must not be taken for the next packet's
                    s.close()
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.setblocking(False)
                    s.connect(("127.0.0.1", port))
                    free.append(s)
            if time.monotonic() >= until and not busy:
                break
    finally:
        for s in free + list(busy):
            s.close()
    return sent


def tcp_conn(port: int, pkts: list[bytes], tally: Tally) -> None:
    want = [p for p in pkts if expects_reply(p)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"".join(tcp_frame(p) for p in pkts))
            buf = b""
            pending = {}
            for p in want:
                pending.setdefault(p[:2], []).append(p)
            got = 0
            while got < len(want):
                chunk = s.recv(65535)
                if not chunk:
                    break
                replies, buf = split_tcp_frames(buf + chunk)
                for reply in replies:
                    got += 1
                    same = pending.get(reply[:2])
                    if not same:
                        tally.bad("TCP reply with an ID no query had", b"", reply)
                        continue
                    tally.check(same.pop(), reply)
            tally.unanswered += len(want) - got
    except TimeoutError:
        with tally.lock:
            tally.unanswered += 1
    except OSError:
        pass  # the edge closed a connection it could not frame: allowed


def run_tcp(port: int, gen: Mutator, n: int, until: float, tally: Tally) -> int:
    sent = 0
    batches = []
    while sent < n:
        k = min(n - sent, gen.r.randrange(1, 17))
        batches.append([gen() for _ in range(k)])
        sent += k
    done = 0
    with ThreadPoolExecutor(4) as ex:
        futs = []
        for b in batches:
            futs.append((len(b), ex.submit(
                lambda b=b: None if time.monotonic() > until else tcp_conn(port, b, tally))))
        for k, f in futs:
            f.result()
            done += k
    return min(done, sent)


async def run_doh(port: int, gen: Mutator, n: int, until: float, tally: Tally,
                  ctx: Any) -> tuple[int, int]:
    import httpx

    url = f"https://localhost:{port}/dns-query"
    errors = 0
    done = 0
    async with httpx.AsyncClient(http2=True, verify=ctx, timeout=5) as h2c, \
            httpx.AsyncClient(http2=False, verify=ctx, timeout=5) as h1c:

        async def one(i: int) -> None:
            nonlocal errors
            pkt = gen()
            client = h2c if i % 3 else h1c
            r = gen.r.random()
            try:
                if r < 0.45:
                    b64 = base64.urlsafe_b64encode(pkt).rstrip(b"=").decode()
                    resp = await client.get(url, params={"dns": b64})
                elif r < 0.9:
                    resp = await client.post(url, content=pkt,
                                             headers={"content-type": "application/dns-message"})
                elif r < 0.95:
                    resp = await client.get(url, params={"dns": "!!" + pkt.hex()})
                else:
                    resp = await client.post(url, content=pkt,
                                             headers={"content-type": "text/plain"})
            except httpx.HTTPError:
                errors += 1
                return
            if resp.status_code >= 500:
                tally.bad(f"DoH {resp.status_code}", pkt, resp.content)
            elif resp.status_code == 200:
                if not expects_reply(pkt):
                    tally.check(pkt, resp.content)  # still must parse
                else:
                    tally.check(pkt, resp.content)

        i = 0
        while i < n and time.monotonic() < until:
            batch = min(64, n - i)
            await asyncio.gather(*[one(i + k) for k in range(batch)])
            i += batch
            done = i
    return done, errors


# -- main ---------------------------------------------------------------------------------

def run(packets: int = 100_000, doh: int = 10_000, seconds: float = 600.0, seed: int = 1,
        quiet: bool = False) -> dict[str, Any]:
    t_start = time.monotonic()
    until = t_start + seconds
    crash = CrashLog()
    logging.getLogger().addHandler(crash)
    say = (lambda m: None) if quiet else (
        lambda m: print(f"[edge_fuzz] {m}", file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="edge-fuzz-") as tmp:
        edge = Edge(Path(tmp))
        edge.start()
        try:
            st = edge.svc.status()
            import ssl

            ctx = ssl.create_default_context(cafile=str(edge.svc.tls_cert_path))
            ctx.check_hostname = False
            pool = structured_packets(min(5000, max(200, packets // 20)), seed)
            say(f"{len(pool)} structured queries from hypothesis")
            gen = Mutator(pool, seed)
            tally = Tally()
            # warm-up, then the RSS baseline
            run_udp(st["udp_port"], Mutator(SEEDS, seed), 200, until, Tally())
            rss_start = rss_mb()
            n_udp = int(packets * 0.7)
            n_tcp = packets - n_udp
            t0 = time.monotonic()
            udp_sent = run_udp(st["udp_port"], gen, n_udp, until, tally)
            say(f"udp: {udp_sent} packets in {time.monotonic() - t0:.1f}s, "
                f"rss {rss_mb():.0f} MB")
            t0 = time.monotonic()
            tcp_sent = run_tcp(st["tcp_port"], gen, n_tcp, until, tally)
            say(f"tcp: {tcp_sent} packets in {time.monotonic() - t0:.1f}s, "
                f"rss {rss_mb():.0f} MB")
            t0 = time.monotonic()
            doh_done, doh_errors = asyncio.run(run_doh(st["doh_port"], gen, doh, until, tally,
                                                       ctx))
            say(f"doh: {doh_done} requests in {time.monotonic() - t0:.1f}s "
                f"(client-side HTTP errors {doh_errors}), rss {rss_mb():.0f} MB")
            # still alive and answering?
            alive = run_udp(st["udp_port"], Mutator([SEEDS[0]], seed), 1,
                            time.monotonic() + 3, probe := Tally())
            dead = alive != 1 or probe.unanswered or probe.malformed
            crashes = crash.count + edge.errors() + (1 if dead else 0)
            rss_end = rss_mb()
            out = {"udp_packets": udp_sent, "tcp_packets": tcp_sent, "doh_requests": doh_done,
                   "crashes": crashes, "malformed": tally.malformed,
                   "unanswered": tally.unanswered, "doh_client_errors": doh_errors,
                   "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_end, 1),
                   "rss_mb_peak": round(peak_mb(), 1),
                   "seconds": round(time.monotonic() - t_start, 1),
                   "samples": tally.samples + crash.samples}
        finally:
            edge.stop()
            logging.getLogger().removeHandler(crash)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=100_000, help="UDP+TCP packets (70/30)")
    ap.add_argument("--doh", type=int, default=10_000, help="DoH requests")
    ap.add_argument("--seconds", type=float, default=600.0, help="time bound for the run")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = run(a.packets, a.doh, a.seconds, a.seed)
    for s in out.pop("samples"):
        print(f"[edge_fuzz] sample: {s}", file=sys.stderr)
    print("bench edge_fuzz: " + " ".join(f"{k}={v}" for k, v in out.items()), flush=True)
    return 0 if out["crashes"] == 0 and out["malformed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
