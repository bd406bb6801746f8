"""process_many (the batch entry point the drivers use) gives exactly what process gives."""

import random
import zlib

from streams_helpers import make_logic


def traffic(lt):
    """12 minutes over 3 tenants, a few events delayed (within grace and beyond it)."""
    events, _ = lt.scenario(minutes=12, benign_clients=20, infected_per_family=2,
                            tunnels_per_tool=2)
    rng = random.Random(3)
    out = []
    for e in events:
        e = dict(e)
        e["tenant"] = e["namespace"] = f"t{zlib.crc32(e['client_ip'].encode()) % 3}"
        if rng.random() < 0.01:  # a late event: 2 s (still counted) or 40 s (dropped)
            e["ts"] -= rng.choice((2_000_000, 40_000_000))
        out.append(e)
    return out


def outputs(logic):
    # the policy record's value carries its wall-clock publish time: compare its key
    return [(o.type, o.key, o.value, o.record and o.record[0]) for o in logic.drain()]


def test_batches_of_any_size_match_one_event_at_a_time(lt):
    events = traffic(lt)
    one = make_logic(auto_response={"enabled": True, "min_severity": "medium"},
                     telemetry={"names_exact_cap": 100})
    expected = []
    for e in events:
        one.process(e)
        expected += outputs(one)
    one.flush()
    expected += outputs(one)
    assert one.late_dropped > 0
    assert {t for t, *_ in expected} == {"telemetry", "anomaly", "alert", "policy_update"}

    rng = random.Random(11)
    many = make_logic(auto_response={"enabled": True, "min_severity": "medium"},
                      telemetry={"names_exact_cap": 100})
    got = []
    i = 0
    while i < len(events):
        n = rng.choice((1, 7, 256, 5000))
        many.process_many(events[i:i + n])
        got += outputs(many)
        i += n
    many.flush()
    got += outputs(many)
    assert got == expected
    assert (many.events, many.late_dropped) == (one.events, one.late_dropped)
    assert many.status()["tenants"] == one.status()["tenants"]
