"""The tap end to end on the in-process bus: frames in, schema-v1 events out, with identity."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import msgspec
import orjson
import pytest

from dnsflow.bus import BusError
from dnsflow.bus.memory import MemoryBus
from dnsflow.cli import main as cli_main
from dnsflow.edge.tap.service import build
from dnsflow.schema import Event
from dnsflow.settings import ConfigError, Settings


async def read(bus: MemoryBus, topic: str) -> list:
    c = bus.consumer([topic], None)
    await c.start()
    try:
        return await c.getmany(timeout_ms=200, max_records=10_000)
    finally:
        await c.stop()


@pytest.fixture
async def tap(tmp_path: Path, tenant_map: Path, bus: MemoryBus):
    await bus.start()
    svc = build(Settings(home=tmp_path), bus, listen=[f"unix:{tmp_path}/tap.sock",
                                                      "tcp:127.0.0.1:0"],
                tenant_map=str(tenant_map), name="t", pair_timeout=0.3,
                metrics_listen="127.0.0.1:0")
    await svc.start()
    yield svc
    await svc.stop()
    await bus.stop()


async def test_every_query_is_one_valid_event_with_the_clients_identity(
        tap, bus: MemoryBus, tmp_path: Path, dnstap, send, until) -> None:
    frames = []
    for i in range(50):
        frames.append(dnstap(5, f"n{i}.shop.test", qid=i, t_us=1_700_000_000_000_000 + i))
        frames.append(dnstap(6, f"n{i}.shop.test", qid=i, rcode=3 if i % 5 == 0 else 0,
                             t_us=1_700_000_000_000_250 + i))
    frames.append(dnstap(5, "lost.shop.test", qid=999))  # never answered
    await send(str(tmp_path / "tap.sock"), frames)
    await until(lambda: tap.status()["events"]["published"] == 51)
    recs = await read(bus, bus.topics.events)
    events = [msgspec.json.decode(r.value, type=Event) for r in recs]
    assert len(events) == 51
    assert {r.key for r in recs} == {b"shop"}
    by_name = {e.qname: e for e in events}
    assert len(by_name) == 51
    e = by_name["n1.shop.test"]
    assert (e.tenant, e.namespace, e.pod, e.edge, e.client_ip, e.transport, e.qtype) == (
        "shop", "shop", "web-1", "unbound-1", "127.0.0.2", "udp", "A")
    assert (e.rcode, e.answers, e.latency_us, e.ts) == (
        "NOERROR", ["A 10.0.0.1"], 250, 1_700_000_000_000_001)
    assert by_name["n5.shop.test"].rcode == "NXDOMAIN"
    lost = by_name["lost.shop.test"]
    assert (lost.rcode, lost.latency_us, lost.answers) == ("TIMEOUT", 0, [])
    st = tap.status()
    assert st["frames"] == 101 and st["pairing"]["paired"] == 50
    assert st["pairing"]["unpaired"] == 1 and st["decode_errors"] == 0


async def test_response_with_its_query_time_gives_latency_alone(
        tap, bus: MemoryBus, dnstap, send, until) -> None:
    port = tap.status()["listen"][1].rsplit(":", 1)[1]
    await send(("127.0.0.1", int(port)), [
        dnstap(6, "alone.shop.test", identity=b"dnsdist-1", query_time_in_response=True,
               t_us=1_700_000_000_000_400)])
    await until(lambda: tap.status()["events"]["published"] == 1)
    e = msgspec.json.decode((await read(bus, bus.topics.events))[0].value, type=Event)
    assert (e.edge, e.latency_us, e.ts, e.rcode) == (
        "dnsdist-1", 400, 1_700_000_000_000_000, "NOERROR")


async def test_sender_without_identity_is_named_by_its_connection(
        tap, bus: MemoryBus, dnstap, send, until) -> None:
    port = int(tap.status()["listen"][1].rsplit(":", 1)[1])
    await send(("127.0.0.1", port), [dnstap(5, identity=b""), dnstap(6, identity=b"")])
    await until(lambda: tap.status()["events"]["published"] == 1)
    e = orjson.loads((await read(bus, bus.topics.events))[0].value)
    assert e["edge"].startswith("127.0.0.1:")


async def test_resolver_side_messages_only_when_no_client_side(
        tap, bus: MemoryBus, tmp_path: Path, dnstap, send, until) -> None:
    sock = str(tmp_path / "tap.sock")
    # a resolver logging only its upstream queries: those are the events
    await send(sock, [dnstap(3, identity=b"r-only"), dnstap(4, identity=b"r-only")])
    # a resolver logging both: one event per client query, upstream ones are not counted twice
    await send(sock, [dnstap(5, identity=b"both"), dnstap(3, identity=b"both", qid=9),
                      dnstap(4, identity=b"both", qid=9), dnstap(6, identity=b"both")])
    await until(lambda: tap.status()["events"]["published"] == 2)
    events = [orjson.loads(r.value) for r in await read(bus, bus.topics.events)]
    assert {(e["edge"], e["upstream"]) for e in events} == {
        ("r-only", "127.0.0.1:53"), ("both", "")}
    assert tap.status()["upstream_ignored"] == 2


async def test_bad_frames_are_counted_and_dead_lettered_never_fatal(
        tap, bus: MemoryBus, tmp_path: Path, dnstap, send, until) -> None:
    sock = str(tmp_path / "tap.sock")
    await send(sock, [b"\xff\xfegarbage", dnstap(5), dnstap(6)])
    await until(lambda: tap.status()["events"]["published"] == 1
                and tap.status()["dlq_sent"] == 1)
    dlq = [orjson.loads(r.value) for r in await read(bus, bus.topics.dlq)]
    assert dlq[0]["component"] == "tap" and dlq[0]["source_topic"] == "dnstap"
    assert "not a dnstap protobuf message" in dlq[0]["reason"]
    assert "tap.sock" in dlq[0]["reason"]  # where it came from
    assert tap.status()["decode_errors"] == 1


async def test_metrics_endpoint(tap, tmp_path: Path, dnstap, send, until) -> None:
    await send(str(tmp_path / "tap.sock"), [dnstap(5), dnstap(6)])
    await until(lambda: tap.status()["events_built"] == 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", tap.status()["metrics_port"])
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    body = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    assert "dnsflow_tap_frames_total 2.0" in body
    assert "dnsflow_tap_paired_total 1.0" in body
    assert "dnsflow_tap_events_dropped_total 0.0" in body
    # like every component: which build runs here, and the process's own figures
    assert 'dnsflow_build_info{component="tap"' in body
    assert "process_resident_memory_bytes" in body
    promtool = shutil.which("promtool")
    if promtool:  # scripts/install-peers installs it; the suite's metrics tests require it
        text = body.split("\r\n\r\n", 1)[1]
        out = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=30, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


async def test_full_publisher_queue_spools_and_drops_without_blocking(
        tmp_path: Path, bus: MemoryBus, dnstap, send, until) -> None:
    """Backpressure: the bus stalls; the reader keeps reading, the publisher's bounded queue
    spills to a (tiny) spool and then drops, and says how many."""
    await bus.start()

    release = asyncio.Event()

    async def stalled(topic, records):  # a bus that does not acknowledge, then fails
        await release.wait()
        raise BusError("broker away")

    bus.send_many = stalled  # type: ignore[method-assign]
    svc = build(Settings(home=tmp_path), bus, listen=[f"unix:{tmp_path}/tap.sock"], name="bp",
                event_queue=1000, spool_limit_mb=0.01)
    await svc.start()
    try:
        frames = [dnstap(k, qid=i) for i in range(3000) for k in (5, 6)]
        await asyncio.wait_for(send(str(tmp_path / "tap.sock"), frames), 10)
        await until(lambda: svc.status()["frames"] == 6000)
        st = svc.status()
        assert st["events_built"] == 3000
        assert st["events"]["dropped"] > 0
        assert st["events"]["spooled"] + st["events"]["dropped"] + st["events"]["queue"] \
            >= 3000 - 2000  # at most one batch is in the stalled send
    finally:
        release.set()
        await asyncio.wait_for(svc.stop(), 30)
        await bus.stop()


def test_config_errors_are_named(tmp_path: Path, bus: MemoryBus) -> None:
    with pytest.raises(ConfigError, match="--listen 'udp:1:2'"):
        build(Settings(home=tmp_path), bus, listen=["udp:1:2"])
    with pytest.raises(ConfigError, match="pair_timeout"):
        build(Settings(home=tmp_path), bus, listen=["tcp:127.0.0.1:0"], pair_timeout=-1)


def test_cli_needs_listen_and_names_bad_input(capsys, tmp_path: Path) -> None:
    assert cli_main(["tap"]) == 2
    assert "--listen" in capsys.readouterr().err
    assert cli_main(["tap", "--home", str(tmp_path), "--listen", "bogus"]) == 2
    assert "unix:PATH or tcp:HOST:PORT" in capsys.readouterr().err


def test_cli_takes_listen_from_the_tap_section(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "dnsflow.yaml"
    conf.write_text("tap: {listen: ['udp:1:2']}\n")  # read, and its error named
    assert cli_main(["tap", "--home", str(tmp_path), "--config", str(conf)]) == 2
    assert "--listen 'udp:1:2'" in capsys.readouterr().err
