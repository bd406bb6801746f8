from streams_helpers import T0, make_logic, run

from dnsflow.streams.telemetry import latency_code, latency_value


def telemetry(outputs, window_s):
    return [o.value for o in outputs if o.type == "telemetry" and o.value["window_s"] == window_s]


def test_tumbling_windows_count_per_tenant(ev):
    logic = make_logic(windows=[10, 60])
    events = []
    for i in range(120):  # 2 minutes, one query per second per tenant
        ts = T0 + i * 1_000_000
        events.append(ev(ts, "shop", f"10.0.0.{i % 3}", "www.example.com",
                         rcode="NXDOMAIN" if i % 10 == 0 else "NOERROR", cache="hit"
                         if i % 2 else "miss", latency_us=1000 + i))
        events.append(ev(ts, "pay", "10.0.1.1", f"n{i % 7}.example.org", qtype="AAAA",
                         decision="deny" if i < 5 else "allow"))
    out = run(logic, events)
    ten = telemetry(out, 10.0)
    minute = telemetry(out, 60.0)
    assert len(ten) == 24 and len(minute) == 4
    shop = [t for t in minute if t["tenant"] == "shop"]
    assert [t["queries"] for t in shop] == [60, 60]
    assert shop[0]["rcode"] == {"NOERROR": 54, "NXDOMAIN": 6}
    assert shop[0]["cache_hit_ratio"] == 0.5
    assert shop[0]["distinct_clients"] == 3
    assert shop[0]["top_names"] == [["www.example.com", 60]]
    assert shop[0]["window_end"] - shop[0]["window_start"] == 60_000_000
    assert type(shop[0]["window_s"]) is int  # whole seconds, as the sink stores them
    pay = [t for t in minute if t["tenant"] == "pay"]
    assert pay[0]["decision"] == {"allow": 55, "deny": 5}
    assert pay[0]["qtype"] == {"AAAA": 60}
    assert pay[0]["distinct_names"] == 7
    # 1-minute windows are the sum of their 10-second panes
    assert sum(t["queries"] for t in ten if t["tenant"] == "pay") == 120


def test_latency_percentiles_within_stated_error(ev):
    logic = make_logic(windows=[10])
    events = [ev(T0 + i * 1000, "t", "c", "a.example.com", latency_us=(i + 1) * 100)
              for i in range(1000)]
    (t,) = telemetry(run(logic, events), 10.0)
    for q, exact in (("p50", 50_000), ("p95", 95_000), ("p99", 99_000)):
        assert abs(t["latency_us"][q] - exact) / exact < 0.035
    for lat in (0, 7, 31, 32, 999, 123_456, 10**7):
        assert abs(latency_value(latency_code(lat)) - lat) <= max(1, lat * 0.032)


def test_late_event_within_grace_counts_in_its_window(ev):
    logic = make_logic(windows=[10], grace_s=5)
    events = [ev(T0 + 1_000_000, "t", "c", "a.example.com"),
              ev(T0 + 12_000_000, "t", "c", "a.example.com")]
    for e in events:
        logic.process(e)
    logic.process(ev(T0 + 9_000_000, "t", "c", "late.example.com"))  # 3 s late: in grace
    logic.process(ev(T0 + 16_000_000, "t", "c", "a.example.com"))   # watermark passes 10 s
    logic.process(ev(T0 + 2_000_000, "t", "c", "too-late.example.com"))  # window closed
    logic.flush()
    first = telemetry(logic.drain(), 10.0)[0]
    assert first["window_start"] == T0 and first["queries"] == 2
    assert first["late_events"] == 1
    assert logic.late_dropped == 1


def test_window_closes_on_watermark_not_on_input_end(ev):
    logic = make_logic(windows=[10], grace_s=2)
    logic.process(ev(T0 + 1_000_000, "t", "c", "a.example.com"))
    logic.process(ev(T0 + 11_000_000, "t", "c", "a.example.com"))
    assert telemetry(logic.drain(), 10.0) == []  # watermark 9 s: still open
    logic.process(ev(T0 + 12_500_000, "t", "c", "a.example.com"))
    assert [t["queries"] for t in telemetry(logic.drain(), 10.0)] == [1]


def test_distinct_names_past_exact_cap_are_estimated(ev):
    logic = make_logic(windows=[10], telemetry={"names_exact_cap": 1000})
    events = [ev(T0 + i * 100, "t", "c", f"n{i}.example.com") for i in range(20_000)]
    (t,) = telemetry(run(logic, events), 10.0)
    assert abs(t["distinct_names"] - 20_000) / 20_000 < 0.05
    assert 0 < t["distinct_names_error"] < 0.02
