"""CDC mode: :class:`CdcSync`, one sync run over logical replication (pgoutput).

Setup (checks, publication, slot, the initial copy from the slot's snapshot),
then the stream with reconnects: changes are collected into :class:`~.apply.ChangeBatch`
batches, applied by :class:`~.apply.Applier`, and only then acknowledged to
PostgreSQL; a clean stop applies and acknowledges what it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from pg2qdrant import redaction
from pg2qdrant.errors import InputError, SourceError, TargetError
from pg2qdrant.pipeline import MigrationOptions, connect_target, migrate
from pg2qdrant.plan import Plan, shape_differences
from pg2qdrant.source import changes, connect, snapshot
from pg2qdrant.source.changes import (Begin, Commit, ConnectionLost, Delete, Insert, Keepalive, Relation,
                                      ReplicationConnection, SlotBusy, Truncate, Update, XLogData, format_lsn)
from pg2qdrant.sync.apply import Applier, ChangeBatch, SourceLookup, _RowChange, _TruncateChange
from pg2qdrant.sync.options import (BACKOFF_MAX_S, BACKOFF_START_S, FEEDBACK_EVERY_S, LAG_WARN_BYTES,
                                    MAX_BATCH_CHANGES, MAX_BATCH_DELAY_S, ONCE_IDLE_S, SLOT_BUSY_GIVE_UP_S,
                                    TARGET_FAILURES_GIVE_UP, SyncOptions, SyncStats, _mib)
from pg2qdrant.sync.reconcile import _reconcile_now, delete_truncated, reconcile
from pg2qdrant.sync.runner import Runner
from pg2qdrant.sync.state import _StateStore
from pg2qdrant.sync.status import StatusLine
from pg2qdrant.ui import UI

log = logging.getLogger("pg2qdrant.sync")  # the name it had when sync was one module


class CdcSync(Runner):
    """One sync run in CDC mode: setup, (initial copy), stream with reconnects, clean stop."""

    def __init__(self, options: MigrationOptions, sync_options: SyncOptions, ui: UI, stop: threading.Event,
                 stats: SyncStats):
        super().__init__(options, sync_options, ui, stop, stats)
        self.slot, self.publication = sync_options.names(options.collection)
        self.until_lsn: int | None = None

    # -- setup ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Plan, checks, publication, slot (with the initial copy), target.

        Everything that can fail on the user's input is checked before the first
        side effect (publication, slot, writes).
        """
        options, ui = self.options, self.ui
        address, plan = self._plan()
        conn = connect.connect(options.pg_url, autocommit=True)
        try:
            settings = changes.wal_settings(conn)
            if settings.get("wal_level") != "logical":
                raise InputError(
                    f"PostgreSQL runs with wal_level = {settings.get('wal_level')}; logical replication needs "
                    "wal_level = logical.",
                    fix="ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (managed services: enable "
                        "logical replication/decoding in the settings); or use --sync.mode poll "
                        "--sync.updated-column COLUMN.")
            changes.check_replica_identity(conn, plan)
            existing = changes.slot_info(conn, self.slot)
            if existing is not None:
                changes.check_slot(existing, plan.server.database)
        finally:
            conn.close()

        marker_key = f"cdc:{options.collection}:{self.slot}"
        marker_value = {"slot": self.slot, "database": plan.server.database, "system": plan.server.system_identifier}
        copy = self.sync.initial_copy
        if copy and existing is not None:
            marker = self._state(address, marker_key, None)
            if marker and marker.get("copied") and all(marker.get(k) == v for k, v in marker_value.items()):
                ui.info(f"The initial copy from slot {self.slot!r} finished in an earlier run: continuing from "
                        "the slot.")
                copy = False
            else:
                ui.warn(f"Replication slot {self.slot!r} exists but no initial copy finished from it (an "
                        "interrupted run?): dropping it and copying again.")
                self._drop_slot_quietly(wait_s=SLOT_BUSY_GIVE_UP_S)
                existing = None
        if not copy:
            self.target = connect_target(options, address, ui)
            actual = self.target.shape(plan.collection)
            if actual is None:
                raise InputError(
                    f"Collection {plan.collection!r} does not exist, so there is nothing to keep in sync yet.",
                    fix="start with the copy: add --sync.initial-copy (or run `pg2qdrant migrate --then-sync`).")
            diffs = shape_differences(plan.shape(), actual)
            if diffs:
                raise InputError(
                    f"Collection {plan.collection!r} does not match the table: " + "; ".join(diffs) + ".",
                    fix="sync into the collection the table was copied to, or copy again into a new one "
                        "(--sync.initial-copy with another --qdrant.collection).")

        # The publication must exist before the slot: pgoutput reads it as of each change's time.
        conn = connect.connect(options.pg_url, autocommit=True)
        try:
            outcome = changes.ensure_publication(conn, self.publication, plan, options.collection)
            if outcome == "created":
                ui.info(f"Created publication {self.publication!r} for {plan.table.display}.")
            elif outcome == "altered":
                ui.info(f"Publication {self.publication!r} no longer publishes via the partition root, so that "
                        "a TRUNCATE of single partitions reaches sync.")
            elif outcome == "via_root":
                ui.warn(f"publication {self.publication!r} publishes {plan.table.display} with "
                        "publish_via_partition_root = true: PostgreSQL then sends nothing for a TRUNCATE of single "
                        "partitions, and their points would stay in the collection. Fix: ALTER PUBLICATION "
                        f"{self.publication} SET (publish_via_partition_root = false); after such a TRUNCATE, "
                        "run `pg2qdrant sync --sync.mode reconcile` once.")
        finally:
            conn.close()

        if copy:
            plan = self._initial_copy(address)
            self._state(address, marker_key, {**marker_value, "copied": True, "at": time.time()})
        elif existing is None:
            rep = ReplicationConnection(options.pg_url)
            try:
                lsn, _ = rep.create_slot(self.slot, export_snapshot=False)
            finally:
                rep.close()
            self._state(address, marker_key, {**marker_value, "copied": False, "at": time.time()})
            if self.sync.reconcile:
                ui.info(f"Created replication slot {self.slot!r} at {format_lsn(lsn)}; the reconciliation "
                        "below catches up whatever changed between the copy and now.")
            else:
                ui.warn(f"Created replication slot {self.slot!r} at {format_lsn(lsn)}: changes from now on are "
                        "synced. Changes made between the copy and now are not; for a gap-free start use "
                        "--sync.initial-copy (or `migrate --then-sync`), or add --sync.reconcile once.")
        else:
            ui.info(f"Resuming from replication slot {self.slot!r} (last applied LSN "
                    f"{format_lsn(existing.confirmed_flush)}, {_mib(existing.lag_bytes)} behind).")
            if existing.lag_bytes > LAG_WARN_BYTES:
                ui.warn(f"the slot holds {_mib(existing.lag_bytes)} of WAL not yet applied; catching up.")
        if self.sync.reconcile and not copy:
            _reconcile_now(options, plan, self.target, ui, self.stats)
        if settings.get("max_slot_wal_keep_size") in ("-1", None):
            ui.info("Note: max_slot_wal_keep_size is unlimited: while sync is stopped the slot keeps all WAL. "
                    "Remove an abandoned slot with `pg2qdrant sync drop`.")
        self.plan = plan
        if self.sync.once:
            conn = connect.connect(options.pg_url, autocommit=True)
            try:
                self.until_lsn = changes.current_wal_lsn(conn)
            finally:
                conn.close()

    def _state(self, address, key: str, value: dict | None) -> dict | None:
        """Read (value None) or write the marker ``key`` in the target, with a short-lived connection
        (local mode allows one client per folder, and the copy opens its own)."""
        target = connect_target(self.options, address) if self.target is None else self.target
        try:
            store = _StateStore(target, self.options, key)
            if value is None:
                return store.load()
            store.save(value)
            return value
        finally:
            if target is not self.target:
                target.close()

    def _initial_copy(self, address) -> Plan:
        """Slot with an exported snapshot -> copy from that snapshot -> stream from the slot.

        The replication connection runs nothing else until the copy (and the orphan
        check) have read the snapshot: its next command would release it.
        """
        options, ui = self.options, self.ui
        rep = ReplicationConnection(options.pg_url)
        try:
            lsn, snapshot_name = rep.create_slot(self.slot, export_snapshot=True)
            ui.info(f"Created replication slot {self.slot!r}; copying the table as of its snapshot "
                    f"(changes after {format_lsn(lsn)} are streamed next).")
            # The copy and the stream share one target: an in-memory collection exists only in
            # its client, and local mode allows one client per folder.
            self.target = connect_target(options, address, ui)
            # restart: progress saved by an earlier run was read in another snapshot, and the
            # stream starts at this slot's snapshot, so every range is copied again from it.
            copy_options = dataclasses.replace(options, restart=True)
            result = migrate(copy_options, ui, snapshot_id=snapshot_name, target=self.target)
            result.summary(address.display()).render(ui)
            plan = result.plan
            target = self.target
            if not result.created_collection:
                # An existing collection may hold points whose rows were deleted before the copy.
                conn = connect.connect(options.pg_url, autocommit=True)
                try:
                    snapshot.attach_snapshot(conn, snapshot_name)
                    deleted, _ = reconcile(plan, target, conn, batch_size=options.batch_size, fill=False)
                    snapshot.end(conn)
                finally:
                    conn.close()
                if deleted:
                    ui.info(f"Deleted {deleted:,} point(s) whose rows no longer exist.")
        except BaseException:
            rep.close()
            self._drop_slot_quietly()
            raise
        rep.close()
        return plan

    def _drop_slot_quietly(self, wait_s: float = 2.0) -> None:
        """Drop our slot, waiting up to ``wait_s`` for a previous connection to let go of it.

        Used for a slot whose copy failed or was interrupted: it would hold WAL forever.
        """
        try:
            conn = connect.connect(self.options.pg_url, autocommit=True)
            try:
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    info = changes.slot_info(conn, self.slot)
                    if info is None or not info.active:
                        break
                    time.sleep(0.1)
                changes.drop_slot(conn, self.slot)
            finally:
                conn.close()
        except InputError:
            if wait_s > 2.0:
                raise
        except Exception as exc:  # the original error matters more
            log.debug("could not drop slot %s: %s", self.slot, exc)

    # -- streaming -----------------------------------------------------------------------
    def run(self) -> None:
        backoff = BACKOFF_START_S
        busy_since: float | None = None
        target_failures = 0
        with StatusLine(self.ui, self.stats, self.sync.status_every_s, "cdc") as status:
            while not self.stop.is_set():
                applied_before = self.stats.changes
                started = time.monotonic()
                try:
                    self._session(status)
                    return  # stopped, or caught up (--sync.once)
                except SlotBusy as exc:
                    busy_since = busy_since or time.monotonic()
                    if time.monotonic() - busy_since > SLOT_BUSY_GIVE_UP_S:
                        raise InputError(
                            f"Replication slot {self.slot!r} is in use by another connection: {exc.message}",
                            fix="another `pg2qdrant sync` is running for this collection; stop it, or use "
                                "another --sync.slot.") from None
                    why = "the slot is still held by the previous connection"
                    kind = "slot_busy"
                except (ConnectionLost, *connect.CONNECTION_LOST) as exc:
                    busy_since = None
                    why = redaction.redact(getattr(exc, "message", None) or exc)
                    kind = "source"
                except TargetError as exc:
                    target_failures = 0 if self.stats.changes > applied_before else target_failures + 1
                    if target_failures >= TARGET_FAILURES_GIVE_UP:
                        raise
                    why = exc.message
                    kind = "target"
                self.observer.error(kind)
                if self.stats.changes > applied_before or time.monotonic() - started > 60:
                    backoff = BACKOFF_START_S
                self.stats.reconnects += 1
                self.ui.warn(f"{why.strip()} - reconnecting in {backoff:.1f} s (nothing unacknowledged is lost: "
                             "the slot resends it).")
                if self.stop.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _session(self, status: StatusLine) -> bool:
        """Stream until stopped (True) or until the connection breaks (raises)."""
        plan = self.plan
        assert plan is not None
        try:
            lookup = SourceLookup(self.options.pg_url, plan)
        except SourceError as exc:  # unreachable: retried (credentials rejected is an InputError: not)
            raise ConnectionLost(exc.message, fix=exc.fix) from None
        rep: ReplicationConnection | None = None
        try:
            applier = Applier(plan, self.target, lookup, batch_size=self.options.batch_size,
                              on_partial_truncate=lambda truncated, remaining: delete_truncated(
                                  self.options, plan, self.target, truncated, remaining, self.ui),
                              stats=self.stats)
            rep = ReplicationConnection(self.options.pg_url)
            rep.start(self.slot, self.publication)
            return self._stream(rep, lookup, applier, status)
        finally:
            if rep is not None:
                rep.close()
            lookup.close()

    def _stream(self, rep: ReplicationConnection, lookup: SourceLookup, applier: Applier,
                status: StatusLine) -> bool:
        plan = self.plan
        stats = self.stats
        decoder = lookup.decoder
        # Changes arrive under each partition's own relation (see changes.ensure_publication);
        # a relation not in the plan (a partition created since) is looked up once.
        ours = {plan.table.oid, *(leaf.oid for leaf in plan.table.leaves)}
        others: set[int] = set()
        batch = ChangeBatch()
        in_txn = False
        txn_time: float | None = None
        received = stats.acked_lsn
        last_feedback = last_data = time.monotonic()
        warned_missing: set[int] = set()

        def flush() -> None:
            nonlocal batch
            if not batch:
                return
            n = applier.apply(batch) if batch.items else 0
            now = time.time()
            for t in batch.commit_times:
                stats.latencies.append(max(0.0, now - changes.pg_time_to_unix(t)))
            if batch.commit_times:
                stats.last_latency = stats.latencies[-1]
            stats.pending_since = txn_time if in_txn else None  # a transaction applied in parts is pending
            self.observer.applied(batch, now)
            stats.changes += n
            stats.transactions += len(batch.commit_times)
            stats.batches += 1
            if batch.commit_end is not None and batch.commit_end > stats.acked_lsn:
                stats.acked_lsn = batch.commit_end
            batch = ChangeBatch()
            acknowledge()

        def acknowledge(reply: bool = False) -> None:
            nonlocal last_feedback
            rep.send_feedback(max(received, stats.acked_lsn), stats.acked_lsn, reply=reply)
            last_feedback = time.monotonic()

        acknowledge()
        while True:
            if self.stop.is_set():
                flush()
                acknowledge()
                return True
            frame = rep.read(0.0 if batch else 0.5)
            if isinstance(frame, XLogData):
                last_data = time.monotonic()
                stats.server_lsn = max(stats.server_lsn, frame.wal_end)
                received = max(received, frame.start)
                msg = changes.decode_message(frame.payload)
                if isinstance(msg, (Insert, Update, Delete)):
                    if msg.relation in ours and decoder.knows(msg.relation):
                        reread_only = msg.relation in decoder.missing_columns
                        if reread_only and msg.relation not in warned_missing:
                            warned_missing.add(msg.relation)
                            self.ui.warn(
                                f"the publication does not send column(s) "
                                f"{', '.join(decoder.missing_columns[msg.relation])} of {plan.table.display}; "
                                "each changed row is read again from the table (slower).")
                        if isinstance(msg, Insert):
                            batch.items.append(_RowChange("I", decoder.decode(msg.relation, msg.new), None, None,
                                                          reread_only))
                        elif isinstance(msg, Update):
                            old = decoder.decode(msg.relation, msg.old) if msg.old is not None else None
                            batch.items.append(_RowChange("U", decoder.decode(msg.relation, msg.new), msg.old_kind,
                                                          old, reread_only))
                        else:
                            batch.items.append(_RowChange("D", None, msg.old_kind,
                                                          decoder.decode(msg.relation, msg.old), False))
                        batch.rows += 1
                elif isinstance(msg, Begin):
                    in_txn = True
                    txn_time = changes.pg_time_to_unix(msg.commit_time)  # Begin carries the commit time
                    if stats.pending_since is None:
                        stats.pending_since = txn_time
                elif isinstance(msg, Commit):
                    in_txn = False
                    batch.commit_end = msg.end_lsn
                    batch.commit_times.append(msg.commit_time)
                    received = max(received, msg.end_lsn)
                elif isinstance(msg, Relation):
                    if msg.oid not in ours and msg.oid not in others:
                        ours.update(leaf.oid for leaf in lookup.current_leaves())
                        if msg.oid not in ours:
                            others.add(msg.oid)  # another table of a shared publication
                    if msg.oid in ours:
                        decoder.add_relation(msg)
                elif isinstance(msg, Truncate):
                    # It names the relations actually emptied (TRUNCATE ONLY parent: the parent alone);
                    # the applier turns them into a clear or a delete of exactly their points.
                    hit = ours.intersection(msg.relations)
                    if hit:
                        batch.items.append(_TruncateChange(frozenset(hit)))
                        batch.rows += 1
            elif isinstance(frame, Keepalive):
                stats.server_lsn = max(stats.server_lsn, frame.wal_end)
                if not batch and not in_txn and frame.wal_end >= stats.acked_lsn:
                    # Everything sent so far is applied: let the slot move on while tables are quiet.
                    stats.last_latency = 0.0
                    if frame.wal_end > stats.acked_lsn:
                        stats.acked_lsn = frame.wal_end
                        received = max(received, frame.wal_end)
                        acknowledge()
                    elif frame.reply_requested:
                        acknowledge()
                elif frame.reply_requested:
                    acknowledge()
            now = time.monotonic()
            if batch and (frame is None or batch.rows >= MAX_BATCH_CHANGES
                          or now - batch.opened >= MAX_BATCH_DELAY_S):
                flush()
            elif now - last_feedback >= FEEDBACK_EVERY_S:
                acknowledge()
            status.tick()
            if self.until_lsn is not None and not batch and not in_txn and (
                    stats.acked_lsn >= self.until_lsn
                    # the insert position can lie in WAL the server has not flushed (so not sent)
                    # yet; once idle with everything sent applied, that is caught up too
                    or (now - last_data > ONCE_IDLE_S and stats.acked_lsn >= stats.server_lsn > 0)):
                acknowledge()
                return True

