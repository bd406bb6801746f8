"""The faust-streaming driver: the same ``StreamLogic`` wired to Kafka by a faust agent.

* one agent reads ``<prefix>events`` (raw bytes, so a malformed record reaches our own
  decoder and goes to the DLQ with partition, offset and reason, and the worker goes on);
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

from dnsflow.schema import RecordError, now_us
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from streams.checkpoint import read_meta, restore, snapshot
from streams.clock import PartitionClock
from streams.records import decode, decode_fast, dlq_record
from streams.service import build_logic, idle_watermark

log = logging.getLogger("streams.faust")

STATE_KEY = "logic"
MAX_CHECKPOINT = 900_000  # bytes; Kafka's default max.message.bytes is 1 MiB


def owned_checkpoints(table: Any) -> list[bytes]:
    """The checkpoints in this worker's table: those of the partitions it was assigned."""
    return [v for k, v in list(table.items()) if str(k).startswith(STATE_KEY) and v]


def _ts(ev: dict[str, Any]) -> int:
    return ev["ts"]


def make_app(settings: Settings, *, batch_size: int = 2000, flush_s: float = 0.2,
             partitions: int = 6) -> faust.App:
    """The faust app for ``settings`` (Kafka bootstrap in ``settings.kafka``)."""
    assert settings.kafka, "the faust worker needs a Kafka bootstrap"
    logic = build_logic(settings, auto_watermark=False)
    clock = PartitionClock(logic.grace)
    cfg = logic.cfg
    topics = Topics(settings.topic_prefix)
    # The app id names the consumer group and the changelog topics: keep it under the prefix.
    app = faust.App(
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
        broker_commit_every=batch_size,
        broker_commit_interval=1.0,
        topic_partitions=partitions,
        stream_buffer_maxsize=16_384,
        broker_max_poll_records=5000,
        stream_wait_empty=False,
        producer_linger_ms=5,
    )
    events = app.topic(topics.events, key_type=bytes, value_type=bytes)
    out = {name: app.topic(topics.name(name), key_type=bytes, value_type=bytes)
           for name in ("telemetry", "anomalies", "alerts", "policies", "dlq")}
    # Co-partitioned with the events topic: one checkpoint per events partition, under the
    # key "logic:<partition>"; on restart the checkpoints of the owned partitions are merged.
    state = app.Table(f"{cfg.group}-state", default=None, partitions=partitions,
                      key_type=str, value_type=bytes)
    app.streams_logic = logic  # type: ignore[attr-defined]
    stats = {"dlq": 0, "restored": False, "checkpoints": 0, "duplicates": 0,
             "checkpoints_skipped": 0}
    owner: dict[str, int] = {}   # tenant -> events partition (events are keyed by tenant)
    touched: set[int] = set()    # partitions with input since the last checkpoint
    newest: dict[int, int] = {}  # newest event time per partition in the current batch
    done: dict[int, int] = {}    # last offset per partition included in the logic's state
    ckpt_at = [0.0]
    last_input = [time.monotonic()]
    app.streams_stats = stats  # type: ignore[attr-defined]
    topic_of = {"telemetry": "telemetry", "anomaly": "anomalies", "alert": "alerts"}

    async def publish() -> None:
        for o in logic.drain():
            if o.type == "policy_update":
                if o.record is not None:
                    await out["policies"].send(key=o.record[0], value=o.record[1])
                continue
            await out[topic_of[o.type]].send(key=o.key.encode(), value=orjson.dumps(o.value))

    @app.agent(events)
    async def process(stream: Any) -> None:
        last_wm = logic.watermark
        async for batch in stream.take_events(batch_size, within=flush_s):
            last_input[0] = time.monotonic()
            if not stats["restored"]:
                # tables are recovered before the stream yields: resume the checkpoints
                owned = owned_checkpoints(state)
                found = restore(logic, owned)
                for data in owned:  # offsets the restored state already includes
                    meta = read_meta(data)
                    if "partition" in meta:
                        done[meta["partition"]] = meta["offset"]
                if found:
                    log.warning("streams: resumed windows from %d partition checkpoint(s) "
                                "(watermark %s)", found, logic.watermark)
                stats["restored"] = True
                last_wm = logic.watermark
            good: list[dict[str, Any]] = []
            not_after = now_us() + int(cfg.max_future_s * 1_000_000)
            for event in batch:
                msg = event.message
                if msg.offset <= done.get(msg.partition, -1):
                    # already in the state: faust re-delivers around start-up and restarts
                    stats["duplicates"] += 1
                    continue
                done[msg.partition] = msg.offset
                ev = decode_fast(event.value) if event.value else None
                if ev is None or ev["ts"] > not_after:
                    try:  # slow path: normalise, or find the reason for the DLQ
                        ev = decode(event.value or b"",
                                    f"{msg.topic}[{msg.partition}]@{msg.offset}", not_after)
                    except RecordError as exc:
                        stats["dlq"] += 1
                        await out["dlq"].send(key=msg.topic.encode(), value=dlq_record(
                            msg.topic, msg.partition, msg.offset, str(exc), event.value,
                            event.key))
                        continue
                good.append(ev)
                owner[ev["tenant"]] = msg.partition
                touched.add(msg.partition)
                if ev["ts"] > newest.get(msg.partition, -(1 << 62)):
                    newest[msg.partition] = ev["ts"]
            # the batch spans partitions (tenants): interleave them in event time
            good.sort(key=_ts)
            for ev in good:
                logic.process(ev)
            for part, ts in newest.items():
                clock.observe(part, ts)
            newest.clear()
            wm = clock.watermark(lagging=lagging())
            if wm is not None:
                logic.advance_to(wm)
            await publish()
            # Checkpoint when windows closed, when the input is drained (a short batch: cheap,
            # and what a graceful stop needs), and otherwise at most every checkpoint_s.
            now = time.monotonic()
            if (logic.watermark != last_wm or len(batch) < batch_size
                    or now - ckpt_at[0] >= cfg.checkpoint_s):
                last_wm = logic.watermark
                ckpt_at[0] = now
                checkpoint()

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

    def checkpoint() -> None:
        """Write the state of each touched partition's tenants to that changelog partition.

        take_events has no "current event", so the partition is given explicitly.
        """
        for part in sorted(touched):
            tenants = {t for t, p in owner.items() if p == part}
            meta = {"partition": part, "offset": done.get(part, -1)}
            key, value = f"{STATE_KEY}:{part}", snapshot(logic, tenants, meta)
            if len(value) > MAX_CHECKPOINT:
                # Kafka's default record limit: skip rather than crash the producer; a restart
                # then resumes from this partition's previous checkpoint
                stats["checkpoints_skipped"] += 1
                log.warning("streams: checkpoint of partition %d is %d bytes, over %d: "
                            "skipped", part, len(value), MAX_CHECKPOINT)
                continue
            state.data[key] = value
            state.send_changelog(part, key, value)
            stats["checkpoints"] += 1
            log.debug("streams: checkpoint partition %d (%d bytes, %d events so far)", part,
                      len(value), logic.events)
        touched.clear()

    @app.timer(interval=cfg.checkpoint_s)
    async def periodic_checkpoint() -> None:
        # between batches the warm-up may end: let the partition clock close windows
        wm = clock.watermark(lagging=lagging())
        if wm is not None and wm > logic.watermark:
            logic.advance_to(wm)
            await publish()
            touched.update(set(owner.values()))
        checkpoint()

    @app.timer(interval=max(0.5, cfg.idle_advance_s))
    async def idle_advance() -> None:
        # no input for a while (wall clock): let the wall clock move event time so windows
        # close and denies expire even when nobody queries
        if time.monotonic() - last_input[0] < cfg.idle_advance_s:
            return
        before = logic.watermark
        logic.advance_to(idle_watermark(logic, time.monotonic() - last_input[0]))
        if logic.watermark != before:
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
