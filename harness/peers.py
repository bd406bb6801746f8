"""Real peers on loopback for integration tests and benchmarks: unbound (plain, DoT, DoH,
dnstap), NSD (authoritative), fstrm_capture, and the local Kafka script. Every process is
started here and stopped by its PID; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Self

from harness.dnswire import a_query

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP+TCP on 127.0.0.1")


def dns_probe(port: int, name: str = "probe.invalid", host: str = "127.0.0.1",
              timeout: float = 0.5) -> bytes | None:
    """One UDP query; the raw reply or None."""
    q = a_query(name, 0x4242)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, (host, port))
            return s.recv(65535)
        except OSError:
            return None


def wait_dns(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering DNS")
        if dns_probe(port) is not None:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered DNS on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM (a graceful stop: flushes, commits), then SIGKILL after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_for_path(path: Path, proc: subprocess.Popen, log: Path, timeout: float,
                  what: str) -> None:
    """Until ``proc`` (``what``, e.g. "dnsflow tap") has created ``path``, its socket: a
    RuntimeError with the tail of its ``log`` when it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            state = "did not start" if proc.poll() is None else f"exited ({proc.returncode})"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} {state}: no {path} after {timeout:g}s\n{tail}")
        time.sleep(0.1)


def make_cert(directory: Path) -> tuple[Path, Path]:
    from dnsflow.edge.tls import self_signed

    return self_signed(directory, "localhost")


class _Daemon:
    """A DNS server process with a log file: started by ``start()``, ready once it answers
    on ``port``, stopped by its PID; usable as ``with Peer(...) as peer:``."""

    port: int
    proc: subprocess.Popen | None = None
    log: IO[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Self:
        raise NotImplementedError

    def _launch(self, cmd: list[str], log: Path, timeout: float,
                more_logs: Sequence[Path] = ()) -> None:
        """Run ``cmd`` (output to ``log``) until it answers DNS; if it does not, stop it and
        raise with the end of its logs."""
        self.log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            wait_dns(self.port, timeout, self.proc)
        except RuntimeError as exc:
            self.stop()
            tails = "".join(p.read_text()[-800:] for p in (log, *more_logs) if p.exists())
            raise RuntimeError(f"{type(self).__name__.lower()}: {exc}: {tails}") from None

    def stop(self) -> None:
        stop_process(self.proc)
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Unbound(_Daemon):
    """``unbound -d`` with a generated config: local-data zones, no recursion to the internet.

    ``tls_port``/``https_port`` make it a DoT/DoH server too; ``dnstap_socket`` logs every
    client query and response to that unix socket (for ``fstrm_capture``).
    """

    def __init__(self, local_data: Iterable[str], *, zones: Sequence[str] = ("bench.test",),
                 port: int | None = None, threads: int = 1, tls_port: int | None = None,
                 https_port: int | None = None, dnstap_socket: str | None = None,
                 workdir: Path | None = None, cpu: int | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.local_data = list(local_data)
        self.zones = list(zones)
        self.port = port or free_port()
        self.threads = threads
        self.tls_port = tls_port
        self.https_port = https_port
        self.dnstap_socket = dnstap_socket
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="unbound-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cpu = cpu
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.cert: Path | None = None

    def config(self) -> str:
        lines = [
            "server:",
            "  verbosity: 0",
            f"  num-threads: {self.threads}",
            f"  interface: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            "  do-daemonize: no",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir}/unbound.pid"',
            '  logfile: ""',
            "  use-syslog: no",
            "  do-ip6: no",
            "  access-control: 127.0.0.0/8 allow",
            "  so-reuseport: no",
            "  so-rcvbuf: 4m",  # as the edge sets: a burst of queries is not dropped
            "  so-sndbuf: 4m",
            "  msg-cache-size: 64m",
            "  rrset-cache-size: 64m",
            "  num-queries-per-thread: 4096",
            "  outgoing-range: 64",
            "  do-not-query-localhost: yes",
            "  qname-minimisation: no",
            "  module-config: \"iterator\"",
            "  minimal-responses: yes",
            "  edns-buffer-size: 1232",
        ]
        if self.tls_port or self.https_port:
            cert, key = make_cert(self.dir / "tls")
            self.cert = cert
            lines += [f'  tls-service-key: "{key}"', f'  tls-service-pem: "{cert}"']
            if self.tls_port:
                lines += [f"  interface: 127.0.0.1@{self.tls_port}", f"  tls-port: {self.tls_port}"]
            if self.https_port:
                lines += [f"  interface: 127.0.0.1@{self.https_port}",
                          f"  https-port: {self.https_port}", "  http-notls-downstream: no"]
        for z in self.zones:
            lines.append(f'  local-zone: "{z}." static')
            if not any(" SOA " in rr and rr.split()[0].rstrip(".") == z for rr in self.local_data):
                # negative answers carry the zone SOA, as a real authoritative zone's do
                lines.append(f'  local-data: "{z}. 3600 IN SOA ns.{z}. hostmaster.{z}. '
                             f'1 3600 600 86400 60"')
        for rr in self.local_data:
            quote = "'" if '"' in rr else '"'
            lines.append(f"  local-data: {quote}{rr}{quote}")
        lines += [f"  {x}" for x in self.extra]
        if self.dnstap_socket:
            lines += [
                "dnstap:",
                "  dnstap-enable: yes",
                f'  dnstap-socket-path: "{self.dnstap_socket}"',
                "  dnstap-send-identity: yes",
                "  dnstap-send-version: yes",
                "  dnstap-log-client-query-messages: yes",
                "  dnstap-log-client-response-messages: yes",
            ]
        lines += ["remote-control:", "  control-enable: no"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> Unbound:
        if not shutil.which("unbound"):
            raise RuntimeError("unbound is not installed (scripts/install-peers)")
        conf = self.dir / "unbound.conf"
        conf.write_text(self.config())
        cmd = ["unbound", "-d", "-c", str(conf)]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        self._launch(cmd, self.dir / "unbound.log", timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def _nsd_binary() -> str | None:
    return shutil.which("nsd") or ("/usr/sbin/nsd" if os.path.exists("/usr/sbin/nsd") else None)


class Nsd(_Daemon):
    """``nsd -d`` serving zone files on 127.0.0.1 (UDP and TCP), no database, no remote
    control, no transfers: the authoritative server behind unbound and the edge in the
    conformance test. ``zones`` maps a zone name to its zone-file text."""

    def __init__(self, zones: dict[str, str], *, workdir: Path | None = None,
                 port: int | None = None) -> None:
        self.zones = dict(zones)
        self.port = port or free_port()
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="nsd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        d = self.dir
        lines = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            "  do-ip6: no",
            "  server-count: 1",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{d}"',
            '  database: ""',
            f'  pidfile: "{d}/nsd.pid"',
            f'  xfrdfile: "{d}/xfrd.state"',
            f'  xfrdir: "{d}"',
            f'  zonelistfile: "{d}/zone.list"',
            f'  logfile: "{d}/nsd.log"',
            "  verbosity: 0",
            "  hide-version: yes",
            "  hide-identity: yes",
            "remote-control:",
            "  control-enable: no",
        ]
        for name in self.zones:
            lines += ["zone:", f'  name: "{name.rstrip(".")}."',
                      f'  zonefile: "{name.rstrip(".")}.zone"']
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> Nsd:
        nsd = _nsd_binary()
        if not nsd:
            raise RuntimeError("nsd is not installed (scripts/install-peers)")
        for name, text in self.zones.items():
            (self.dir / f"{name.rstrip('.')}.zone").write_text(text)
        conf = self.dir / "nsd.conf"
        conf.write_text(self.config())
        self._launch([nsd, "-d", "-c", str(conf)], self.dir / "nsd.out", timeout,
                     more_logs=[self.dir / "nsd.log"])
        return self


class Dnsdist(_Daemon):
    """``dnsdist --supervised`` in front of a backend: plain, DoT and DoH listeners (the
    DoT/DoH peer for the edge's upstream clients); ``dnstap_socket`` logs every client query
    and response there (``DnstapLogAction``/``DnstapLogResponseAction``)."""

    def __init__(self, backend_port: int, workdir: Path, check_zone: str = "bench.test",
                 dnstap_socket: str | None = None, dnstap_identity: str = "dnsdist") -> None:
        self.backend_port = backend_port
        self.dnstap_socket = dnstap_socket  # log client queries+responses there (Frame Streams)
        self.dnstap_identity = dnstap_identity
        self.check_zone = check_zone.rstrip(".")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.tls_port, self.https_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.cert, self.key = make_cert(self.dir / "tls")

    def config(self) -> str:
        return "\n".join([
            f'setLocal("127.0.0.1:{self.port}")',
            f'addTLSLocal("127.0.0.1:{self.tls_port}", "{self.cert}", "{self.key}")',
            f'addDOHLocal("127.0.0.1:{self.https_port}", "{self.cert}", "{self.key}", '
            '"/dns-query")',
            # health-check a zone the backend serves (it cannot reach the root servers)
            f'newServer({{address="127.0.0.1:{self.backend_port}", '
            f'checkName="{self.check_zone}.", checkType="SOA"}})',
            'setSecurityPollSuffix("")',
            *self._dnstap(),
        ]) + "\n"

    def _dnstap(self) -> list[str]:
        if not self.dnstap_socket:
            return []
        ident = self.dnstap_identity
        return [f'tap = newFrameStreamUnixLogger("{self.dnstap_socket}")',
                f'addAction(AllRule(), DnstapLogAction("{ident}", tap))',
                f'addResponseAction(AllRule(), DnstapLogResponseAction("{ident}", tap))',
                f'addCacheHitResponseAction(AllRule(), DnstapLogResponseAction("{ident}", tap))']

    def start(self, timeout: float = 15.0) -> Dnsdist:
        if not shutil.which("dnsdist"):
            raise RuntimeError("dnsdist is not installed (scripts/install-peers)")
        conf = self.dir / "dnsdist.conf"
        conf.write_text(self.config())
        self._launch(["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)],
                     self.dir / "dnsdist.log", timeout)
        return self


class FstrmCapture:
    """``fstrm_capture`` reading dnstap frames from a unix socket into a file."""

    def __init__(self, workdir: Path, cpu: int | None = None) -> None:
        self.socket = str(workdir / "dnstap.sock")
        self.out = workdir / "dnstap.fstrm"
        self.proc: subprocess.Popen | None = None
        self.cpu = cpu

    def start(self) -> FstrmCapture:
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        self.proc = subprocess.Popen(
            [*pin, "fstrm_capture", "-t", "protobuf:dnstap.Dnstap", "-u", self.socket,
             "-w", str(self.out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("fstrm_capture did not create its socket")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def size(self) -> int:
        return self.out.stat().st_size if self.out.exists() else 0


_BOOTSTRAP = re.compile(r"[A-Za-z0-9.-]+:\d{1,5}")


class KafkaLocal:
    """``scripts/kafka-local`` in a private state directory (stopped by its own PID file)."""

    def __init__(self, state: Path, cpu: int | None = None) -> None:
        self.state = state
        self.script = ROOT / "scripts" / "kafka-local"
        self.bootstrap = ""
        self.cpu = cpu  # the broker (a child of the script) inherits this CPU affinity

    def _run(self, verb: str, timeout: float) -> str:
        env = {**os.environ, "KAFKA_LOCAL_DIR": str(self.state)}
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        out = subprocess.run([*pin, "bash", str(self.script), verb], env=env,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0 and verb == "start":
            raise RuntimeError(f"kafka-local start failed: {out.stderr.strip()[-500:]}")
        return out.stdout.strip()

    def start(self) -> str:
        """Start (or find running) and return the bootstrap; the script's stdout must be
        exactly ``host:port`` -- anything else is a broken contract, said in one error."""
        out = self._run("start", 300)
        if not _BOOTSTRAP.fullmatch(out):
            self.stop()
            raise RuntimeError(f"kafka-local start printed {out!r}, expected host:port")
        self.bootstrap = out
        return self.bootstrap

    def stop(self) -> None:
        self._run("stop", 120)

    def pid(self) -> int | None:
        try:
            return int((self.state / "pid").read_text())
        except (OSError, ValueError):
            return None


class KafkaCluster(KafkaLocal):
    """``KAFKA_BROKERS=N scripts/kafka-local``: N combined broker+controller nodes (ids 1..N)
    in a private state directory; one can be SIGKILLed and restarted by node id."""

    def __init__(self, state: Path, brokers: int = 3) -> None:
        super().__init__(state)
        self.brokers = brokers
        self.ports: dict[int, int] = {}

    def _run(self, verb: str, timeout: float, *args: str) -> str:
        env = {**os.environ, "KAFKA_LOCAL_DIR": str(self.state),
               "KAFKA_BROKERS": str(self.brokers)}
        out = subprocess.run(["bash", str(self.script), verb, *args], env=env,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0 and verb in ("start", "kill", "restart"):
            raise RuntimeError(f"kafka-local {verb} {' '.join(args)} failed: "
                               f"{out.stderr.strip()[-500:]}")
        return out.stdout.strip()

    def start(self) -> str:
        out = self._run("start", 400)
        hosts = out.split(",")
        if len(hosts) != self.brokers or not all(_BOOTSTRAP.fullmatch(h) for h in hosts):
            self.stop()
            raise RuntimeError(f"kafka-local start printed {out!r}, expected "
                               f"{self.brokers} host:port separated by commas")
        self.bootstrap = out
        self.ports = {i + 1: int(h.rsplit(":", 1)[1]) for i, h in enumerate(hosts)}
        return out

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` (its data stays)."""
        self._run("kill", 30, str(node))

    def restart(self, node: int) -> None:
        """Start node ``node`` again on its data; returns once it answers metadata."""
        self._run("restart", 150, str(node))

    def node_pid(self, node: int) -> int | None:
        out = self._run("pid", 10, str(node))
        return int(out) if out.isdigit() else None

    def pid(self) -> int | None:  # the single broker's PID file does not exist here
        return None


async def partition_leaders(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int]]]:
    """``{partition: (leader node id, in-sync replica ids)}`` of ``topic`` from the
    cluster's metadata (a leader of -1: none elected yet)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
        return {p["partition"]: (p["leader"], sorted(p["isr"]))
                for p in meta.get("partitions") or ()}
    finally:
        await admin.close()


def kafka_or_private(bootstrap: str | None, work: Path, cpu: str,
                     log: Callable[[str], None]) -> tuple[str, KafkaLocal | None]:
    """A benchmark's broker: ``--kafka`` when given, else a private one from
    scripts/kafka-local under ``work`` pinned to ``cpu`` (returned: the caller stops it)."""
    if bootstrap:
        return bootstrap, None
    log("starting a private Kafka (scripts/kafka-local)")
    kafka = KafkaLocal(work / "kafka", cpu=int(cpu))
    try:
        return kafka.start(), kafka
    except BaseException:
        kafka.stop()
        raise


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (with its reaped children) from /proc: where
    a server's time goes, its own code or the kernel's (syscalls, and on loopback the
    delivery of what it sends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + cutime) / ticks, (stime + cstime) / ticks


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (and its reaped children) from /proc."""
    return sum(cpu_split(pid))


async def count_events(bootstrap: str, topic: str) -> int:
    """Records in a topic (sum over partitions of end - beginning offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if parts is None:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        begin = await c.beginning_offsets(tps)
        end = await c.end_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        await c.stop()
