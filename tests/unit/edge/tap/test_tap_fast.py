"""The reader's fast path gives the same events and counters as the general path, frame for
frame, whatever the mix (pairs, orphans, late and repeated queries, resolver-side messages,
frames that do not decode)."""

from __future__ import annotations

from pathlib import Path

from dnstap_pb import dnstap_pb2

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.identity import load_static_map
from dnsflow.edge.tap.service import build
from dnsflow.settings import Settings
from tests.helpers.tap_recorder import Recorder


class Conn:
    label = "unix:/x#1"
    frames = 0

    class listener:
        endpoint = "unix:/x"


def run(tmp: Path, tenant_map: Path, frames: list[bytes], batched: bool):
    svc = build(Settings(home=tmp), MemoryBus(), listen=[f"unix:{tmp}/t.sock"],
                tenant_map=str(tenant_map), name="t")
    svc.identity.set_static(load_static_map(tenant_map))
    rec = Recorder()
    svc.wire(rec)  # type: ignore[arg-type]
    if batched:
        for i in range(0, len(frames), 7):
            svc.on_frames(frames[i:i + 7], Conn())  # type: ignore[arg-type]
    else:
        for f in frames:
            svc.on_frame(f, Conn())  # type: ignore[arg-type]
    assert svc.pairer is not None and svc.fast is not None
    if batched:  # the fast path did the usual pairs
        assert svc.fast.status()["memo_answers"] > 0
    svc.pairer.flush()
    st = svc.status()
    for k in ("tap", "listen", "listeners", "events", "metrics_port", "identity"):
        st.pop(k)
    return rec.events, st


def test_fast_and_general_paths_agree(tmp_path: Path, tenant_map: Path, dnstap) -> None:
    frames: list[bytes] = []
    for i in range(40):
        name = f"n{i % 9}.shop.test"
        kw = {"qid": i, "port": 40000 + i % 3, "t_us": 1_700_000_000_000_000 + i * 10}
        if i % 10 == 1:
            kw["client"] = "fd00::7"
        if i % 10 == 2:
            kw["protocol"] = 2
        rcode = 3 if i % 7 == 0 else 0
        frames.append(dnstap(5, name, **kw))
        if i % 11 != 5:  # some never answered
            frames.append(dnstap(6, name, rcode=rcode, **{**kw, "t_us": kw["t_us"] + 300}))
    frames.append(dnstap(6, "orphan.shop.test", qid=900))      # response alone
    frames.append(dnstap(5, "orphan.shop.test", qid=900))      # then its late query
    frames += [dnstap(5, "again.shop.test", qid=901)] * 2       # a retransmission
    frames.append(dnstap(6, "again.shop.test", qid=901))
    frames.append(dnstap(6, "dd.shop.test", identity=b"dnsdist-1", query_time_in_response=True,
                         t_us=1_700_000_000_000_400))
    frames.append(dnstap(1, "auth.shop.test", qid=902))          # AUTH_QUERY / _RESPONSE
    frames.append(dnstap(2, "auth.shop.test", qid=902))
    frames.append(dnstap(5, "v6.shop.test", qid=906, qtype="AAAA"))
    frames.append(dnstap(6, "v6.shop.test", qid=906, qtype="AAAA", answer="2001:db8::1"))
    frames.append(dnstap(5, "anon.shop.test", qid=903, identity=b""))
    frames.append(dnstap(6, "anon.shop.test", qid=903, identity=b""))
    frames += [dnstap(3, identity=b"upstream-only"), dnstap(4, identity=b"upstream-only")]
    frames.append(dnstap(3, qid=904))  # resolver-side from a client-side sender: not an event
    broken = dnstap_pb2.Dnstap.FromString(dnstap(6, "cut.shop.test", qid=905))
    broken.message.response_message = broken.message.response_message[:-2]
    frames += [dnstap(5, "cut.shop.test", qid=905), broken.SerializeToString()]
    frames += [b"\xff\xfegarbage", dnstap(5)[:-10]]
    fast_events, fast_st = run(tmp_path / "a", tenant_map, frames, batched=True)
    slow_events, slow_st = run(tmp_path / "b", tenant_map, frames, batched=False)
    assert fast_events == slow_events
    assert fast_st == slow_st
    assert fast_st["frames"] == len(frames) and fast_st["decode_errors"] == 2
    assert fast_st["pairing"]["late_queries"] == 1 and fast_st["pairing"]["retransmits"] == 1
    assert fast_st["wire_errors"] == 1 and fast_st["upstream_ignored"] == 1
    # 40 queries, orphan + late one, retransmission, dnsdist, auth, AAAA, anonymous,
    # upstream-only sender, the cut answer
    assert len(fast_events) == fast_st["events_built"] == 40 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 1
    assert any(b'"answers":["AAAA 2001:db8::1"]' in v for _, v in fast_events)


def test_identity_change_reaches_the_fast_path(tmp_path: Path, tenant_map: Path, write_map,
                                               dnstap) -> None:
    svc = build(Settings(home=tmp_path), MemoryBus(), listen=[f"unix:{tmp_path}/t.sock"],
                tenant_map=str(tenant_map), name="t")
    svc.identity.set_static(load_static_map(tenant_map))
    rec = Recorder()
    svc.wire(rec)  # type: ignore[arg-type]
    svc.on_frames([dnstap(5, qid=1), dnstap(6, qid=1)], Conn())  # type: ignore[arg-type]
    svc.identity.set_static(load_static_map(write_map(
        "clients:\n  - {cidr: 127.0.0.0/8, tenant: other, namespace: other-ns}\n")))
    svc.on_frames([dnstap(5, qid=2), dnstap(6, qid=2)], Conn())  # type: ignore[arg-type]
    assert [k for k, _ in rec.events] == [b"shop", b"other"]
    assert b'"namespace":"other-ns"' in rec.events[1][1]
