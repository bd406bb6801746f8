"""Query/response pairing: one event per query, whatever the sender logs.

A query waits (at most ``timeout`` seconds, at most ``max_pending`` of them) for the response
with the same key (:meth:`TapMessage.key`: sender, DNS ID, client address and port,
question). Paired: one event with the latency between the sender's two timestamps. A query
that waited too long, or was pushed out of a full table, is still one event (no response).
A response without a waiting query is one event too; its key is remembered for ``timeout``
so that its query, should it arrive late (two loggers on two connections), is not counted
a second time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from dnsflow.edge.tap.decode import TapMessage, decode

Key = tuple[str, int, bytes, int, bytes]
Out = Callable[[str, TapMessage | None, TapMessage | None], None]
# a waiting query: (arrival on ``clock``, its query time in µs, the message or, from the
# fast path, its raw dnstap frame, decoded only if it has to be an event on its own)
Entry = tuple[float, int, "TapMessage | bytes"]


def _message(q: TapMessage | bytes) -> TapMessage | None:
    return decode(q) if type(q) is bytes else q  # type: ignore[arg-type]


class Pairer:
    """``out(edge, query, response)`` is called once per event; either side may be None."""

    def __init__(self, out: Out, *, timeout: float = 2.0, max_pending: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.timeout = timeout
        self.max_pending = max_pending
        self.clock = clock
        # waiting queries in arrival order (a dict keeps insertion order): the oldest is
        # first, so expiry and eviction read from the front and stop at the first young
        # one. No second queue of (time, key): it kept every key alive for ``timeout``
        # after its pair, and cost an append, a pop and a lookup per query.
        self.pending: dict[Key, Entry] = {}
        self._orphans: OrderedDict[Key, float] = OrderedDict()
        self.paired = 0
        self.unpaired = 0       # queries emitted without a response (timeout or eviction)
        self.evicted = 0        # of those, pushed out of a full table
        self.orphan_responses = 0
        self.late_queries = 0   # queries arriving after their response was emitted alone
        self.retransmits = 0    # a second query with a waiting query's key

    def add(self, edge: str, m: TapMessage) -> None:
        key = m.key(edge)
        now = self.clock()
        if m.response:
            entry = self.pending.pop(key, None)
            if entry is not None:
                self.paired += 1
                self.out(edge, _message(entry[2]), m)
                return
            self.orphan_responses += 1
            orphans = self._orphans
            if len(orphans) >= self.max_pending:
                orphans.popitem(last=False)
            orphans[key] = now
            self.out(edge, None, m)
            return
        if self._orphans and self._orphans.pop(key, None) is not None:
            self.late_queries += 1
            return
        old = self.pending.pop(key, None)  # re-inserted below: it is the newest now
        if old is not None:  # the client asked again with the same ID and port
            self.retransmits += 1
            self.unpaired += 1
            self.out(edge, _message(old[2]), None)
        elif len(self.pending) >= self.max_pending:
            self._evict_oldest()
        self.pending[key] = (now, m.query_us, m)

    def _evict_oldest(self) -> None:
        pending = self.pending
        if pending:
            key = next(iter(pending))
            entry = pending.pop(key)
            self.unpaired += 1
            self.evicted += 1
            self.out(key[0], _message(entry[2]), None)

    def expire(self, now: float | None = None) -> int:
        """Emit the queries that waited longer than ``timeout``; returns how many."""
        now = self.clock() if now is None else now
        deadline = now - self.timeout
        pending = self.pending
        old: list[tuple[Key, Entry]] = []
        for item in pending.items():  # oldest first; stop at the first that may wait on
            if item[1][0] > deadline:
                break
            old.append(item)
        for key, _entry in old:
            del pending[key]
        n = len(old)
        self.unpaired += n
        for key, entry in old:
            self.out(key[0], _message(entry[2]), None)
        orphans = self._orphans
        while orphans:
            key, t = next(iter(orphans.items()))
            if t > deadline:
                break
            orphans.popitem(last=False)
        return n

    def flush(self) -> int:
        """Emit every waiting query (shutdown): nothing received is lost."""
        items = list(self.pending.items())
        self.pending.clear()
        n = len(items)
        self.unpaired += n
        for key, (_t, _us, m) in items:
            self.out(key[0], _message(m), None)
        return n

    def status(self) -> dict[str, int]:
        return {"pending": len(self.pending), "paired": self.paired, "unpaired": self.unpaired,
                "evicted": self.evicted, "orphan_responses": self.orphan_responses,
                "late_queries": self.late_queries, "retransmits": self.retransmits}
