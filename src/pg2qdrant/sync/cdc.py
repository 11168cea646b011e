"""CDC mode: :class:`CdcSync`, one sync run over logical replication (pgoutput).

Setup (checks, publication, slot, the initial copy from the slot's snapshot),
then the stream with reconnects (backoff: :class:`~pg2qdrant.core.retry.Backoff`); each
session is a :class:`~.stream.Stream`: changes are received into
:class:`~.apply.ChangeBatch` batches, folded and applied by :class:`~.apply.Applier`,
and only then acknowledged to PostgreSQL; a clean stop applies and acknowledges
what it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError, Interrupted, LockConflict, SourceError, TargetError
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.core.plan import Plan, check_shape
from pg2qdrant.core.retry import Backoff
from pg2qdrant.destination.writer import Writer
from pg2qdrant.migrate.copy import migrate
from pg2qdrant.runtime.layouts import follow_changes
from pg2qdrant.runtime.mapping import row_mapper
from pg2qdrant.runtime.target import connect_target, describe_target
from pg2qdrant.source import connect, slots
from pg2qdrant.source.lsn import format_lsn
from pg2qdrant.source.replication import ConnectionLost, ReplicationConnection, SlotBusy
from pg2qdrant.sync import schema_watch
from pg2qdrant.sync.apply import Applier, SourceLookup
from pg2qdrant.sync.options import (
    BACKOFF_MAX_S,
    BACKOFF_START_S,
    LAG_WARN_BYTES,
    SLOT_BUSY_GIVE_UP_S,
    TARGET_FAILURES_GIVE_UP,
    SyncOptions,
    SyncStats,
    _mib,
)
from pg2qdrant.sync.reconcile import _reconcile_now, delete_truncated
from pg2qdrant.sync.runner import Runner
from pg2qdrant.sync.state import _StateStore
from pg2qdrant.sync.status import StatusLine
from pg2qdrant.sync.stream import Acknowledger, Receiver, Stream
from pg2qdrant.ui import UI

LOCK_CONFLICT_TRIES = 5  # initial copies started again while the application's TRUNCATE/ALTER goes first

log = logging.getLogger("pg2qdrant.sync")  # one logger for every sync module (--debug)


def let_it_go_first(exc: LockConflict, attempt: int, ui: UI, stop: threading.Event, again: str) -> None:
    """After the ``attempt``-th initial copy stopped for an application's TRUNCATE/ALTER TABLE (LockConflict):
    wait (backing off) while it runs, then return to copy again; the last attempt raises it."""
    if attempt == LOCK_CONFLICT_TRIES:
        raise exc
    delay = BACKOFF_START_S * 2 ** attempt
    ui.warn(f"{exc.message} The copy stopped so that it can run; {again} in {delay:.0f} s "
            f"(attempt {attempt + 1} of {LOCK_CONFLICT_TRIES}).")
    if stop.wait(delay):
        raise Interrupted("Interrupted before the initial copy could start again.", fix="rerun the same command.")


class CdcSync(Runner):
    """One sync run in CDC mode: setup, (initial copy), stream with reconnects, clean stop."""

    def __init__(self, options: MigrationOptions, sync_options: SyncOptions, ui: UI, stop: threading.Event,
                 stats: SyncStats):
        super().__init__(options, sync_options, ui, stop, stats)
        self.slot, self.publication = sync_options.names(options.collection)
        self.until_lsn: int | None = None
        self.address = None  # the target's address (prepare): where sync's records are kept
        self._busy_since: float | None = None  # when the slot was first found busy (reset on other failures)
        self._target_failures = 0  # target failures in a row without progress

    # -- setup ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Plan, checks, publication, slot (with the initial copy), target.

        Everything that can fail on the user's input is checked before the first
        side effect (publication, slot, writes).
        """
        options, ui = self.options, self.ui
        address, plan = self._plan()
        self.address = address
        plan = self._follow_changes(plan)
        settings, existing = self._check_source(plan)
        marker_key = f"cdc:{options.collection}:{self.slot}"
        marker_value = {"slot": self.slot, "database": plan.server.database, "system": plan.server.system_identifier}
        copy = self.sync.initial_copy
        if copy and existing is not None:
            copy, existing = self._copy_again(address, marker_key, marker_value, existing)
        if not copy:
            self.target = connect_target(options, address, ui)
            self._check_collection(plan)
        # The publication must exist before the slot: pgoutput reads it as of each change's time.
        self._ensure_publication(plan)
        if copy:
            # Not finished until it is: a run stopped during the copy must not look copied to the next
            # (the marker of an earlier copy from a slot of the same name would say so).
            self._state(address, marker_key, {**marker_value, "copied": False, "at": time.time()})
            plan = self._follow_changes(self._initial_copy(address))
            self._state(address, marker_key, {**marker_value, "copied": True, "at": time.time()})
        elif existing is None:
            self._create_slot()
            self._state(address, marker_key, {**marker_value, "copied": False, "at": time.time()})
            self.remember_written_with(plan)
        else:
            ui.info(f"Resuming from replication slot {self.slot!r} (last applied LSN "
                    f"{format_lsn(existing.confirmed_flush)}, {_mib(existing.lag_bytes)} behind).")
            if existing.lag_bytes > LAG_WARN_BYTES:
                ui.warn(f"the slot holds {_mib(existing.lag_bytes)} of WAL not yet applied; catching up.")
            self.catch_up_with_the_table(plan)
        if self.sync.reconcile and not copy:
            _reconcile_now(options, plan, self.target, ui, self.stats)
        elif options.delete_orphans and not copy:  # the copy was done by an earlier run: compare now
            _reconcile_now(options, plan, self.target, ui, self.stats, fill=False)
        if settings.get("max_slot_wal_keep_size") in ("-1", None):
            ui.info("Note: max_slot_wal_keep_size is unlimited: while sync is stopped the slot keeps all WAL. "
                    "Remove an abandoned slot with `pg2qdrant sync drop`.")
        self.plan = plan
        if self.sync.once:
            conn = connect.connect(options.pg_url, autocommit=True)
            try:
                self.until_lsn = slots.current_wal_lsn(conn)
            finally:
                conn.close()

    def _follow_changes(self, plan: Plan) -> Plan:
        """A view a layout syncs through its base table (pgai): see runtime.layouts.follow_changes."""
        if plan.table.relkind != "v":
            return plan
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            return follow_changes(conn, plan)
        finally:
            conn.close()

    def _check_source(self, plan: Plan) -> tuple[dict[str, str], slots.SlotInfo | None]:
        """(WAL settings, our slot if it exists): logical WAL, a replica identity with the key, a
        reusable slot."""
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            settings = slots.wal_settings(conn)
            if settings.get("wal_level") != "logical":
                raise InputError(
                    f"PostgreSQL runs with wal_level = {settings.get('wal_level')}; logical replication needs "
                    "wal_level = logical.",
                    fix="ALTER SYSTEM SET wal_level = logical and restart PostgreSQL (managed services: enable "
                        "logical replication/decoding in the settings); or use --sync.mode poll "
                        "--sync.updated-column COLUMN.")
            slots.check_replica_identity(conn, plan)
            existing = slots.slot_info(conn, self.slot)
            if existing is not None:
                slots.check_slot(existing, plan.server.database)
        finally:
            conn.close()
        return settings, existing

    def _copy_again(self, address, marker_key: str, marker_value: dict,
                    existing: slots.SlotInfo) -> tuple[bool, slots.SlotInfo | None]:
        """--sync.initial-copy with our slot already there: (copy, slot) after checking its marker."""
        marker = self._state(address, marker_key, None)
        if marker and marker.get("copied") and all(marker.get(k) == v for k, v in marker_value.items()):
            self.ui.info(f"The initial copy from slot {self.slot!r} finished in an earlier run: continuing from "
                         "the slot.")
            return False, existing
        others = self._state(address, marker_key, None, others=marker_value)
        if others:
            where = ", ".join(sorted({describe_target(o.get("target", {})) for o in others}))
            raise InputError(
                f"Replication slot {self.slot!r} is the slot of the sync into {where} (recorded in "
                f"{self.options.state_file}.sync.json); taking it over would stop that sync.",
                fix="give this target its own slot: add --sync.slot NAME (and --sync.publication NAME if the "
                    "table set differs).")
        self.ui.warn(f"Replication slot {self.slot!r} exists but no initial copy finished from it (an "
                     "interrupted run?): dropping it and copying again.")
        self._drop_slot_quietly(wait_s=SLOT_BUSY_GIVE_UP_S)
        return True, None

    def _check_collection(self, plan: Plan) -> None:
        """Without a copy, the collection must exist with the table's shape."""
        check = check_shape(plan.collection_spec(), self.target.shape(plan.collection))
        if not check.exists:
            raise InputError(
                f"Collection {plan.collection!r} does not exist, so there is nothing to keep in sync yet.",
                fix="start with the copy: add --sync.initial-copy (or run `pg2qdrant migrate --then-sync`).")
        check.require_match(
            "does not match the table",
            fix="sync into the collection the table was copied to, or copy again into a new one "
                "(--sync.initial-copy with another --qdrant.collection).")

    def _ensure_publication(self, plan: Plan) -> None:
        ui = self.ui
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            outcome = slots.ensure_publication(conn, self.publication, plan, self.options.collection)
        finally:
            conn.close()
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

    def _create_slot(self) -> None:
        """A slot from now on (no copy): what changed since the copy is not in it, so say so."""
        rep = ReplicationConnection(self.options.pg_url)
        try:
            lsn, _ = rep.create_slot(self.slot, export_snapshot=False)
        finally:
            rep.close()
        if self.sync.reconcile:
            self.ui.info(f"Created replication slot {self.slot!r} at {format_lsn(lsn)}; the reconciliation "
                         "below catches up whatever changed between the copy and now.")
        else:
            self.ui.warn(f"Created replication slot {self.slot!r} at {format_lsn(lsn)}: changes from now on are "
                         "synced. Changes made between the copy and now are not; for a gap-free start use "
                         "--sync.initial-copy (or `migrate --then-sync`), or add --sync.reconcile once.")

    def _state(self, address, key: str, value: dict | None, *, others: dict | None = None):
        """Read (value None) or write the marker ``key`` in the target, with a short-lived connection
        (local mode allows one client per folder, and the copy opens its own); ``others``: the
        markers of other targets with these fields in the same state file, instead."""
        target = connect_target(self.options, address) if self.target is None else self.target
        try:
            store = _StateStore(target, self.options, key)
            if others is not None:
                return store.others(**others)
            if value is None:
                return store.load()
            store.save(value)
            return value
        finally:
            if target is not self.target:
                target.close()

    def _initial_copy(self, address) -> Plan:
        """:meth:`_copy_from_a_new_slot`, again from a new slot while a TRUNCATE or ALTER TABLE of the
        application waits for the copy to end (LockConflict): it goes first, then the copy."""
        for attempt in range(1, LOCK_CONFLICT_TRIES + 1):
            try:
                return self._copy_from_a_new_slot(address)
            except LockConflict as exc:
                let_it_go_first(exc, attempt, self.ui, self.stop, "copying again from a new slot")
        raise AssertionError("unreachable")

    def _copy_from_a_new_slot(self, address) -> Plan:
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
            if self.target is None:
                self.target = connect_target(options, address, ui)
            plan = self._copy_in_snapshot(address, snapshot_name)
        except (KeyboardInterrupt, Interrupted):
            rep.close()
            self._drop_slot_quietly()
            raise Interrupted(
                "Interrupted during the initial copy. Its snapshot ended with this run, so the replication "
                f"slot {self.slot!r} was dropped; the points written so far stay.",
                fix="rerun the same command: it copies every row again from a new snapshot (points are "
                    "overwritten by ID, those of rows deleted meanwhile are removed).") from None
        except BaseException:
            rep.close()
            self._drop_slot_quietly()
            raise
        rep.close()
        return plan

    def _copy_in_snapshot(self, address, snapshot_name: str) -> Plan:
        """Copy the table as of ``snapshot_name`` into ``self.target``, removing points of rows gone by then."""
        options, ui = self.options, self.ui
        # restart: progress saved by an earlier run was read in another snapshot, and the
        # stream starts at this snapshot, so every range is copied again from it.
        # delete_orphans: the collection may hold points of rows deleted before this snapshot
        # (an earlier copy, a stopped run, a lost slot); whoever created it, they go. migrate
        # compares the IDs in the snapshot only when the count says there can be any.
        copy_options = dataclasses.replace(options, restart=True, delete_orphans=True)
        result = migrate(copy_options, ui, snapshot_id=snapshot_name, target=self.target)
        result.summary(address.display()).render(ui)
        self.remember_written_with(result.plan)
        return result.plan

    # -- what the points are written with (a change made while sync was stopped) ----------
    def _written_with_key(self, plan: Plan) -> str:
        return f"written-with:{plan.collection}"

    def remember_written_with(self, plan: Plan) -> None:
        """Record what the collection's points are now written with (schema_watch.descriptor): the next
        start compares it with the table as it is then."""
        self._state(self.address, self._written_with_key(plan),
                    {"plan": schema_watch.descriptor(plan), "at": time.time()})

    def catch_up_with_the_table(self, plan: Plan) -> None:
        """Before streaming again: follow a change of the table's columns or partitions made while sync
        was stopped (every point rewritten as a fresh migrate writes it, the points of rows gone
        deleted), or stop with the fix when sync cannot follow it, as while streaming (schema_watch).

        Rows are read now, ahead of the changes the slot still holds: those are applied after, as
        after any re-read (and those decoded with the old columns are read again by key)."""
        record = self._state(self.address, self._written_with_key(plan), None)
        now = schema_watch.descriptor(plan)
        if record is None:  # written by a version that did not record it: from now on
            self.remember_written_with(plan)
            return
        before = {"bm25": {}, **record["plan"]}  # recorded before BM25 settings were: none then
        if before == now:
            return
        problem = schema_watch.unfollowable(before, now, self.options.columns)
        if problem is not None:
            raise InputError(f"{plan.table.display} changed while sync was stopped in a way sync cannot follow: "
                             f"{problem}. Nothing was written.", fix=schema_watch.RECOPY_FIX)
        if before["bm25"] != now["bm25"] and {k: v for k, v in before.items() if k != "bm25"} == \
                {k: v for k, v in now.items() if k != "bm25"}:
            self.ui.info(f"The --qdrant.bm25 settings differ from those {plan.collection!r} was written with: "
                         "rewriting every point with the new ones.")
        else:
            self.ui.info(f"{plan.table.display} changed while sync was stopped (its columns or partitions): "
                         f"rewriting every point of {plan.collection!r} as the table is now.")
        written = schema_watch.rewrite_points(self.options.pg_url, plan,
                                              Writer(self.target, plan.collection, batch_size=self.options.batch_size),
                                              row_mapper(plan))
        _reconcile_now(self.options, plan, self.target, self.ui, self.stats, fill=False)
        self.ui.info(f"Rewrote {written:,} point(s) of {plan.collection!r} with the current columns.")
        self.stats.schema_changes += 1
        self.remember_written_with(plan)

    def _drop_slot_quietly(self, wait_s: float = 2.0) -> None:
        """Drop our slot, waiting up to ``wait_s`` for a previous connection to let go of it.

        Used for a slot whose copy failed or was interrupted: it would hold WAL forever.
        """
        try:
            conn = connect.connect(self.options.pg_url, autocommit=True)
            try:
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    info = slots.slot_info(conn, self.slot)
                    if info is None or not info.active:
                        break
                    time.sleep(0.1)
                slots.drop_slot(conn, self.slot)
            finally:
                conn.close()
        except InputError:
            if wait_s > 2.0:
                raise
        except Exception as exc:  # the original error matters more
            log.debug("could not drop slot %s: %s", self.slot, exc)

    # -- streaming -----------------------------------------------------------------------
    def run(self) -> None:
        """Stream, reconnecting after failures (with backoff) until stopped or caught up."""
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        with StatusLine(self.ui, self.stats, self.sync.status_every_s, "cdc") as status:
            while not self.stop.is_set():
                applied_before = self.stats.changes
                started = time.monotonic()
                try:
                    self._session(status)
                    return  # stopped, or caught up (--sync.once)
                except (SlotBusy, ConnectionLost, *connect.CONNECTION_LOST, TargetError) as exc:
                    kind, why = self._failure(exc, progressed=self.stats.changes > applied_before)
                self.observer.error(kind)
                if self.stats.changes > applied_before or time.monotonic() - started > 60:
                    backoff.reset()
                delay = backoff.next()
                self.stats.reconnects += 1
                self.ui.warn(f"{why.strip()} - reconnecting in {delay:.1f} s (nothing unacknowledged is lost: "
                             "the slot resends it).")
                if self.stop.wait(delay):
                    return

    def _failure(self, exc: Exception, *, progressed: bool) -> tuple[str, str]:
        """(kind, why) of a failure worth reconnecting after; raises when it is time to give up."""
        if isinstance(exc, SlotBusy):
            self._busy_since = self._busy_since or time.monotonic()
            if time.monotonic() - self._busy_since > SLOT_BUSY_GIVE_UP_S:
                raise InputError(
                    f"Replication slot {self.slot!r} is in use by another connection: {exc.message}",
                    fix="another `pg2qdrant sync` is running for this collection; stop it, or use "
                        "another --sync.slot.") from None
            return "slot_busy", "the slot is still held by the previous connection"
        if isinstance(exc, TargetError):
            self._target_failures = 0 if progressed else self._target_failures + 1
            if self._target_failures >= TARGET_FAILURES_GIVE_UP:
                raise exc
            return "target", exc.message
        self._busy_since = None
        return "source", redaction.redact(getattr(exc, "message", None) or exc)

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
                                  self.options, self.plan, self.target, truncated, remaining, self.ui),
                              stats=self.stats)
            rep = ReplicationConnection(self.options.pg_url)
            rep.start(self.slot, self.publication)
            receiver = Receiver(plan, lookup, self.stats, self.ui.warn)
            ack = Acknowledger(rep.send_feedback, self.stats)
            stream = Stream(receiver, applier, ack, self.stats, observer=self.observer, stop=self.stop,
                            until_lsn=self.until_lsn,
                            watches=schema_watch.watches([self], [lookup], [receiver], [applier]))
            return stream.run(rep, status)
        finally:
            if rep is not None:
                rep.close()
            lookup.close()
