"""Adjacent query/response pairs taken from the stream bytes give the same events and counters
as the per-frame paths, whatever the frames hold (long names, IPv6, TCP, dnsdist's extra
query time, frame-like bytes inside a query name, fields after the DNS message) and
wherever the reads cut the stream."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.name
import pytest
from dnstap_pb import dnstap_pb2

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.identity import load_static_map
from dnsflow.edge.tap import frames as fs
from dnsflow.edge.tap.adjacent import AdjacentPairs, opening
from dnsflow.edge.tap.service import build
from dnsflow.settings import Settings
from harness.null_transport import NullTransport
from tests.helpers.tap_recorder import Recorder


def service(tmp: Path, tenant_map: Path):
    svc = build(Settings(home=tmp), MemoryBus(), listen=["unix:/x/t.sock"],  # never bound
                tenant_map=str(tenant_map), name="t")
    svc.identity.set_static(load_static_map(tenant_map))
    rec = Recorder()
    svc.wire(rec)  # type: ignore[arg-type]
    return svc, rec


def finish(svc, rec: Recorder):
    svc.pairer.flush()
    st = svc.status()
    for k in ("tap", "listen", "listeners", "events", "metrics_port", "identity",
              "adjacent_pairs"):
        st.pop(k, None)
    return sorted(rec.events), st


def through_stream(tmp: Path, tenant_map: Path, frames: list[bytes], chunk: int):
    """The frames as a sender writes them (START, data frames), read ``chunk`` bytes at a
    time by a real connection of the service: the adjacent pairs' scanner is on."""
    svc, rec = service(tmp, tenant_map)
    conn = svc.listeners[0]._connection()
    conn.connection_made(NullTransport())
    stream = fs.encode_control(fs.START, (fs.CONTENT_TYPE,)) + b"".join(
        fs.encode_data(f) for f in frames)
    for i in range(0, len(stream), chunk):
        conn.data_received(stream[i:i + chunk])
    assert isinstance(conn.scan, AdjacentPairs)
    assert conn.frames == len(frames)
    return (*finish(svc, rec), svc.fast.adjacent)


def frame_by_frame(tmp: Path, tenant_map: Path, frames: list[bytes]):
    """The general path, one frame at a time: the reference."""
    svc, rec = service(tmp, tenant_map)

    class Conn:
        label = "unix:/x/t.sock#1"  # the first connection's, as in through_stream
        frames = 0

        class listener:
            endpoint = "unix:/x/t.sock"
    for f in frames:
        svc.on_frame(f, Conn())  # type: ignore[arg-type]
    return finish(svc, rec)


def hostile_name(dnstap) -> dns.name.Name:
    """A query name whose labels hold what a frame's end, the next frame's header and the
    sender's opening look like (a client chooses its query name)."""
    prefix = opening(dnstap(5))
    assert prefix is not None
    fake = b"\x78\x01\x00\x00\x00\x30" + prefix + b"\x72\x10\x08\x06"
    return dns.name.Name([fake[:60], b"\x78\x01", b"shop", b"test", b""])


def mixed(dnstap) -> tuple[list[bytes], int]:
    """Frames of many shapes, and how many of them are adjacent pairs the scanner may take."""
    frames: list[bytes] = []
    pairs = 0
    for i in range(30):
        kw = {"qid": i, "port": 40000 + i * 997, "t_us": 1_700_000_000_000_000 + i * 10}
        name = f"n{i % 7}.shop.test"
        if i % 5 == 1:
            kw["client"] = "fd00::7"
        if i % 5 == 2:
            kw["protocol"] = 2
        if i % 5 == 3:  # DNS messages and dnstap messages longer than 127 bytes
            name = f"{'x' * 60}.{'y' * 60}.n{i}.shop.test"
        rcode = 3 if i % 6 == 0 else 0
        frames.append(dnstap(5, name, **kw))
        frames.append(dnstap(6, name, rcode=rcode, **{**kw, "t_us": kw["t_us"] + 250}))
        pairs += 1
    frames.append(dnstap(5, "dd.shop.test", qid=800, identity=b"dnsdist-1"))
    frames.append(dnstap(6, "dd.shop.test", qid=800, identity=b"dnsdist-1",
                         query_time_in_response=True, t_us=1_700_000_000_000_400))
    frames.append(dnstap(1, "auth.shop.test", qid=801))
    frames.append(dnstap(2, "auth.shop.test", qid=801))
    frames.append(dnstap(5, "anon.shop.test", qid=802, identity=b""))
    frames.append(dnstap(6, "anon.shop.test", qid=802, identity=b""))
    frames.append(dnstap(5, "late.shop.test", qid=803, t_us=1_700_000_000_000_900))
    frames.append(dnstap(6, "late.shop.test", qid=803, t_us=1_700_000_000_000_100))  # < 0
    pairs += 4
    # not adjacent: interleaved, answered later, never answered, retransmitted
    frames += [dnstap(5, "a.shop.test", qid=810), dnstap(5, "b.shop.test", qid=811),
               dnstap(6, "a.shop.test", qid=810), dnstap(6, "b.shop.test", qid=811),
               dnstap(5, "never.shop.test", qid=812),
               dnstap(5, "again.shop.test", qid=813), dnstap(5, "again.shop.test", qid=813),
               dnstap(6, "again.shop.test", qid=813)]
    # (the retransmission's second query and its response are adjacent, but the first query
    # waits under their key: the per-frame path pairs them, as it would have)
    # the same ID and client but another question: not a pair
    frames += [dnstap(5, "q1.shop.test", qid=820), dnstap(6, "q2.shop.test", qid=820)]
    # resolver-side messages of a sender that logs its clients: not events
    frames += [dnstap(3, qid=830), dnstap(4, qid=830)]
    return frames, pairs


@pytest.mark.parametrize("chunk", [3, 61, 700, 1 << 20])
def test_stream_and_frame_by_frame_agree(tmp_path: Path, tenant_map: Path, dnstap,
                                         chunk: int) -> None:
    frames, pairs = mixed(dnstap)
    events, st, adjacent = through_stream(tmp_path / "s", tenant_map, frames, chunk)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert events == ref_events
    assert st == ref_st
    assert len(events) == 30 + 4 + 2 + 1 + 2 + 2  # every query, once
    if chunk == 1 << 20:  # one read: every adjacent pair is taken from the stream
        assert adjacent == pairs
    else:  # a pair cut by a read goes the per-frame way: same events
        assert (0 < adjacent < pairs) if chunk > 500 else adjacent < pairs
    assert any(b'"latency_us":0,' in v and b"late.shop.test" in v for _, v in events)


def test_frame_like_bytes_in_a_query_name_change_nothing(tmp_path: Path, tenant_map: Path,
                                                          dnstap) -> None:
    q = dns.message.make_query(hostile_name(dnstap), "A")
    frames = []
    for i in range(3):
        f5 = dnstap_pb2.Dnstap.FromString(dnstap(5, qid=i))
        q.id = i
        f5.message.query_message = q.to_wire()
        f6 = dnstap_pb2.Dnstap.FromString(dnstap(6, qid=i))
        r = dns.message.make_response(q)
        f6.message.response_message = r.to_wire()
        frames += [f5.SerializeToString(), f6.SerializeToString()]
    events, st, _ = through_stream(tmp_path / "s", tenant_map, frames, 1 << 20)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert events == ref_events and st == ref_st
    assert len(events) == 3 and st["pairing"]["paired"] == 3


def test_fields_after_the_dns_message_are_not_dns(tmp_path: Path, tenant_map: Path,
                                                  dnstap) -> None:
    """query_zone (field 11) follows query_message (10): the DNS message is only as long as
    its length says, so the pair is left to the per-frame path, which reads it right."""
    q = dnstap_pb2.Dnstap.FromString(dnstap(5, qid=7))
    q.message.query_zone = b"\x04shop\x04test\x00"
    frames = [q.SerializeToString(), dnstap(6, qid=7)]
    events, st, adjacent = through_stream(tmp_path / "s", tenant_map, frames, 1 << 20)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert adjacent == 0
    assert events == ref_events and st == ref_st and len(events) == 1


def test_a_frame_whose_lengths_disagree_is_not_taken(tmp_path: Path, tenant_map: Path,
                                                     dnstap) -> None:
    """A query whose dnstap ``message`` length is one byte short (framing intact): the
    per-frame path judges it (a decode error, dead-lettered), the response is an orphan."""
    good = dnstap(5, qid=9)
    prefix = opening(good)
    assert prefix is not None
    at = len(prefix) + 1
    bad = good[:at] + bytes([good[at] - 1]) + good[at + 1:]
    frames = [bad, dnstap(6, qid=9), dnstap(5, qid=10), dnstap(6, qid=10)]
    events, st, adjacent = through_stream(tmp_path / "s", tenant_map, frames, 1 << 20)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert events == ref_events and st == ref_st
    assert adjacent == 1 and st["decode_errors"] == 1


def test_opening() -> None:
    assert opening(b"\x0a\x02vm\x12\x01x\x72\x05") == b"\x0a\x02vm\x12\x01x"
    assert opening(b"\x72\x05") == b""
    assert opening(b"\x78\x01\x72\x05") is None    # type first: another layout
    assert opening(b"\x0a\x85\x01" + b"x" * 133) is None  # a long identity


def test_a_sender_without_adjacent_pairs_is_rarely_tried(tmp_path: Path, tenant_map: Path,
                                                          dnstap, monkeypatch) -> None:
    """Only responses (a resolver that logs CLIENT_RESPONSE alone): the scanner backs off to
    one try in 256 frames, and the per-frame path takes every frame; a pair that follows
    is taken again after the next try."""
    calls = 0
    real = AdjacentPairs.__call__

    def counted(self, buf, off):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(self, buf, off)
    monkeypatch.setattr(AdjacentPairs, "__call__", counted)
    frames = [dnstap(6, qid=i % 60000) for i in range(1000)]
    frames += [dnstap(5, qid=70000 % 65536), dnstap(6, qid=70000 % 65536)] * 300
    events, st, adjacent = through_stream(tmp_path / "s", tenant_map, frames, 1 << 20)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert events == ref_events and st == ref_st
    assert calls < 30  # 4 free tries at responses, then 1, 2, 4 ... 256 frames apart
    assert 0 < adjacent < 300 and st["pairing"]["paired"] == 300


def test_an_over_long_length_varint_is_read_as_protobuf_reads_it(tmp_path: Path,
                                                                  tenant_map: Path,
                                                                  dnstap) -> None:
    """A ``message`` length written in two bytes where one would do (``0x85 0x00`` for 5):
    protobuf accepts it, so the frame is a good one; the scanner leaves it to the per-frame
    path rather than failing on it, and the events are the same."""
    good = dnstap(5, qid=9)
    prefix = opening(good)
    assert prefix is not None
    at = len(prefix) + 1
    assert good[at] < 0x80
    long = good[:at] + bytes([good[at] | 0x80, 0]) + good[at + 1:]
    assert dnstap_pb2.Dnstap.FromString(long) == dnstap_pb2.Dnstap.FromString(good)
    frames = [long, dnstap(6, qid=9), dnstap(5, qid=10), dnstap(6, qid=10)]
    events, st, adjacent = through_stream(tmp_path / "s", tenant_map, frames, 1 << 20)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert events == ref_events and st == ref_st
    assert len(events) == 2 and st["decode_errors"] == 0 and adjacent == 1


def test_a_fault_in_the_scanner_costs_no_frame(tmp_path: Path, tenant_map: Path, dnstap,
                                               monkeypatch, caplog) -> None:
    """Should the scanner ever raise, the frames it was reading go the per-frame way (the
    same events, the connection stays open) and it is not tried again on that connection."""
    def broken(self, raw):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")
    monkeypatch.setattr(AdjacentPairs, "_client", broken)
    frames, _ = mixed(dnstap)
    events, st, adjacent = through_stream(tmp_path / "s", tenant_map, frames, 1 << 20)
    ref_events, ref_st = frame_by_frame(tmp_path / "r", tenant_map, frames)
    assert events == ref_events and st == ref_st and adjacent == 0
    assert "reading adjacent pairs failed" in caplog.text
    assert caplog.text.count("reading adjacent pairs failed") == 1
