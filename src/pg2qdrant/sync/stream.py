"""CDC's stream loop: receive -> fold -> apply -> acknowledge.

- receive (:class:`Receiver`): pgoutput messages, decoded, become row changes of the open
  :class:`~.apply.ChangeBatch` (rows in the plan's read order), with the commits they close;
- fold and apply (:func:`apply_batch`): :class:`~.apply.Applier` folds a batch per point
  and writes its net effect through the target (wait=true), then the stats learn what was applied;
- acknowledge (:class:`Acknowledger`): standby feedback tells PostgreSQL how far the slot may
  forget: the end of the last applied commit, never a commit still in a batch;
- :class:`Stream` runs one session of them on a replication connection.

Each part takes plain values (decoded messages, a batch, LSNs), so it can be tested alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from pg2qdrant.core.plan import Plan
from pg2qdrant.source.lsn import pg_time_to_unix
from pg2qdrant.source.pgoutput import Begin, Commit, Delete, Insert, Relation, Truncate, Update, decode_message
from pg2qdrant.source.replication import Keepalive, ReplicationConnection, XLogData
from pg2qdrant.sync.apply import Applier, ChangeBatch, RowChange, SourceLookup, TruncateChange
from pg2qdrant.sync.options import FEEDBACK_EVERY_S, MAX_BATCH_CHANGES, MAX_BATCH_DELAY_S, ONCE_IDLE_S, SyncStats
from pg2qdrant.sync.status import StatusLine


class Receiver:
    """receive: decoded pgoutput messages -> row changes of the open batch.

    Changes arrive under each partition's own relation (see slots.ensure_publication);
    a relation not in the plan (a partition created since) is looked up once.
    """

    def __init__(self, plan: Plan, lookup: SourceLookup, stats: SyncStats, warn: Callable[[str], None]):
        self.plan = plan
        self.lookup = lookup
        self.decoder = lookup.decoder
        self.stats = stats
        self.warn = warn
        self.ours = self._our_oids(plan)
        self.others: set[int] = set()  # other tables of a shared publication
        self.warned_missing: set[int] = set()
        # A descriptor of ours that the plan cannot decode (a DDL before or after it): the schema
        # watch checks the catalog before the next message (sync.schema_watch).
        self.shape_changed = False
        self.batch = ChangeBatch()
        self.in_txn = False
        self.txn_time: float | None = None  # unix commit time of the open transaction
        self.last_data = time.monotonic()

    @staticmethod
    def _our_oids(plan: Plan) -> set[int]:
        return {plan.table.oid, *(leaf.oid for leaf in plan.table.leaves + plan.table.change_tables)}

    def replan(self, plan: Plan) -> None:
        """Use ``plan`` (made again after a DDL; ``self.lookup`` holds its decoder): a partition
        detached or dropped is no longer ours, its changes still in the stream are skipped."""
        self.plan = plan
        self.decoder = self.lookup.decoder
        self.ours = self._our_oids(plan)
        self.others -= self.ours

    def take_frame(self, frame: XLogData):
        """Decode and take one XLogData frame's message; returns the message."""
        self.last_data = time.monotonic()
        message = decode_message(frame.payload)
        self.take(message)
        return message

    def take(self, message) -> None:
        if isinstance(message, (Insert, Update, Delete)):
            self._row(message)
        elif isinstance(message, Begin):
            self.in_txn = True
            self.txn_time = pg_time_to_unix(message.commit_time)  # Begin carries the commit time
            if self.stats.pending_since is None:
                self.stats.pending_since = self.txn_time
        elif isinstance(message, Commit):
            self.in_txn = False
            self.batch.commit_end = message.end_lsn
            self.batch.commit_times.append(message.commit_time)
        elif isinstance(message, Relation):
            self._relation(message)
        elif isinstance(message, Truncate):
            # It names the relations actually emptied (TRUNCATE ONLY parent: the parent alone);
            # the applier turns them into a clear or a delete of exactly their points.
            hit = self.ours.intersection(message.relations)
            if hit:
                self.batch.items.append(TruncateChange(frozenset(hit)))
                self.batch.rows += 1

    def _relation(self, message: Relation) -> None:
        if message.oid not in self.ours and message.oid not in self.others:
            self.ours.update(leaf.oid for leaf in self.lookup.current_leaves())
            if message.oid not in self.ours:
                self.others.add(message.oid)
        if message.oid in self.ours:
            self.decoder.add_relation(message)
            if self.decoder.reread_only(message.oid):
                self.shape_changed = True

    def _row(self, message: Insert | Update | Delete) -> None:
        relation, decoder = message.relation, self.decoder
        if relation not in self.ours or not decoder.knows(relation):
            return
        reread_only = decoder.reread_only(relation)
        if (relation in decoder.missing_columns and relation not in decoder.mismatched
                and relation not in self.warned_missing and not self.plan.table.change_tables):
            self.warned_missing.add(relation)
            self.warn(f"the publication does not send column(s) {', '.join(decoder.missing_columns[relation])} "
                      f"of {self.plan.table.display}; each changed row is read again from the table (slower).")
        if isinstance(message, Insert):
            change = RowChange("I", decoder.decode(relation, message.new), None, None, reread_only)
        elif isinstance(message, Update):
            old = decoder.decode(relation, message.old) if message.old is not None else None
            change = RowChange("U", decoder.decode(relation, message.new), message.old_kind, old, reread_only)
        else:
            change = RowChange("D", None, message.old_kind, decoder.decode(relation, message.old), False)
        self.batch.items.append(change)
        self.batch.rows += 1

    @property
    def idle(self) -> bool:
        """Nothing received is waiting to be applied (no open batch, no open transaction)."""
        return not self.batch and not self.in_txn

    def due(self, nothing_arrived: bool, now: float) -> bool:
        """Time to apply the open batch: the stream paused, or the batch is full or old enough."""
        batch = self.batch
        return bool(batch) and (nothing_arrived or batch.rows >= MAX_BATCH_CHANGES
                                or now - batch.opened >= MAX_BATCH_DELAY_S)

    def take_batch(self) -> ChangeBatch:
        batch, self.batch = self.batch, ChangeBatch()
        return batch

    @property
    def pending_since(self) -> float | None:
        """The commit time of a transaction received in part (its changes applied so far are pending)."""
        return self.txn_time if self.in_txn else None


def apply_batch(applier: Applier, batch: ChangeBatch, stats: SyncStats, observer, pending_since: float | None) -> None:
    """fold + apply: write ``batch`` through the target, then count it (latencies, lag, metrics)."""
    n = applier.apply(batch) if batch.items else 0
    now = time.time()
    for t in batch.commit_times:
        stats.latencies.append(max(0.0, now - pg_time_to_unix(t)))
    if batch.commit_times:
        stats.last_latency = stats.latencies[-1]
    stats.pending_since = pending_since
    observer.applied(batch, now)
    stats.changes += n
    stats.transactions += len(batch.commit_times)
    stats.batches += 1


class Acknowledger:
    """acknowledge: standby feedback; ``flushed`` (what the slot may forget) is ``stats.acked_lsn``.

    That moves only to the end of an applied commit (:meth:`applied`), or to a keepalive's
    position while nothing received waits to be applied (:meth:`keepalive`).
    """

    def __init__(self, send: Callable[..., None], stats: SyncStats):
        self.send_feedback = send  # ReplicationConnection.send_feedback(written, flushed, reply=)
        self.stats = stats
        self.received = stats.acked_lsn  # the furthest position received ("written")
        self.last_sent = time.monotonic()

    def saw(self, lsn: int) -> None:
        self.received = max(self.received, lsn)

    def applied(self, commit_end: int | None) -> None:
        """The changes up to the commit ending at ``commit_end`` are in the target."""
        if commit_end is not None and commit_end > self.stats.acked_lsn:
            self.stats.acked_lsn = commit_end

    def keepalive(self, frame: Keepalive, *, idle: bool) -> None:
        stats = self.stats
        if idle and frame.wal_end >= stats.acked_lsn:
            # Everything sent so far is applied: let the slot move on while tables are quiet.
            stats.last_latency = 0.0
            if frame.wal_end > stats.acked_lsn:
                stats.acked_lsn = frame.wal_end
                self.saw(frame.wal_end)
                self.send()
                return
        if frame.reply_requested:
            self.send()

    def send(self, reply: bool = False) -> None:
        self.send_feedback(max(self.received, self.stats.acked_lsn), self.stats.acked_lsn, reply=reply)
        self.last_sent = time.monotonic()

    def due(self, now: float) -> bool:
        return now - self.last_sent >= FEEDBACK_EVERY_S


class Stream:
    """One streaming session: receive -> fold -> apply -> acknowledge until stopped or caught up
    (True), or until the connection breaks (raises). Only :meth:`run` reads the connection; the
    steps take frames, so they run without one."""

    def __init__(self, receiver: Receiver, applier: Applier, ack: Acknowledger, stats: SyncStats, *,
                 observer, stop: threading.Event, until_lsn: int | None, watches: Sequence = ()):
        self.receiver = receiver
        self.watches = tuple(watches)  # sync.schema_watch.SchemaWatch per table: DDL and partitions
        self.applier = applier
        self.ack = ack
        self.stats = stats
        self.observer = observer
        self.stop = stop
        self.until_lsn = until_lsn  # --sync.once: the WAL position to catch up with

    def run(self, rep: ReplicationConnection, status: StatusLine) -> bool:
        """Stream from ``rep`` (started; ``self.ack`` sends its feedback there)."""
        receiver, ack = self.receiver, self.ack
        ack.send()
        while not self.stop.is_set():
            frame = rep.read(0.0 if receiver.batch else 0.5)
            self.receive(frame)
            now = time.monotonic()
            for watch in self.watches:  # before the next message: it may be the first after a DDL
                watch.step(self, now)
            if receiver.due(frame is None, now):
                self.flush()
            elif ack.due(now):
                ack.send()
            status.tick()
            if self.caught_up(now):
                ack.send()
                return True
        self.flush()
        ack.send()
        return True

    def receive(self, frame: XLogData | Keepalive | None) -> None:
        stats = self.stats
        if isinstance(frame, XLogData):
            stats.server_lsn = max(stats.server_lsn, frame.wal_end)
            self.ack.saw(frame.start)
            message = self.receiver.take_frame(frame)
            if isinstance(message, Commit):
                self.ack.saw(message.end_lsn)
        elif isinstance(frame, Keepalive):
            stats.server_lsn = max(stats.server_lsn, frame.wal_end)
            if self.receiver.idle and frame.wal_end > stats.acked_lsn:
                # WAL past the last applied commit is about to be acknowledged: a DDL in it (pgoutput
                # sends none) is noticed first, so that a slot caught up means the shape is too.
                for watch in self.watches:
                    watch.step(self, time.monotonic(), force=True)
            self.ack.keepalive(frame, idle=self.receiver.idle)

    def flush(self) -> None:
        """Apply the open batch, then acknowledge its last commit."""
        batch = self.receiver.take_batch()
        if not batch:
            return
        apply_batch(self.applier, batch, self.stats, self.observer, self.receiver.pending_since)
        self.ack.applied(batch.commit_end)
        self.ack.send()

    def caught_up(self, now: float) -> bool:
        """--sync.once: everything up to the WAL position at start is applied."""
        stats = self.stats
        if self.until_lsn is None or not self.receiver.idle:
            return False
        # the insert position can lie in WAL the server has not flushed (so not sent) yet; once
        # idle with everything sent applied, that is caught up too
        return stats.acked_lsn >= self.until_lsn or (
            now - self.receiver.last_data > ONCE_IDLE_S and stats.acked_lsn >= stats.server_lsn > 0)
