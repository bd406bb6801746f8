"""The faust-streaming driver: the same ``StreamLogic`` wired to Kafka by a faust agent.

* ``<prefix>events`` is delivered a whole fetched batch at a time (``streams.faust_batch``:
  faust's per-record path costs ~70 µs a record) as raw bytes, so a malformed record reaches
  our own decoder and goes to the DLQ with partition, offset and reason, and the worker goes
  on;
* outputs go to the telemetry/anomalies/alerts topics and auto-denies to the policies topic;
* a table (``<group>-state``, backed by a changelog topic co-partitioned with the events)
  holds one checkpoint per events partition (``streams.checkpoint``: open windows, detector
  state, incidents and auto-denies of that partition's tenants), written when the watermark
  moves and at most ``streams.checkpoint_s`` after any input, so a restarted or rebalanced worker
  resumes the windows of exactly the partitions it owns (a crash loses at most that much).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson
from faust.types import TP

from dnsflow.dlq import dlq_record
from dnsflow.schema import RecordError, now_us
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from streams.checkpoint import forget, read_meta, restore, snapshot
from streams.checkpoint_records import assemble, checkpoint_key, to_records
from streams.clock import PartitionClock
from streams.event_decode import decode, decode_fast
from streams.faust_batch import BatchApp, Row
from streams.service import build_logic, idle_watermark

log = logging.getLogger("streams.faust")


def owned_checkpoints(table: Any, partitions: set[int]) -> dict[int, bytes]:
    """The checkpoints of ``partitions`` in the worker's table (which also holds standby
    copies of other workers' partitions), by partition."""
    return assemble(list(table.items()), partitions)


def _ts(ev: dict[str, Any]) -> int:
    return ev["ts"]


def make_app(settings: Settings, *, batch_size: int = 5000, partitions: int = 6) -> faust.App:
    """The faust app for ``settings`` (Kafka bootstrap in ``settings.kafka``).

    ``batch_size`` bounds the records of one fetch, i.e. of one call into the logic.
    """
    assert settings.kafka, "the faust worker needs a Kafka bootstrap"
    logic = build_logic(settings, auto_watermark=False)
    clock = PartitionClock(logic.grace)
    cfg = logic.cfg
    topics = Topics(settings.topic_prefix)
    # The app id names the consumer group and the changelog topics: keep it under the prefix.
    app = BatchApp(
        f"{settings.topic_prefix}{cfg.group}",
        broker=[f"kafka://{b.strip()}" for b in settings.kafka.split(",")],
        store="memory://",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=True,
        topic_disable_leader=True,
        producer_acks=1,
        broker_commit_interval=1.0,
        topic_partitions=partitions,
        broker_max_poll_records=batch_size,
        consumer_max_fetch_size=8 * 1024 * 1024,  # per partition: fewer fetch stalls
        producer_linger_ms=5,
        # a killed worker's partitions move after 10 s, not faust's default 60 s (heartbeats
        # come from the consumer thread, so a long batch does not miss them)
        broker_session_timeout=10.0,
    )
    # the contract topics exist already (streams.cli creates the missing ones as the topic
    # table says: a compacted policies topic, events partitions): faust must not create them
    events = app.topic(topics.events, key_type=bytes, value_type=bytes)
    out = {name: app.topic(topics.name(name), key_type=bytes, value_type=bytes)
           for name in ("telemetry", "anomalies", "alerts", "policies", "dlq")}
    # Co-partitioned with the events topic: one checkpoint per events partition, under the
    # key "logic:<partition>"; on restart the checkpoints of the owned partitions are merged.
    state = app.Table(f"{cfg.group}-state", default=None, partitions=partitions,
                      key_type=str, value_type=bytes)
    app.streams_logic = logic  # type: ignore[attr-defined]
    stats = {"dlq": 0, "checkpoints": 0, "duplicates": 0}
    restored: set[int] = set()   # events partitions whose checkpoint was resumed
    owner: dict[str, int] = {}   # tenant -> events partition (events are keyed by tenant)
    touched: set[int] = set()    # partitions with input since the last checkpoint
    newest: dict[int, int] = {}  # newest event time per partition in the current batch
    done: dict[int, int] = {}    # last offset per partition included in the logic's state
    ckpt_at = [0.0]
    last_input = [time.monotonic()]
    app.streams_stats = stats  # type: ignore[attr-defined]
    topic_of = {"telemetry": topics.telemetry, "anomaly": topics.anomalies,
                "alert": topics.alerts}

    async def publish() -> None:
        """Outputs straight to the producer: faust's Topic.send machinery costs ~50 µs a
        record, and closing a window emits one record per tenant and window."""
        send = app.producer.send
        for o in logic.drain():
            if o.type == "policy_update":
                if o.record is not None:
                    await send(topics.policies, o.record[0], o.record[1], None, None, None)
                continue
            await send(topic_of[o.type], o.key.encode(), orjson.dumps(o.value), None, None, None)

    async def process(topic: str, rows: list[Row]) -> None:
        """One fetched batch of events (all partitions this worker reads), in offset order
        per partition."""
        last_input[0] = time.monotonic()
        parts = {row[0] for row in rows}
        if not parts <= restored:
            resume(parts - restored)
        good: list[dict[str, Any]] = []
        not_after = now_us() + int(cfg.max_future_s * 1_000_000)
        for part, offset, key, value in rows:
            if offset <= done.get(part, -1):
                # already in the state: re-delivered around start-up, restarts and rebalances
                stats["duplicates"] += 1
                continue
            done[part] = offset
            touched.add(part)  # even a dead-lettered record must be checkpointed past
            ev = decode_fast(value) if value else None
            if ev is None or ev["ts"] > not_after:
                try:  # slow path: normalise, or find the reason for the DLQ
                    ev = decode(value or b"", f"{topic}[{part}]@{offset}", not_after)
                except RecordError as exc:
                    stats["dlq"] += 1
                    await out["dlq"].send(key=topic.encode(), value=dlq_record(
                        topic, part, offset, str(exc), value, key, component="streams"))
                    continue
            good.append(ev)
            owner[ev["tenant"]] = part
            if ev["ts"] > newest.get(part, -(1 << 62)):
                newest[part] = ev["ts"]
        # the batch spans partitions (tenants): interleave them in event time
        good.sort(key=_ts)
        logic.process_many(good)
        for part, ts in newest.items():
            clock.observe(part, ts)
        newest.clear()
        wm = clock.watermark(lagging=lagging())
        if wm is not None:
            logic.advance_to(wm)
        await publish()
        # The state is written every checkpoint_s (here under load, by the timer otherwise);
        # it costs time in proportion to the state, not to the batch.
        if time.monotonic() - ckpt_at[0] >= cfg.checkpoint_s:
            checkpoint()

    def resume(parts: set[int]) -> None:
        """Tables are recovered before input flows: resume these partitions' checkpoints
        (at start-up into the fresh logic, after a rebalance into the running one)."""
        found = owned_checkpoints(state, parts)
        # a logic that has run keeps its own clock (an eager rebalance revokes everything)
        restore(logic, found.values(), running=bool(restored) or logic.events > 0)
        for part, data in found.items():  # offsets the restored state already includes
            done[part] = read_meta(data).get("offset", -1)
        if found:
            log.warning("streams: resumed windows from %d partition checkpoint(s) "
                        "(partitions %s, watermark %s)", len(found), sorted(found),
                        logic.watermark)
        restored.update(parts)

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: Any, **_: Any) -> None:
        """The table is recovered and input is about to flow: resume every owned partition,
        also those with no new events (their windows must still close, denies expire)."""
        new = assigned() - restored
        if new:
            resume(new)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **_: Any) -> None:
        """A graceful stop checkpoints everything processed (faust flushes the producer and
        commits afterwards), so the next worker repeats nothing."""
        checkpoint(allowed=set(touched))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        """Checkpoint the partitions that leave, then forget their tenants: their new owner
        resumes them, and closing their windows here too would publish them twice."""
        parts = {tp.partition for tp in revoked if tp.topic == topics.events}
        if not parts:
            return
        checkpoint(allowed=parts)
        await app.producer.flush()
        gone = {t for t, p in owner.items() if p in parts}
        forget(logic, gone)
        for t in gone:
            del owner[t]
        for part in parts:
            done.pop(part, None)
            restored.discard(part)
            clock.newest.pop(part, None)
            clock.seen.pop(part, None)

    app.batch_topic(events, process)

    def lagging() -> set[int]:
        """Events partitions of this worker with unread records (they hold time back)."""
        out: set[int] = set()
        try:
            for tp in app.consumer.assignment():
                if tp.topic != topics.events:
                    continue
                hw = app.consumer.highwater(tp)
                if hw is not None and hw > done.get(tp.partition, -1) + 1:
                    out.add(tp.partition)
        except Exception:  # not assigned yet, or the consumer is restarting
            return set()
        return out

    def checkpoint(allowed: set[int] | None = None) -> None:
        """Write the state of each touched partition's tenants to that changelog partition,
        then let the consumer commit the events offsets that state includes.

        Offsets are committed only as far as a written checkpoint reaches, so a restarted or
        rebalanced worker re-reads exactly the events its checkpoint lacks (a crash repeats
        at most ``checkpoint_s`` of work and loses none). There is no "current event" outside
        an agent, so the partition is given explicitly.
        """
        ckpt_at[0] = time.monotonic()
        owned = assigned() if allowed is None else allowed
        for part in sorted(touched & owned):
            tenants = {t for t, p in owner.items() if p == part}
            offset = done.get(part, -1)
            value = snapshot(logic, tenants, {"partition": part, "offset": offset})
            stats["checkpoints"] += 1
            # a generation unique across restarts: a crash between pieces and manifest must
            # not leave the old manifest naming half-overwritten pieces
            records = to_records(part, value, time.time_ns(),
                                 state.data.get(checkpoint_key(part)))
            for key, piece in records:
                if piece is None:
                    state.data.pop(key, None)
                else:
                    state.data[key] = piece
                state.send_changelog(part, key, piece)
            if offset >= 0:
                app.consumer.mark_committable(TP(topics.events, part), offset)
            log.debug("streams: checkpoint partition %d (%d bytes in %d records, %d events "
                      "so far)", part, len(value), len(records), logic.events)
        if allowed is None:
            touched.clear()  # the rest were revoked: their new owner checkpoints them
        else:
            touched.difference_update(allowed)

    def assigned() -> set[int]:
        """The events partitions this worker owns now."""
        try:
            return {tp.partition for tp in app.consumer.assignment()
                    if tp.topic == topics.events}
        except Exception:  # not assigned yet, or the consumer is restarting
            return set()

    @app.timer(interval=cfg.checkpoint_s)
    async def periodic_checkpoint() -> None:
        # between batches the warm-up may end: let the partition clock close windows
        wm = clock.watermark(lagging=lagging())
        if wm is not None and logic.advance_to(wm):
            await publish()
            touched.update(set(owner.values()))
        checkpoint()

    @app.timer(interval=max(0.5, cfg.idle_advance_s))
    async def idle_advance() -> None:
        # no input for a while (wall clock): let the wall clock move event time so windows
        # close and denies expire even when nobody queries
        if time.monotonic() - last_input[0] < cfg.idle_advance_s:
            return
        if logic.advance_to(idle_watermark(logic, time.monotonic() - last_input[0])):
            await publish()
            touched.update(set(owner.values()))
            checkpoint()

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("streams: events=%d late_dropped=%d duplicates=%d dlq=%d checkpoints=%d "
                 "watermark=%s emitted=%s", logic.events, logic.late_dropped,
                 stats["duplicates"], stats["dlq"], stats["checkpoints"], logic.watermark,
                 logic.emitted)

    return app
