"""The faust-streaming driver: :class:`FaustWorker`, the same ``StreamsPipeline`` as the
in-process driver (decode, DLQ, logic, clock, publish, alert webhooks, rule-file reload)
wired to Kafka by a faust app.

* ``<prefix>events`` is delivered a whole fetched batch at a time (``streams.faust_batch``:
  faust's per-record path costs ~70 µs a record) as raw bytes, so a malformed record reaches
  our own decoder and goes to the DLQ with partition, offset and reason, and the worker goes
  on;
* outputs go straight to the producer: telemetry/anomalies/alerts topics and auto-denies to
  the policies topic; alerts of rules with a webhook are posted, and the alert rule file is
  re-read every ``rules_check_s`` when it changed;
* a table (``<group>-state``, backed by a changelog topic co-partitioned with the events)
  holds one checkpoint per events partition (``streams.checkpoint``: open windows, detector
  state, incidents and auto-denies of that partition's tenants), written when the watermark
  moves and at most ``streams.checkpoint_s`` after any input, so a restarted or rebalanced worker
  resumes the windows of exactly the partitions it owns (a crash loses at most that much);
* ``<prefix>egress`` (the edge's dropped connection attempts, #17) is delivered the same way
  to ``unresolved_egress`` (``StreamsPipeline.handle_egress``) when that detector is enabled.
  Its offsets are committed only after the outputs are published. When the topic is
  co-partitioned with the events (same partition count: both are keyed by tenant, so faust
  assigns egress partition *i* with events partition *i*), the detector's state of those
  tenants is in partition *i*'s checkpoint and the egress offsets are committed with it, like
  the events; otherwise they are committed once the batch's outputs are published and the
  state of an open egress window is not carried over a restart (see :meth:`process_egress`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from dnsflow.lag import LagProbe
from dnsflow.ops import OpsServer, component_registry, registry_render, serve_ops
from dnsflow.settings import Settings
from dnsflow.streams import egress_input
from dnsflow.streams.checkpoint import forget, read_meta, restore, snapshot
from dnsflow.streams.checkpoint_records import assemble, checkpoint_key, to_records
from dnsflow.streams.faust_batch import BatchApp, Row
from dnsflow.streams.metrics import READY_MAX_LAG, StreamsCollector, StreamsProbe
from dnsflow.streams.pipeline import Record, StreamsPipeline
from dnsflow.topics import Topics

log = logging.getLogger("dnsflow.streams.faust")


def owned_checkpoints(table: Any, partitions: set[int]) -> dict[int, bytes]:
    """The checkpoints of ``partitions`` in the worker's table (which also holds standby
    copies of other workers' partitions), by partition."""
    return assemble(list(table.items()), partitions)


class FaustWorker:
    """The faust app around a :class:`~streams.pipeline.StreamsPipeline`: batch delivery of
    the events topic, the producer as the pipeline's way out, and per-partition checkpoints
    in a table (restarts, rebalances) with offsets committed only as far as they reach.

    ``batch_size`` bounds the records of one fetch, i.e. of one call into the logic.
    ``metrics_listen``: where ``/metrics`` ``/healthz`` ``/readyz`` are served (None: on
    loopback at the default port, "off": nowhere).
    """

    def __init__(self, settings: Settings, *, batch_size: int = 5000,
                 partitions: int = 6, rules_check_s: float = 2.0,
                 metrics_listen: str | None = None, ready_max_lag: int = READY_MAX_LAG,
                 lag_interval_s: float = 10.0) -> None:
        assert settings.kafka, "the faust worker needs a Kafka bootstrap"
        self.topics = topics = Topics(settings.topic_prefix)
        self.pipeline = StreamsPipeline(settings, topics, self._send,
                                        rules_check_s=rules_check_s, track_offsets=True)
        self.logic = self.pipeline.logic
        self.cfg = cfg = self.logic.cfg
        self.app = app = self._app(settings, batch_size, partitions)
        # Co-partitioned with the events topic: one checkpoint per events partition, under
        # the key "logic:<partition>"; on restart the checkpoints of the owned partitions are
        # merged.
        self.state = app.Table(f"{cfg.group}-state", default=None, partitions=partitions,
                               key_type=str, value_type=bytes)
        self.stats = {"checkpoints": 0}
        self.restored: set[int] = set()  # events partitions whose checkpoint was resumed
        self.ckpt_at = 0.0
        self.checkpointed_at = 0.0  # time.time() when the last checkpoint was written
        self.ticked_at = time.monotonic()  # the worker's timers and batches move this
        self.metrics_listen = metrics_listen
        from dnsflow.bus.kafka import KafkaBus  # admin calls only: never started

        self.lag = LagProbe(KafkaBus(settings.kafka, topics, create_topics=False).end_offsets,
                            [topics.events], self._positions, lag_interval_s)
        self.probe = StreamsProbe(self.pipeline.metrics_status, lambda: len(self.assigned()),
                                  lambda: self.ticked_at, self.lag,
                                  lambda: (self.stats["checkpoints"], self.checkpointed_at),
                                  ready_max_lag=ready_max_lag)
        self.ops: OpsServer | None = None
        # the contract topics exist already (streams.cli creates the missing ones as the
        # topic table says: a compacted policies topic, events partitions): faust must not
        # create them
        events = app.topic(topics.events, key_type=bytes, value_type=bytes)
        app.batch_topic(events, self.process)
        # the edge's dropped egress attempts, when unresolved_egress is enabled
        self.egress: str | None = None
        self.egress_copart: bool | None = None  # known once both partition counts are
        if egress_input.detector(self.logic) is not None:
            self.egress = topics.egress
            app.batch_topic(app.topic(topics.egress, key_type=bytes, value_type=bytes),
                            self.process_egress)
        app.on_rebalance_complete.connect(self.on_assigned)
        app.on_before_shutdown.connect(self.on_shutdown)
        app.on_partitions_revoked.connect(self.on_revoked)
        app.task(self.start_webhooks)
        app.task(self.start_ops)
        app.timer(interval=cfg.checkpoint_s)(self.periodic_checkpoint)
        app.timer(interval=max(0.5, cfg.idle_advance_s))(self.idle_advance)
        app.timer(interval=rules_check_s)(self.reload_rules)
        app.timer(interval=10.0)(self.report)
        app.streams_worker = self  # type: ignore[attr-defined]
        app.streams_logic = self.logic  # type: ignore[attr-defined]

    def _app(self, settings: Settings, batch_size: int, partitions: int) -> BatchApp:
        assert settings.kafka
        # The app id names the consumer group and the changelog topics: under the prefix.
        return BatchApp(
            f"{settings.topic_prefix}{self.cfg.group}",
            broker=[f"kafka://{b.strip()}" for b in settings.kafka.split(",")],
            store="memory://",
            # faust's own files (<app id>-data) go under the data directory, not the working
            # directory (APP_DATADIR, as the image sets it, wins)
            datadir=os.environ.get("APP_DATADIR") or str(_faust_home(settings)),
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
            # a killed worker's partitions move after 10 s, not faust's default 60 s
            # (heartbeats come from the consumer thread, so a long batch does not miss them)
            broker_session_timeout=10.0,
        )

    # ------------------------------------------------------------------ input, output

    async def process(self, topic: str, rows: list[Row]) -> None:
        """One fetched batch of events (all partitions this worker reads), in offset order
        per partition."""
        self.ticked_at = time.monotonic()
        parts = {row[0] for row in rows}
        if not parts <= self.restored:
            self.resume(parts - self.restored)
        await self.pipeline.handle(topic, rows, self.lagging)
        # The state is written every checkpoint_s (here under load, by the timer otherwise);
        # it costs time in proportion to the state, not to the batch.
        if time.monotonic() - self.ckpt_at >= self.cfg.checkpoint_s:
            self.checkpoint()

    async def process_egress(self, topic: str, rows: list[Row]) -> None:
        """One fetched batch of the egress topic: dropped attempts to ``unresolved_egress``.

        Co-partitioned with the events (:meth:`egress_copartitioned`): the tenants' detector
        state goes into the checkpoint of its partition and the offsets are committed with
        it (:meth:`checkpoint`), so a restart repeats nothing and loses nothing, like the
        events. Otherwise a tenant's egress partition may belong to another worker than its
        events partition, whose checkpoint cannot hold this worker's egress state: the
        offsets are committed as soon as the outputs are published (faust flushes the
        producer before it commits). A crash then loses no reported attempt (at least once:
        records published but not yet committed are read again and may be reported again),
        but the counts of an open window (attempts below ``min_attempts``, the distinct
        addresses behind the next report) start again after a restart or rebalance.
        """
        self.ticked_at = time.monotonic()
        if self.egress_copartitioned():
            parts = {row[0] for row in rows}
            if not parts <= self.restored:
                self.resume(parts - self.restored)
            await self.pipeline.handle_egress(topic, rows, track=True)
            return
        await self.pipeline.handle_egress(topic, rows)
        if self.pipeline.pending:
            return  # not published: read again after a restart
        last: dict[int, int] = {}
        for part, offset, _key, _value in rows:
            last[part] = max(offset, last.get(part, -1))
        mark = self.app.consumer.mark_committable
        for part, offset in last.items():
            mark(TP(topic, part), offset)

    def egress_copartitioned(self) -> bool:
        """Whether the egress topic has as many partitions as the events topic (then faust
        assigns them together: the same copartitioned group as the state table). Unknown
        partition counts (no metadata yet) count as not co-partitioned."""
        if self.egress is None:
            return False
        if self.egress_copart is None:
            try:
                consumer = self.app.consumer
                n_events = consumer.topic_partitions(self.topics.events)
                n_egress = consumer.topic_partitions(self.egress)
            except Exception:  # not started yet, or the consumer is restarting
                return False
            if not n_events or not n_egress:
                return False
            self.egress_copart = n_events == n_egress
            if self.egress_copart:
                log.info("streams: %s is co-partitioned with %s (%d partitions): egress "
                         "state in the checkpoints, offsets committed with them",
                         self.egress, self.topics.events, n_events)
            else:
                log.warning("streams: %s has %d partitions, %s %d: not co-partitioned, egress "
                            "offsets committed once the outputs are published; open egress "
                            "windows are not carried over restarts", self.egress, n_egress,
                            self.topics.events, n_events)
        return self.egress_copart

    async def _send(self, topic: str, records: list[Record]) -> bool:
        """Straight to the producer: faust's Topic.send machinery costs ~50 µs a record, and
        closing a window emits one record per tenant and window."""
        send = self.app.producer.send
        for key, value in records:
            await send(topic, key, value, None, None, None)
        return True

    async def start_webhooks(self) -> None:
        await self.pipeline.start()

    async def start_ops(self) -> None:
        """/metrics /healthz /readyz (a faust task: runs once the worker starts)."""
        registry = component_registry("streams")
        registry.register(StreamsCollector(self.probe))  # type: ignore[arg-type]
        self.lag.start()
        self.ops = await serve_ops("streams", self.metrics_listen, registry_render(registry),
                                   self.probe.readiness, self.probe.liveness)

    async def _positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Next offset to process per owned partition: past what the state holds, else
        the consumer's position."""
        done, out = self.pipeline.done, {}
        for part in self.assigned():
            if part in done:
                out[part] = done[part] + 1
            else:
                pos = await self.app.consumer.position(TP(topic, part))
                out[part] = pos if pos is not None else -1
        return out

    # ------------------------------------------------------------------ partitions

    def resume(self, parts: set[int]) -> None:
        """Tables are recovered before input flows: resume these partitions' checkpoints
        (at start-up into the fresh logic, after a rebalance into the running one)."""
        logic, done = self.logic, self.pipeline.done
        found = owned_checkpoints(self.state, parts)
        # a logic that has run keeps its own clock (an eager rebalance revokes everything)
        restore(logic, found.values(), running=bool(self.restored) or logic.events > 0)
        copart = self.egress_copartitioned()
        for part, data in found.items():  # offsets the restored state already includes
            meta = read_meta(data)
            done[part] = meta.get("offset", -1)
            if copart:
                self.pipeline.egress_done[part] = meta.get("egress_offset", -1)
        if found:
            log.warning("streams: resumed windows from %d partition checkpoint(s) "
                        "(partitions %s, watermark %s)", len(found), sorted(found),
                        logic.watermark)
        self.restored.update(parts)

    async def on_assigned(self, sender: Any, **_: Any) -> None:
        """The table is recovered and input is about to flow: resume every owned partition,
        also those with no new events (their windows must still close, denies expire)."""
        new = self.assigned() - self.restored
        if new:
            self.resume(new)

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """A graceful stop checkpoints everything processed (faust flushes the producer and
        commits afterwards), so the next worker repeats nothing; queued webhooks get their
        chance."""
        self.checkpoint(allowed=set(self.pipeline.touched))
        await self.pipeline.stop()
        if self.ops is not None:
            await self.ops.stop()
        await self.lag.stop()

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Checkpoint the partitions that leave, then forget their tenants: their new owner
        resumes them, and closing their windows here too would publish them twice."""
        parts = {tp.partition for tp in revoked if tp.topic == self.topics.events}
        if not parts:
            return
        self.checkpoint(allowed=parts)
        await self.app.producer.flush()
        p = self.pipeline
        gone = {t for t, part in p.owner.items() if part in parts}
        forget(self.logic, gone)
        for t in gone:
            del p.owner[t]
        for part in parts:
            p.done.pop(part, None)
            p.egress_done.pop(part, None)
            self.restored.discard(part)
            p.clock.newest.pop(part, None)
            p.clock.seen.pop(part, None)

    def lagging(self) -> set[int]:
        """Events partitions of this worker with unread records (they hold time back)."""
        out: set[int] = set()
        done = self.pipeline.done
        try:
            consumer = self.app.consumer
            for tp in consumer.assignment():
                if tp.topic != self.topics.events:
                    continue
                hw = consumer.highwater(tp)
                if hw is not None and hw > done.get(tp.partition, -1) + 1:
                    out.add(tp.partition)
        except Exception:  # not assigned yet, or the consumer is restarting
            return set()
        return out

    def assigned(self) -> set[int]:
        """The events partitions this worker owns now."""
        try:
            return {tp.partition for tp in self.app.consumer.assignment()
                    if tp.topic == self.topics.events}
        except Exception:  # not assigned yet, or the consumer is restarting
            return set()

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, allowed: set[int] | None = None) -> None:
        """Write the state of each touched partition's tenants to that changelog partition,
        then let the consumer commit the events offsets that state includes.

        Offsets are committed only as far as a written checkpoint reaches, so a restarted or
        rebalanced worker re-reads exactly the events its checkpoint lacks (a crash repeats
        at most ``checkpoint_s`` of work and loses none). There is no "current event" outside
        an agent, so the partition is given explicitly.
        """
        self.ckpt_at = time.monotonic()
        p, state = self.pipeline, self.state
        owned = self.assigned() if allowed is None else allowed
        egress = self.egress if self.egress_copartitioned() else None
        for part in sorted(p.touched & owned):
            tenants = {t for t, o in p.owner.items() if o == part}
            offset = p.done.get(part, -1)
            meta = {"partition": part, "offset": offset}
            if egress is not None:
                meta["egress_offset"] = p.egress_done.get(part, -1)
            value = snapshot(self.logic, tenants, meta)
            self.stats["checkpoints"] += 1
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
                self.app.consumer.mark_committable(TP(self.topics.events, part), offset)
            if egress is not None and meta["egress_offset"] >= 0:
                self.app.consumer.mark_committable(TP(egress, part), meta["egress_offset"])
            log.debug("streams: checkpoint partition %d (%d bytes in %d records, %d events "
                      "so far)", part, len(value), len(records), self.logic.events)
        if allowed is None:
            p.touched.clear()  # the rest were revoked: their new owner checkpoints them
        else:
            p.touched.difference_update(allowed)
        self.checkpointed_at = time.time()

    # ------------------------------------------------------------------ timers

    async def periodic_checkpoint(self) -> None:
        # between batches the warm-up may end: let the partition clock close windows
        p = self.pipeline
        if p.advance(self.lagging()):
            await p.publish()
            p.touched.update(set(p.owner.values()))
        self.checkpoint()

    async def idle_advance(self) -> None:
        # no input for a while (wall clock): let the wall clock move event time so windows
        # close and denies expire even when nobody queries
        self.ticked_at = time.monotonic()
        p = self.pipeline
        if p.idle_advance():
            await p.publish()
            p.touched.update(set(p.owner.values()))
            self.checkpoint()

    async def reload_rules(self) -> None:
        self.pipeline.maybe_reload_rules(every_call=True)

    async def report(self) -> None:
        p, logic = self.pipeline, self.logic
        log.info("streams: events=%d late_dropped=%d duplicates=%d dlq=%d checkpoints=%d "
                 "watermark=%s emitted=%s webhooks=%s", logic.events, logic.late_dropped,
                 p.duplicates, p.dlq, self.stats["checkpoints"], logic.watermark,
                 logic.emitted, p.webhooks.status())


def make_app(settings: Settings, *, batch_size: int = 5000, partitions: int = 6,
             **kw: Any) -> faust.App:
    """The faust app for ``settings`` (Kafka bootstrap in ``settings.kafka``); ``kw`` as
    :class:`FaustWorker` takes them (``metrics_listen``, ``ready_max_lag``)."""
    return FaustWorker(settings, batch_size=batch_size, partitions=partitions, **kw).app


def _faust_home(settings: Settings) -> Path:
    """``<home>/faust/{conf.name}-data`` (faust fills in the app id); faust creates the last
    part only, so the folder above it is made here."""
    base = settings.home.resolve() / "faust"
    base.mkdir(parents=True, exist_ok=True)
    return base / "{conf.name}-data"
