"""Checkpoints are data, never code (issue #11): they used to be pickled into the worker's
changelog topic, so anyone able to write that topic could run code in the worker."""

from __future__ import annotations

import logging
import pathlib
import pickle
from collections import deque

import lz4.frame
import msgspec
from streams_helpers import T0, make_logic

from dnsflow.streams import checkpoint
from dnsflow.streams.checkpoint import FORMAT, VERSION, read_meta, restore, snapshot
from dnsflow.streams.detectors import registered


class _Evil:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this calls Path.touch(marker)
        return (pathlib.Path.touch, (self.marker,))


def _populated_logic(ev, lt):
    logic = make_logic(auto_response={"enabled": True},
                       detectors={"new_domain": {"warmup_s": 60}})
    events, _ = lt.scenario(minutes=12, benign_clients=12, infected_per_family=2,
                            tunnels_per_tool=2)
    events = list(events)
    events += [ev(T0 + 690_000_000 + i * 500_000, "payments", "10.0.2.99",
                  f"svc{i}.shop.svc.cluster.local", rcode="NXDOMAIN", decision="deny",
                  rule="isolation") for i in range(12)]
    events += [ev(T0 + i * 1_000_000, "payments", "10.0.2.5", f"n{i % 7}.example.org")
               for i in range(200)]
    for e in sorted(events, key=lambda e: e["ts"]):  # state left open at the end
        logic.process(e)
    for i in range(3):  # the edge's dropped egress attempts (unresolved_egress)
        logic.detectors["unresolved_egress"].observe_egress({  # type: ignore[attr-defined]
            "ts": logic.max_ts, "kind": "drop", "tenant": "payments", "client_ip": "10.0.2.5",
            "dst_ip": f"203.0.113.{i}", "port": 443, "protocol": "tcp"})
    logic.drain()
    return logic


def _same(a, b, path="state"):
    """Deep equality by type, value and (for state classes) every field."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys"
        for k in a:
            _same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple, deque)):
        assert len(a) == len(b), f"{path}: length"
        if isinstance(a, deque):
            assert a.maxlen == b.maxlen, f"{path}: maxlen"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif type(a).__module__.startswith("dnsflow.streams"):
        for f in checkpoint._fields(type(a)) or tuple(vars(a)):
            assert hasattr(a, f) == hasattr(b, f), f"{path}.{f}"
            if hasattr(a, f):
                _same(getattr(a, f), getattr(b, f), f"{path}.{f}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_every_detectors_state_round_trips(ev, lt):
    logic = _populated_logic(ev, lt)
    tenants = set(logic.tmax)
    assert list(logic.detectors) == [c.kind for c in registered()]  # every one enabled
    for kind, det in logic.detectors.items():
        state = det.snapshot(tenants)
        assert state and all(state.values()), f"test traffic leaves {kind} state empty"
    data = snapshot(logic, meta={"partition": 3, "offset": 41})
    assert b"pickle" not in data and read_meta(data) == {"partition": 3, "offset": 41}
    doc = msgspec.msgpack.decode(lz4.frame.decompress(data))
    assert (doc["format"], doc["v"]) == (FORMAT, VERSION)
    fresh = make_logic(auto_response={"enabled": True},
                       detectors={"new_domain": {"warmup_s": 60}})
    assert restore(fresh, [data]) == 1
    for kind, det in logic.detectors.items():
        _same(det.snapshot(tenants), fresh.detectors[kind].snapshot(tenants), kind)
        for attr, value in vars(det).items():  # the live state itself, not only its data
            if isinstance(value, dict):
                _same(value, getattr(fresh.detectors[kind], attr), f"{kind}.{attr}")
    _same(checkpoint.split(logic, logic.tmax), checkpoint.split(fresh, fresh.tmax))


def test_a_pickled_checkpoint_is_never_executed(tmp_path, caplog, ev, lt):
    marker = tmp_path / "pwned"
    evil = lz4.frame.compress(pickle.dumps(_Evil(marker)))
    pickle.loads(pickle.dumps(_Evil(tmp_path / "probe")))  # the payload does run if unpickled
    assert (tmp_path / "probe").exists()
    logic = make_logic()
    caplog.set_level(logging.ERROR, logger="dnsflow.streams.checkpoint")
    assert restore(logic, [evil]) == 0
    assert read_meta(evil) == {}
    assert not marker.exists()
    assert any("checkpoint refused" in r.getMessage() for r in caplog.records
               if r.name == "dnsflow.streams.checkpoint")


def test_other_versions_and_garbage_are_refused_and_the_rest_restored(caplog, ev, lt):
    good = snapshot(_populated_logic(ev, lt))
    other = lz4.frame.compress(msgspec.msgpack.encode({"format": FORMAT, "v": VERSION + 1,
                                                      "state": {}}))
    bad_class = lz4.frame.compress(msgspec.msgpack.encode(
        {"format": FORMAT, "v": VERSION, "state": {"\x00": ["os.system", {"cmd": "true"}]}}))
    caplog.set_level(logging.ERROR, logger="dnsflow.streams.checkpoint")
    logic = make_logic()
    assert restore(logic, [b"garbage", other, bad_class, good]) == 1
    msgs = [r.getMessage() for r in caplog.records if r.name == "dnsflow.streams.checkpoint"]
    assert len(msgs) == 3
    assert "version 2" in msgs[1] and "unknown tagged value 'os.system'" in msgs[2]
    assert logic.events > 0  # the good one was merged; the worker keeps going


def test_a_malformed_detector_part_refuses_the_whole_checkpoint(caplog, ev, lt):
    """Detector state is data each detector checks: a bad part is refused before anything of
    the checkpoint is merged, and old (version 1) checkpoints are refused, not misread."""
    good = checkpoint.load(snapshot(_populated_logic(ev, lt)))
    good["detectors"]["tunneling"] = {"pairs": [[("t", "c", "r"), [1, 2]]]}  # 2 of 14 fields
    doc = {"format": FORMAT, "v": VERSION, "state": checkpoint._data(good)}
    bad = lz4.frame.compress(msgspec.msgpack.encode(doc))
    old = lz4.frame.compress(msgspec.msgpack.encode({"format": FORMAT, "v": 1, "state": {}}))
    caplog.set_level(logging.ERROR, logger="dnsflow.streams.checkpoint")
    logic = make_logic()
    assert restore(logic, [bad, old]) == 0
    assert logic.events == 0 and not logic.tmax
    assert all(not any(d.snapshot(set(good["tmax"])).values())
               for d in logic.detectors.values())
    msgs = [r.getMessage() for r in caplog.records if r.name == "dnsflow.streams.checkpoint"]
    assert "malformed tunneling state" in msgs[0] and "version 1" in msgs[1]
