"""dnsflow tap against fstrm_capture, reading the same unbound+dnstap stream (issue #14).

Run: ``python -m bench.tap [--kafka BOOTSTRAP] [--seconds 10] [--live-qps 20000]`` (default:
a private Kafka from ``scripts/kafka-local``, stopped at the end), or ``python -m bench.tap
--decode-only`` for the decoding micro-benchmarks behind the library choice (no servers),
``--inproc`` for the tap's whole path in this process (CPU µs per event, see :func:`inproc`)
and ``--callgrind`` for its instructions per event under valgrind (shared cores make time
noisy; instruction counts are not).

On 2 cores (server core, load core):

1. unbound with dnstap (server core) logs every client query and response to
   ``fstrm_capture`` (load core); dnsperf (load core) asks as fast as unbound answers:
   ``unbound_dnstap_qps``. The capture is unbound's own stream.
2. ``dnsflow tap --kafka`` alone on the server core reads that stream (``fstrm_replay`` from
   the load core, the broker there too), pairs it and publishes to Kafka:
   ``events_per_s`` = events published per second of the tap's CPU time (one core),
   ``ratio`` = events_per_s / unbound_dnstap_qps (target >= 1.0), ``lost`` = queries unbound
   answered in phase 1 minus events in Kafka.

   1 and 2 run ``--rounds`` times (default 3), each round's ratio from its own pair of
   figures; the last line gives the median round (``ratio``, its ``events_per_s``, ...),
   ``ratio_min``/``ratio_max`` over the rounds, and ``lost`` summed over all of them.
3. live: unbound+dnstap (server core) sends to ``dnsflow tap`` (load core, beside dnsperf and
   the broker) while dnsperf asks at ``--live-qps``: ``live_lost`` = answered - events. A
   dnstap sender drops frames in its own queue when the reader is slow (unbound never blocks
   on dnstap and reports no count), so this is the loss as a user would see it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.edge_qps import DNSPERF_FLAGS, cpus, dnsperf
from harness.peers import (
    FstrmCapture,
    Unbound,
    count_events,
    cpu_split,
    kafka_or_private,
    stop_process,
    wait_for_path,
)
from harness.workdir import add_keep_option, finish_work_dir, make_work_dir

TENANT_MAP = "clients:\n  - {cidr: 127.0.0.0/8, tenant: bench, namespace: bench-ns}\n"


def log(msg: str) -> None:
    print(f"[tap] {msg}", file=sys.stderr, flush=True)


def start_tap(work: Path, bootstrap: str, prefix: str, cpu: str) -> tuple[subprocess.Popen,
                                                                          Path, Path]:
    sock = work / "tap.sock"
    tmap = work / "tenants.yaml"
    tmap.write_text(TENANT_MAP)
    out = work / "tap.log"
    cmd = ["taskset", "-c", cpu, sys.executable, "-m", "dnsflow", "tap", "--listen",
           f"unix:{sock}", "--kafka", bootstrap, "--topic-prefix", prefix, "--home",
           str(work / "tap-home"), "--tenant-map", str(tmap), "--name", "bench-tap",
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=open(out, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)
    wait_for_path(sock, proc, out, 30, "dnsflow tap")
    return proc, sock, out


def count_frames(path: Path) -> int:
    """Data frames in a Frame Streams capture file (fstrm_capture's output)."""
    from dnsflow.edge.tap.frames import FrameReader

    reader, n = FrameReader(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += sum(1 for fr in reader.feed(chunk) if type(fr) is bytes)
    return n


def tap_phase(work: Path, bootstrap: str, prefix: str, cpu: str) -> tuple[subprocess.Popen,
                                                                          Path, Path]:
    w = work / prefix.rstrip(".")
    w.mkdir()
    return start_tap(w, bootstrap, prefix, cpu)


def stop_tap(tap: subprocess.Popen, tap_log: Path) -> str:
    tap.send_signal(signal.SIGTERM)
    stop_process(tap, 120)
    lines = tap_log.read_text().strip().splitlines() if tap_log.exists() else []
    return lines[-1] if lines else "no tap log"


def capture_round(args: argparse.Namespace, work: Path, local: list[str], datafile: Path,
                  server_cpu: str, load_cpu: str) -> tuple[float, float, Path]:
    """Phase 1: unbound+dnstap into fstrm_capture under dnsperf; (qps, answered, capture)."""
    cap = FstrmCapture(work, cpu=int(load_cpu)).start()
    ub = Unbound(local, workdir=work / "ub-capture", cpu=int(server_cpu),
                 dnstap_socket=cap.socket).start()
    answered = 1.0  # the readiness probe
    try:
        answered += dnsperf(ub.port, datafile, 2, load_cpu)["completed"]  # warm
        r = dnsperf(ub.port, datafile, args.seconds, load_cpu)
        answered += r["completed"]
        time.sleep(1.5)  # unbound's dnstap thread flushes
    finally:
        ub.stop()
        cap.stop()
    log(f"1 unbound+dnstap -> fstrm_capture: {r['qps']:.0f} qps, {answered:.0f} answered, "
        f"{count_frames(cap.out)} frames captured ({cap.size()} bytes)")
    return r["qps"], answered, cap.out


def replay_round(args: argparse.Namespace, work: Path, bootstrap: str, prefix: str,
                 capture: Path, server_cpu: str, load_cpu: str) -> tuple[int, float, float]:
    """Phase 2: the capture replayed into ``dnsflow tap`` alone on the server core;
    (events in Kafka, the tap's CPU seconds, of which in the kernel)."""
    tap, sock, tap_log = tap_phase(work, bootstrap, prefix, server_cpu)
    try:
        (u0, k0), t0 = cpu_split(tap.pid), time.monotonic()
        subprocess.run(["taskset", "-c", load_cpu, "fstrm_replay", "-t",
                        "protobuf:dnstap.Dnstap", "-r", str(capture), "-u", str(sock)],
                       check=True, timeout=600, capture_output=True)
        time.sleep(args.pair_wait)  # the last queries paired or timed out
        u1, k1 = cpu_split(tap.pid)
        busy, kernel, wall = (u1 - u0) + (k1 - k0), k1 - k0, time.monotonic() - t0
    finally:
        summary = stop_tap(tap, tap_log)
    log(f"2 {summary}")
    events = asyncio.run(count_events(bootstrap, prefix + "events"))
    log(f"2 replay: {events} events in Kafka, tap cpu {busy:.2f}s in {wall:.1f}s "
        f"({busy * 1e6 / max(1, events):.1f} us/event)")
    return events, busy, kernel


def run(args: argparse.Namespace) -> dict[str, float]:
    server_cpu, load_cpu = cpus()
    work = make_work_dir("bench-tap-")
    names = [f"host{i}.bench.test" for i in range(args.names)]
    local = [f"{n}. 3600 IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
             for i, n in enumerate(names)]
    datafile = work / "queries.txt"
    datafile.write_text("".join(f"{n} A\n" for n in names))
    kafka = None
    res: dict[str, float] = {}
    try:
        bootstrap, kafka = kafka_or_private(args.kafka, work, load_cpu, log)
        run_id = uuid.uuid4().hex[:8]

        # 1 and 2, --rounds times back to back: each round's ratio compares two figures
        # taken a minute apart, and the median round is reported (a shared machine's speed
        # drifts by more than 10 % within minutes)
        rounds: list[dict[str, float]] = []
        lost = 0.0
        for i in range(args.rounds):
            rw = work / f"round{i}"
            rw.mkdir()
            qps, answered, capture = capture_round(args, rw, local, datafile, server_cpu,
                                                   load_cpu)
            events, busy, kernel = replay_round(args, rw, bootstrap, f"bench{run_id}r{i}.",
                                                capture, server_cpu, load_cpu)
            capture.unlink()  # ~300 MB each
            lost += max(0.0, answered - events)
            eps = events / busy if busy else 0.0
            rounds.append({"unbound_dnstap_qps": qps, "events_per_s": eps,
                           "ratio": eps / qps if qps else 0.0, "events": events,
                           "answered": answered,
                           "tap_cpu_us_per_event": busy * 1e6 / events if events else 0.0,
                           # the kernel's share (reading the sender's stream: one socket
                           # buffer per frame the sender wrote), which no reader code removes
                           "tap_sys_us_per_event": kernel * 1e6 / events if events else 0.0})
            log(f"round {i + 1}: ratio {rounds[-1]['ratio']:.2f} ({eps:.0f} events per tap "
                f"core-second, unbound+dnstap {qps:.0f} qps), lost {answered - events:.0f}")
        ratios = sorted(r["ratio"] for r in rounds)
        res.update(sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2])
        res["ratio_min"], res["ratio_max"] = ratios[0], ratios[-1]
        res["lost"] = lost

        # 3: live, unbound+dnstap -> dnsflow tap (load core) at --live-qps
        prefix = f"bench{run_id}l."
        tap, sock, tap_log = tap_phase(work, bootstrap, prefix, load_cpu)
        ub = Unbound(local, workdir=work / "ub-live", cpu=int(server_cpu),
                     dnstap_socket=str(sock))
        try:
            ub.start()
            capped = ((*DNSPERF_FLAGS, "-Q", str(int(args.live_qps))) if args.live_qps
                      else DNSPERF_FLAGS)
            live = 1.0 + dnsperf(ub.port, datafile, args.seconds, load_cpu,
                                 capped)["completed"]
            time.sleep(args.pair_wait)
        finally:
            ub.stop()
            summary = stop_tap(tap, tap_log)
        log(f"3 {summary}")
        live_events = asyncio.run(count_events(bootstrap, prefix + "events"))
        res["live_qps"] = args.live_qps
        res["live_answered"] = live
        res["live_lost"] = max(0.0, live - live_events)
        log(f"3 live at {args.live_qps:.0f} qps: {live:.0f} answered, {live_events} events")
    finally:
        if kafka is not None:
            kafka.stop()
        finish_work_dir(work, args.keep, log)
    return res


def decode_only() -> None:
    """The measurements behind the library choice (edge/tap/decode.py, frames.py)."""
    import struct
    import timeit

    import dnslib
    from dnstap_pb import dnstap_pb2

    from dnsflow.edge import wire
    from dnsflow.edge.tap import decode as tapdecode
    from dnsflow.edge.tap.frames import FrameReader

    msgs = []
    for i in range(2000):
        q = dnslib.DNSRecord.question(f"host{i}.bench.test", "A")
        d = dnstap_pb2.Dnstap(identity=b"unbound-1", version=b"unbound 1.17.1", type=1)
        m = d.message
        m.type, m.socket_family, m.socket_protocol = (6 if i % 2 else 5), 1, 1
        m.query_address, m.response_address = bytes([127, 0, 0, 2]), bytes([127, 0, 0, 1])
        m.query_port, m.response_port = 40000 + i % 1000, 53
        m.query_time_sec, m.query_time_nsec = 1764800000, 123456
        if i % 2:
            r = q.reply()
            r.add_answer(*dnslib.RR.fromZone(f"host{i}.bench.test. 3600 IN A 10.0.0.{i % 256}"))
            m.response_message = bytes(r.pack())
            m.response_time_sec, m.response_time_nsec = 1764800000, 223456
        else:
            m.query_message = bytes(q.pack())
        msgs.append(d.SerializeToString())
    n = len(msgs)

    def per(fn, count: int) -> float:
        return min(timeit.repeat(fn, number=3, repeat=3)) / (3 * count) * 1e6

    def pb() -> None:
        for raw in msgs:
            m = dnstap_pb2.Dnstap.FromString(raw).message
            _ = (m.type, m.socket_protocol, m.query_address, m.query_port, m.query_time_sec,
                 m.query_time_nsec, m.response_time_sec, m.response_time_nsec,
                 m.query_message, m.response_message)

    def hand() -> None:  # the minimal alternative: a pure-Python protobuf walk
        for raw in msgs:
            _fields(_fields(raw)[14])

    print(f"dnstap-pb (protobuf upb) parse + fields: {per(pb, n):.2f} us/message")
    print(f"pure-Python protobuf decoder:            {per(hand, n):.2f} us/message")
    print(f"edge/tap decode() (dnstap + DNS):        "
          f"{per(lambda: [tapdecode.decode(x) for x in msgs], n):.2f} us/message")
    resp = [dnstap_pb2.Dnstap.FromString(x).message.response_message for x in msgs[1::2]]
    print(f"dnslib DNSRecord.parse (response):       "
          f"{per(lambda: [dnslib.DNSRecord.parse(x).rr for x in resp], len(resp)):.2f} us")
    print(f"edge wire.parse_response (response):     "
          f"{per(lambda: [wire.parse_response(x).answers for x in resp], len(resp)):.2f} us")
    stream = b"".join(struct.pack("!I", len(x)) + x for x in msgs) * 4
    for size in (65536, 262144):
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]

        def ours(chunks=chunks) -> None:
            r = FrameReader()
            for c in chunks:
                for _ in r.feed(c):
                    pass
        print(f"edge/tap FrameReader, {size // 1024} KiB reads:       "
              f"{per(ours, 4 * n):.2f} us/frame")
        try:
            import fstrm
        except ImportError:
            print("fstrm (PyPI) not installed: pip install fstrm to compare")
            continue

        def lib(chunks=chunks, fstrm=fstrm) -> None:
            c = fstrm.FstrmCodec()
            for x in chunks:
                c.append(x)
                while c.process():
                    c.decode()
        print(f"fstrm FstrmCodec, {size // 1024} KiB reads:           "
              f"{per(lib, 4 * n):.2f} us/frame")


def unbound_like_stream(pairs: int, names: int = 2000) -> bytes:
    """A Frame Streams data stream (no control frames) laid out as unbound 1.17 logs a
    dnsperf run: CLIENT_QUERY then CLIENT_RESPONSE per query, one A record per answer,
    ``names`` distinct names, 4 client ports, IDs counting up. Deterministic."""
    import struct

    from dnstap_pb import dnstap_pb2

    out = []
    t0 = 1_764_800_000_000_000
    for i in range(pairs):
        n = i % names
        qname = b"".join(bytes([len(p)]) + p for p in f"host{n}.bench.test".encode().split(b"."))
        question = qname + b"\x00\x00\x01\x00\x01"
        qid = i & 0xFFFF
        query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
        resp = (struct.pack("!HHHHHH", qid, 0x8580, 1, 1, 0, 0) + question
                + struct.pack("!HHHIH", 0xC00C, 1, 1, 3600, 4)
                + bytes([10, n // 65536 % 256, n // 256 % 256, n % 256]))
        for kind in (5, 6):
            d = dnstap_pb2.Dnstap(identity=b"vm", version=b"unbound 1.17.1", type=1)
            m = d.message
            m.type, m.socket_family, m.socket_protocol = kind, 1, 1
            m.query_address = m.response_address = bytes([127, 0, 0, 1])
            m.query_port, m.response_port = 40000 + i % 4, 53
            t = t0 + i * 8 + (kind - 5) * 150
            if kind == 5:
                m.query_time_sec, m.query_time_nsec = divmod(t, 1_000_000)
                m.query_time_nsec *= 1000
                m.query_message = query
            else:
                m.response_time_sec, m.response_time_nsec = divmod(t, 1_000_000)
                m.response_time_nsec *= 1000
                m.response_message = resp
            raw = d.SerializeToString()
            out.append(struct.pack("!I", len(raw)) + raw)
    return b"".join(out)


def inproc(args: argparse.Namespace) -> dict[str, float | int]:
    """The tap's whole path in this process, without sockets or Kafka: a Frame Streams
    stream (``--capture FILE`` from fstrm_capture, else :func:`unbound_like_stream`) fed
    ``--read-size`` bytes at a time to one ``Connection.data_received`` (what asyncio does
    per read), decoded, paired, built, queued in the publisher, and turned into librdkafka's
    ``produce_batch`` messages after every read (the publisher's pump) by the librdkafka
    publisher's own code; only ``produce_batch`` itself is left out. ``--repeat`` feeds the
    stream that many times (a second pass finds the memos warm, as a long run does)."""
    import tempfile

    from dnsflow.bus.memory import MemoryBus
    from dnsflow.edge.identity import load_static_map
    from dnsflow.edge.tap import frames as tapframes
    from dnsflow.edge.tap.service import build
    from dnsflow.edge.telemetry.publisher import EventPublisher
    from dnsflow.edge.telemetry.rdkafka import RdKafkaPublisher
    from dnsflow.edge.telemetry.spool import Spool
    from dnsflow.gctune import tune_for_batches
    from dnsflow.settings import Settings
    from harness.null_transport import NullTransport

    if args.capture:
        data = Path(args.capture).read_bytes()
    else:
        data = unbound_like_stream(args.pairs, args.names)
    # an fstrm_capture file starts with its own START frame
    start = b"" if args.capture else tapframes.encode_control(
        tapframes.START, (tapframes.CONTENT_TYPE,))
    with tempfile.TemporaryDirectory(prefix="tap-inproc-") as tmp:
        tmap = Path(tmp) / "tenants.yaml"
        tmap.write_text(TENANT_MAP)
        bus = MemoryBus()
        svc = build(Settings(home=tmp), bus, listen=[f"unix:{tmp}/tap.sock"],
                    tenant_map=str(tmap), name="bench-tap")
        svc.identity.set_static(load_static_map(tmap))
        pub = EventPublisher(bus, Spool(Path(tmp) / "spool"), edge="bench-tap",
                             max_queue=1 << 30)
        svc.wire(pub)
        messages = RdKafkaPublisher._messages
        produced = 0

        tune_for_batches(50_000)  # as `dnsflow tap` does once it listens
        t0 = time.process_time()
        for _ in range(args.repeat):
            conn = svc.listeners[0]._connection()
            conn.connection_made(NullTransport())
            conn.data_received(start)
            step = args.read_size
            for i in range(0, len(data), step):
                conn.data_received(data[i:i + step])
                if pub.queue:  # the pump: what it hands to produce_batch
                    produced += len(messages(pub, pub._take(1 << 30)))
        svc.pairer.flush()
        produced += len(messages(pub, pub._take(1 << 30)))
        cpu = time.process_time() - t0
        st = svc.status()
        bus_st = {"frames": st["frames"], "events": produced,
                  "paired": st["pairing"]["paired"], "unpaired": st["pairing"]["unpaired"],
                  "decode_errors": st["decode_errors"],
                  "adjacent_pairs": st["adjacent_pairs"],
                  "cpu_us_per_event": round(cpu * 1e6 / max(1, produced), 2)}
        pub.spool.close()
    return bus_st


def callgrind(args: argparse.Namespace) -> None:
    """Instructions per event of :func:`inproc` under ``valgrind --tool=callgrind``: the
    difference between ``--repeat`` 3 and 1 over the events of the two extra passes, so
    start-up and imports cancel out (instruction counts, unlike time, do not depend on what
    else the shared cores run)."""
    import tempfile

    base = [sys.executable, "-m", "bench.tap", "--inproc", "--read-size", str(args.read_size)]
    base += ["--capture", args.capture] if args.capture else [
        "--pairs", str(args.pairs), "--names", str(args.names)]
    totals, events = {}, {}
    with tempfile.TemporaryDirectory(prefix="tap-callgrind-") as tmp:
        for rep in (1, 3):
            out = Path(tmp) / f"cg.{rep}"
            r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                *base, "--repeat", str(rep)], capture_output=True, text=True,
                               check=True)
            events[rep] = int(r.stdout.split("events=")[1].split()[0])
            totals[rep] = next(int(line.split()[1]) for line in out.read_text().splitlines()
                               if line.startswith(("summary:", "totals:")))
            log(f"repeat {rep}: {r.stdout.strip()} instructions={totals[rep]}")
    per = (totals[3] - totals[1]) / (events[3] - events[1])
    print(f"bench tap inproc: instructions_per_event={per:.0f} "
          f"events={events[3] - events[1]}", flush=True)


def _fields(b: bytes) -> dict[int, object]:
    out: dict[int, object] = {}
    i, n = 0, len(b)

    def varint(i: int) -> tuple[int, int]:
        r = s = 0
        while True:
            c = b[i]
            i += 1
            r |= (c & 0x7F) << s
            if c < 0x80:
                return r, i
            s += 7
    while i < n:
        key, i = varint(i)
        wt = key & 7
        if wt == 0:
            v, i = varint(i)
        elif wt == 2:
            ln, i = varint(i)
            v, i = b[i:i + ln], i + ln
        elif wt == 5:
            v, i = int.from_bytes(b[i:i + 4], "little"), i + 4
        elif wt == 1:
            v, i = int.from_bytes(b[i:i + 8], "little"), i + 8
        else:
            raise ValueError("wire type")
        out[key >> 3] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tap", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafka", help="use this Kafka instead of starting a private one")
    ap.add_argument("--seconds", type=float, default=10.0, help="dnsperf time per phase")
    ap.add_argument("--names", type=int, default=2000, help="distinct names asked")
    ap.add_argument("--rounds", type=int, default=3,
                    help="capture + replay rounds; the median round's ratio is reported")
    ap.add_argument("--live-qps", type=float, default=20000.0,
                    help="dnsperf rate of the live phase (default 20000)")
    ap.add_argument("--pair-wait", type=float, default=3.0,
                    help="seconds after dnsperf for the last frames (default 3)")
    ap.add_argument("--decode-only", action="store_true",
                    help="only the decoding micro-benchmarks")
    ap.add_argument("--inproc", action="store_true",
                    help="the tap's path in this process, no sockets or Kafka (see inproc())")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per event of --inproc under valgrind's callgrind")
    ap.add_argument("--capture", help="--inproc: an fstrm_capture file instead of synthetic "
                    "unbound-like frames")
    ap.add_argument("--pairs", type=int, default=20000,
                    help="--inproc: synthetic query/response pairs (default 20000)")
    ap.add_argument("--repeat", type=int, default=1, help="--inproc: passes over the stream")
    ap.add_argument("--read-size", type=int, default=262144,
                    help="--inproc: bytes per data_received (asyncio reads up to 256 KiB)")
    add_keep_option(ap)
    args = ap.parse_args(argv)
    if args.decode_only:
        decode_only()
        return 0
    if args.callgrind:
        callgrind(args)
        return 0
    if args.inproc:
        res = inproc(args)
        print(" ".join(f"{k}={v}" for k, v in res.items()), flush=True)
        return 0
    res = run(args)
    print(f"bench tap: events_per_s={res['events_per_s']:.0f} "
          f"unbound_dnstap_qps={res['unbound_dnstap_qps']:.0f} ratio={res['ratio']:.2f} "
          f"ratio_min={res['ratio_min']:.2f} ratio_max={res['ratio_max']:.2f} "
          f"rounds={args.rounds} "
          f"lost={res['lost']:.0f} live_qps={res['live_qps']:.0f} "
          f"live_lost={res['live_lost']:.0f} "
          f"tap_cpu_us_per_event={res['tap_cpu_us_per_event']:.1f} "
          f"tap_sys_us_per_event={res['tap_sys_us_per_event']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
