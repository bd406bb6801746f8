"""Garbage-collector settings for processes that move events in batches.

Python's cyclic collector runs a young-generation pass every 700 net allocations and, every
so often, a full pass over every live container. A batch worker allocates ~10^5 short-lived
containers per batch (reference counting frees them without the collector) while it holds a
large long-lived state (the stream logic's windows and detector tables, the sink's
dictionaries): the full passes over that state then cost more than the work itself.
Measured: the faust streams worker 15.4 -> 12.0 µs CPU per event; the sink's Kafka fetch
2.9 s -> 1.2 s per 400 k events.
"""

from __future__ import annotations

import gc


def tune_for_batches(gen0: int = 100_000) -> None:
    """Collect young objects every ``gen0`` allocations instead of 700, and move everything
    that exists at start-up (modules, models, configuration) out of the collector's way."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, 50, 100)
