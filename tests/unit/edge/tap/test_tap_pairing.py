"""Pairing: one event per query, whether or not its response came."""

from __future__ import annotations

from dnsflow.edge.tap.decode import decode
from dnsflow.edge.tap.pairing import Pairer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def setup(**kw):
    out: list = []
    clock = Clock()
    p = Pairer(lambda edge, q, r: out.append((edge, q, r)), clock=clock, **kw)
    return p, out, clock


def test_query_and_response_make_one_pair(dnstap) -> None:
    p, out, _ = setup()
    p.add("e", decode(dnstap(5, qid=1)))
    p.add("e", decode(dnstap(5, qid=2)))
    p.add("e", decode(dnstap(6, qid=2)))
    p.add("e", decode(dnstap(6, qid=1)))
    assert [(q.qid, r.qid) for _, q, r in out] == [(2, 2), (1, 1)]
    assert p.status()["paired"] == 2 and p.status()["pending"] == 0


def test_key_parts_keep_clients_apart(dnstap) -> None:
    p, out, _ = setup()
    p.add("e", decode(dnstap(5, client="127.0.0.2")))
    p.add("e", decode(dnstap(5, client="127.0.0.3")))
    p.add("other", decode(dnstap(6, client="127.0.0.2")))  # another sender: not this one's
    p.add("e", decode(dnstap(6, client="127.0.0.3", port=40001)))  # another port
    p.add("e", decode(dnstap(6, "other.test", client="127.0.0.3")))  # another question
    assert [(e, q is None, r is None) for e, q, r in out] == [
        ("other", True, False), ("e", True, False), ("e", True, False)]
    p.add("e", decode(dnstap(6, client="127.0.0.3")))
    assert out[-1][1].client_ip == out[-1][2].client_ip == "127.0.0.3"


def test_unanswered_query_is_emitted_after_the_timeout(dnstap) -> None:
    p, out, clock = setup(timeout=2.0)
    p.add("e", decode(dnstap(5)))
    clock.t += 1.9
    assert p.expire() == 0 and not out
    clock.t += 0.2
    assert p.expire() == 1
    assert out[0][1] is not None and out[0][2] is None
    p.add("e", decode(dnstap(6)))  # the response, too late: an event of its own
    assert out[-1][1] is None and p.status()["unpaired"] == 1
    assert p.status()["orphan_responses"] == 1


def test_full_table_emits_the_oldest(dnstap) -> None:
    p, out, _ = setup(max_pending=3)
    for i in range(5):
        p.add("e", decode(dnstap(5, qid=i)))
    assert [q.qid for _, q, _ in out] == [0, 1]
    assert p.status()["evicted"] == 2 and p.status()["pending"] == 3
    assert p.flush() == 3 and len(out) == 5


def test_response_first_then_its_query_is_one_event(dnstap) -> None:
    p, out, _ = setup()
    p.add("e", decode(dnstap(6)))
    p.add("e", decode(dnstap(5)))
    assert len(out) == 1 and p.status()["late_queries"] == 1 and not p.pending


def test_retransmitted_query_does_not_hide_the_first(dnstap) -> None:
    p, out, _ = setup()
    p.add("e", decode(dnstap(5)))
    p.add("e", decode(dnstap(5)))
    p.add("e", decode(dnstap(6)))
    assert [(q is None, r is None) for _, q, r in out] == [(False, True), (False, False)]


def test_expiry_follows_arrival_across_pairs_and_retransmissions(dnstap) -> None:
    """Waiting queries expire oldest first; a pair taken from the middle and a
    retransmission (the newest wait now) do not disturb that order."""
    p, out, clock = setup(timeout=2.0)
    for qid in (1, 2, 3):
        p.add("e", decode(dnstap(5, qid=qid)))
    clock.t += 1.0
    p.add("e", decode(dnstap(5, qid=4)))
    p.add("e", decode(dnstap(5, qid=1)))   # asked again: the first is an event now
    p.add("e", decode(dnstap(6, qid=2)))   # paired out of the middle
    assert [(q.qid, r is None) for _, q, r in out] == [(1, True), (2, False)]
    clock.t += 1.05                        # 2.05 s after 1-3, 1.05 s after 4 and 1 again
    assert p.expire() == 1 and out[-1][1].qid == 3
    clock.t += 1.0
    assert p.expire() == 2
    assert [q.qid for _, q, _ in out[-2:]] == [4, 1]
    assert p.status()["pending"] == 0 and p.status()["unpaired"] == 4


def test_full_table_evicts_by_arrival_after_a_retransmission(dnstap) -> None:
    p, out, _ = setup(max_pending=3)
    for qid in (1, 2, 3):
        p.add("e", decode(dnstap(5, qid=qid)))
    p.add("e", decode(dnstap(5, qid=1)))   # 1 is the newest now: 2 is the oldest
    p.add("e", decode(dnstap(5, qid=5)))
    assert [q.qid for _, q, _ in out] == [1, 2]
    assert sorted(k[1] for k in p.pending) == [1, 3, 5]
