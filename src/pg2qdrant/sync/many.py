"""`sync --config FILE`: every table of a migration file through one publication and one slot.

Each table keeps its own context (a :class:`~.cdc.CdcSync` for its plan, checks, copy and
marker); the stream is shared. :class:`MultiReceiver` routes each pgoutput message to every
table that owns its relation (partitions included: a table's ``Receiver`` knows its leaves,
and looks up partitions created since); :class:`MultiApplier` applies the batch of every
touched table, and only then does the shared :class:`~.stream.Acknowledger` move the slot:
the slot's position is acknowledged once every collection touched up to it has applied.

A table added to the file later is *joined* at start-up, while the shared stream is
paused (the slot keeps its WAL meanwhile):

1. its marker is set to "not joined" (a crash from here on joins it again);
2. ``ALTER PUBLICATION ... ADD TABLE`` commits at LSN A: pgoutput decodes publication
   membership as of each change, so the slot sends every change of the table committed after A;
3. a TEMPORARY slot is created with an exported snapshot at its consistent point P > A
   (as PostgreSQL's own table synchronisation does), the table is copied from that snapshot,
   and the temporary slot goes with its connection; then the marker says "joined".

Every change committed before P is in the copy (the snapshot's guarantee), every change
committed after A reaches the shared slot, whose position C is before A (it was paused).
Changes between A and P are therefore applied a second time over the copy, in commit
order: for each point the last change up to P sets each column to its value at P (a
partial update sets only what it sent, a delete or TRUNCATE is followed by the later
inserts), so once the stream passes P the collection equals the table, as after any replay.
A table dropped from the file is dropped from our publication (its marker no longer counts).
"""

from __future__ import annotations

import threading
import time

from pg2qdrant.core.errors import InputError, LockConflict, SourceError
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.runtime.target import connect_target, target_identity
from pg2qdrant.source import connect, slots
from pg2qdrant.source.catalog import ident
from pg2qdrant.source.lsn import format_lsn
from pg2qdrant.source.pgoutput import Begin, Commit, Delete, Insert, Relation, Truncate, Update
from pg2qdrant.source.replication import ConnectionLost, ReplicationConnection
from pg2qdrant.sync import schema_watch
from pg2qdrant.sync.apply import Applier, ChangeBatch, SourceLookup
from pg2qdrant.sync.cdc import LOCK_CONFLICT_TRIES, CdcSync, let_it_go_first
from pg2qdrant.sync.options import LAG_WARN_BYTES, SyncOptions, SyncStats, _mib
from pg2qdrant.sync.reconcile import _reconcile_now, delete_truncated
from pg2qdrant.sync.status import StatusLine
from pg2qdrant.sync.stream import Acknowledger, Receiver, Stream
from pg2qdrant.ui import UI

MARKER = "cdc-many"  # marker key prefix: cdc-many:<collection>:<slot>[:<target>, with a state file]


def file_names(name: str, sync_options: SyncOptions) -> tuple[str, str]:
    """(slot, publication) of a migration file: --sync.slot / --sync.publication (top of the file),
    else pg2qdrant_file_<file name>."""
    return SyncOptions(slot=sync_options.slot, publication=sync_options.publication).names(f"file_{name}")


class MultiBatch:
    """One batch of the shared stream: a :class:`ChangeBatch` per table, the commits they close."""

    def __init__(self, parts: list[ChangeBatch]):
        self.parts = parts
        self.commit_end: int | None = None
        self.commit_times: list = []
        self.opened = time.monotonic()

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def items(self) -> list:
        return [item for p in self.parts for item in p.items]

    def __bool__(self) -> bool:
        return any(p.items for p in self.parts) or self.commit_end is not None


class MultiReceiver(Receiver):
    """receive for several tables: row changes go to every receiver owning their relation."""

    def __init__(self, receivers: list[Receiver], stats: SyncStats):  # Receiver.__init__ is per table: not called
        self.receivers = receivers
        self.stats = stats
        self.route: dict[int, list[Receiver]] = {}  # relation -> every receiver whose table owns it
        self.in_txn = False
        self.txn_time: float | None = None
        self.last_data = time.monotonic()
        self.touched: set[Receiver] = set()  # the receivers the open transaction has changes for
        self.batch = self._new_batch()

    def _new_batch(self) -> MultiBatch:
        for r in self.receivers:
            r.batch = ChangeBatch()
        return MultiBatch([r.batch for r in self.receivers])

    def take(self, message) -> None:
        if isinstance(message, (Insert, Update, Delete)):
            for owner in self.route.get(message.relation, ()):  # none: a relation of no table of ours
                owner.take(message)
                self.touched.add(owner)
        elif isinstance(message, Begin):
            super().take(message)
        elif isinstance(message, Commit):
            super().take(message)
            for r in self.touched:  # each table's part knows its commits (latency per table)
                r.batch.commit_times.append(message.commit_time)
            self.touched.clear()
        elif isinstance(message, Relation):
            # Several entries may own one relation (one table, other filters or targets; a parent and
            # its partition): each of them gets its changes.
            for r in self.receivers:
                r.take(message)
            self.route[message.oid] = [r for r in self.receivers if message.oid in r.ours]
        elif isinstance(message, Truncate):  # one TRUNCATE may name relations of several tables
            for r in self.receivers:
                before = r.batch.rows
                r.take(message)
                if r.batch.rows > before:
                    self.touched.add(r)

    def take_batch(self) -> MultiBatch:
        batch, self.batch = self.batch, self._new_batch()
        return batch


class MultiApplier:
    """apply for several tables: each table's part through its own Applier (wait=true)."""

    def __init__(self, appliers: list[Applier]):
        self.appliers = appliers
        self.changes = [0] * len(appliers)  # per table, for the summary

    def apply(self, batch: MultiBatch) -> int:
        n = 0
        for i, (applier, part) in enumerate(zip(self.appliers, batch.parts)):
            if part.items:
                done = applier.apply(part)
                self.changes[i] += done
                n += done
        return n


class ManySync(CdcSync):
    """CDC for the tables of a migration file through one publication and one slot."""

    def __init__(self, entries: list[MigrationOptions], sync_options: SyncOptions, ui: UI, stop: threading.Event,
                 stats: SyncStats):
        urls = {o.pg_url for o in entries}
        if len(urls) > 1:
            raise InputError("The tables of a file synced through one slot must come from one database "
                             "(pg.url differs between entries).",
                             fix="set pg.url once at the top of the file, or sync each database with its own file.")
        super().__init__(entries[0], sync_options, ui, stop, stats)
        self.tables = [CdcSync(o, sync_options, ui, stop, stats) for o in entries]
        self.changes_by_table = [0] * len(entries)
        self._targets: dict[tuple, object] = {}

    # -- setup ---------------------------------------------------------------------------
    def prepare(self) -> None:
        ui = self.ui
        addresses = []
        for t in self.tables:
            address, plan = t._plan()
            t.plan = t._follow_changes(plan)  # a view: its store table is published (pgai)
            t.address = address
            addresses.append(address)
        seen: dict[tuple, str] = {}
        for t, address in zip(self.tables, addresses):  # one collection name on two targets is fine
            where = (_identity(address), t.plan.collection)
            if where in seen:
                raise InputError(f"Entries {seen[where]} and {t.plan.table.display} write the same collection "
                                 f"{t.plan.collection!r} of {address.display()}.",
                                 fix="give each entry its own qdrant.collection (or qdrant.url).")
            seen[where] = t.plan.table.display
        settings: dict = {}
        existing = None
        for t in self.tables:  # logical WAL, replica identities, a reusable slot: before any side effect
            settings, existing = t._check_source(t.plan)
        for t, address in zip(self.tables, addresses):
            t.target = self._target(t, address)
        self.plan = self.tables[0].plan
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            published = slots.published_tables(conn, self.publication)
        finally:
            conn.close()
        self._start_or_resume(addresses, existing, published or {})
        if settings.get("max_slot_wal_keep_size") in ("-1", None):
            ui.info("Note: max_slot_wal_keep_size is unlimited: while sync is stopped the slot keeps all WAL. "
                    "Remove an abandoned slot with `pg2qdrant sync --config FILE drop`.")
        if self.sync.once:
            conn = connect.connect(self.options.pg_url, autocommit=True)
            try:
                self.until_lsn = slots.current_wal_lsn(conn)
            finally:
                conn.close()

    def _start_or_resume(self, addresses, existing: slots.SlotInfo | None, published: dict[int, str]) -> None:
        """Start (no slot yet) or resume; while a TRUNCATE or ALTER TABLE of the application waits for a copy
        to end (LockConflict), it goes first and the tables not yet joined are copied again (as in
        CdcSync._initial_copy): the slot, once created, stays, so the retry resumes from it."""
        for attempt in range(1, LOCK_CONFLICT_TRIES + 1):
            try:
                if existing is None:
                    self._note_own_slots()
                    self._start(addresses)
                else:
                    self._resume(addresses, existing, published)
                return
            except LockConflict as exc:
                let_it_go_first(exc, attempt, self.ui, self.stop, "the tables not yet copied are copied again")
            for t in self.tables:
                _, existing = t._check_source(t.plan)
            conn = connect.connect(self.options.pg_url, autocommit=True)
            try:
                published = slots.published_tables(conn, self.publication) or {}
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def _note_own_slots(self) -> None:
        """The file's first start: an entry synced alone before (as a file of one entry was) left its own
        slot, which keeps WAL until dropped."""
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            left = {name: t for t in self.tables if (name := SyncOptions().names(t.options.collection)[0])
                    != self.slot and slots.slot_info(conn, name) is not None}
        finally:
            conn.close()
        for name, t in left.items():
            self.ui.warn(f"replication slot {name!r} of an earlier sync of {t.plan.table.display} alone exists; "
                         f"the file syncs through slot {self.slot!r}. Unless another sync uses it, drop it "
                         f"(`pg2qdrant sync drop --qdrant.collection {t.options.collection}` with the same --pg.url): "
                         "it keeps WAL.")

    def _target(self, t: CdcSync, address):
        """One client per Qdrant address: local mode allows one per folder, an in-memory one holds its data."""
        key = (_identity(address), t.options.api_key)
        if key not in self._targets:
            self._targets[key] = connect_target(t.options, address, self.ui)
        return self._targets[key]

    def _marker(self, t: CdcSync, address, joined: bool | None) -> bool:
        """Read (``joined`` None: True when the table joined this slot) or write the table's marker."""
        plan = t.plan
        value = {"slot": self.slot, "database": plan.server.database, "system": plan.server.system_identifier}
        key = f"{MARKER}:{t.options.collection}:{self.slot}"  # a state file's key also names the target (state.py)
        if joined is None:
            marker = t._state(address, key, None)
            return bool(marker and marker.get("joined") and all(marker.get(k) == v for k, v in value.items()))
        t._state(address, key, {**value, "joined": joined, "at": time.time()})
        return joined

    def _publish(self, t: CdcSync, published: dict[int, str]) -> None:
        """The table in the shared publication (created with the first table), with ensure_publication's checks."""
        missing = [r for r in _published(t.plan) if r.oid not in published]
        if published and missing:  # (another entry may have published it already)
            conn = connect.connect(self.options.pg_url, autocommit=True)
            try:
                for r in missing:
                    slots.alter_publication(conn, self.publication, "ADD", ident(r))
            finally:
                conn.close()
            self.ui.info(f"Added {', '.join(r.display for r in missing)} to publication {self.publication!r}.")
        t._ensure_publication(t.plan)
        published.update({r.oid: r.display for r in _published(t.plan)})

    def _start(self, addresses) -> None:
        """No slot yet: publish every table, then create the slot (copying from its snapshot when asked)."""
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            published = slots.published_tables(conn, self.publication) or {}
        finally:
            conn.close()
        for t in self.tables:
            if not self.sync.initial_copy:
                t._check_collection(t.plan)
            self._publish(t, published)
        if not self.sync.initial_copy:
            self._create_slot()
            for t, address in zip(self.tables, addresses):
                self._marker(t, address, True)
                t.remember_written_with(t.plan)
                if self.sync.reconcile:
                    _reconcile_now(t.options, t.plan, t.target, self.ui, self.stats)
            return
        rep = ReplicationConnection(self.options.pg_url)
        try:
            lsn, snapshot_name = rep.create_slot(self.slot, export_snapshot=True)
            self.ui.info(f"Created replication slot {self.slot!r}; copying {_count(self.tables)} as of its "
                         f"snapshot (changes after {format_lsn(lsn)} are streamed next).")
            for i, (t, address) in enumerate(zip(self.tables, addresses), 1):
                self.ui.info(f"[{i}/{len(self.tables)}] {t.plan.table.display} -> {t.plan.collection!r}")
                self._copy(t, address, snapshot_name)
                # A table copied is joined: should the run stop before the others, they join on restart.
                self._marker(t, address, True)
        finally:
            rep.close()

    def _resume(self, addresses, existing: slots.SlotInfo, published: dict[int, str]) -> None:
        ui = self.ui
        ui.info(f"Resuming from replication slot {self.slot!r} (last applied LSN "
                f"{format_lsn(existing.confirmed_flush)}, {_mib(existing.lag_bytes)} behind).")
        if existing.lag_bytes > LAG_WARN_BYTES:
            ui.warn(f"the slot holds {_mib(existing.lag_bytes)} of WAL not yet applied; catching up.")
        self._leave(published)
        joined = [all(r.oid in published for r in _published(t.plan)) and self._marker(t, address, None)
                  for t, address in zip(self.tables, addresses)]
        for t, address, ok in zip(self.tables, addresses, joined):
            if ok:
                t._check_collection(t.plan)
                t._ensure_publication(t.plan)
                t.catch_up_with_the_table(t.plan)
            else:
                self._join(t, address, published)
        if self.sync.reconcile:
            for t, ok in zip(self.tables, joined):
                if ok:
                    _reconcile_now(t.options, t.plan, t.target, ui, self.stats)

    def _leave(self, published: dict[int, str]) -> None:
        """Tables published but no longer in the file leave our publication (so that, if they come back,
        they are joined again with a copy)."""
        kept = {r.oid for t in self.tables for r in _published(t.plan)}
        gone = {oid: name for oid, name in published.items() if oid not in kept}
        if not gone:
            return
        conn = connect.connect(self.options.pg_url, autocommit=True)
        try:
            if not slots.publication_is_ours(conn, self.publication):
                self.ui.warn(f"publication {self.publication!r} also publishes {', '.join(gone.values())}, which "
                             "the file does not name: their changes are read and skipped.")
                return
            for oid, name in gone.items():
                slots.alter_publication(conn, self.publication, "DROP", name)
                del published[oid]
                self.ui.info(f"{name} is no longer in the file: removed from publication {self.publication!r}.")
        finally:
            conn.close()

    def _join(self, t: CdcSync, address, published: dict[int, str]) -> None:
        """A table new to the slot: published, then copied from a snapshot taken after that (see the module
        docstring for why nothing is lost)."""
        self._marker(t, address, False)
        self._publish(t, published)
        rep = ReplicationConnection(self.options.pg_url)
        try:
            lsn, snapshot_name = rep.create_slot(slots.derived_name(self.slot, "join"), export_snapshot=True,
                                                 temporary=True)
            self.ui.info(f"Joining {t.plan.table.display} to slot {self.slot!r}: copying it as of "
                         f"{format_lsn(lsn)}; its changes since are replayed from the slot.")
            self._copy(t, address, snapshot_name)
        finally:
            rep.close()  # the temporary slot goes with its connection
        self._marker(t, address, True)

    @staticmethod
    def _copy(t: CdcSync, address, snapshot_name: str) -> None:
        """Copy the table as of the snapshot; a view then follows its store table again, as in CdcSync.prepare."""
        t.plan = t._follow_changes(t._copy_in_snapshot(address, snapshot_name))

    # -- streaming -----------------------------------------------------------------------
    def _session(self, status: StatusLine) -> bool:
        lookups: list[SourceLookup] = []
        rep: ReplicationConnection | None = None
        try:
            try:
                for t in self.tables:
                    lookups.append(SourceLookup(self.options.pg_url, t.plan))
            except SourceError as exc:  # unreachable: retried
                raise ConnectionLost(exc.message, fix=exc.fix) from None
            appliers = [Applier(t.plan, t.target, lookup, batch_size=t.options.batch_size,
                                on_partial_truncate=_partial_truncate(t, self.ui), stats=self.stats)
                        for t, lookup in zip(self.tables, lookups)]
            receivers = [Receiver(t.plan, lookup, self.stats, self.ui.warn) for t, lookup in zip(self.tables, lookups)]
            applier = MultiApplier(appliers)
            rep = ReplicationConnection(self.options.pg_url)
            rep.start(self.slot, self.publication)
            ack = Acknowledger(rep.send_feedback, self.stats)
            stream = Stream(MultiReceiver(receivers, self.stats), applier, ack, self.stats, observer=self.observer,
                            stop=self.stop, until_lsn=self.until_lsn,
                            watches=schema_watch.watches(self.tables, lookups, receivers, appliers))
            try:
                return stream.run(rep, status)
            finally:
                self.changes_by_table = [a + b for a, b in zip(self.changes_by_table, applier.changes)]
        finally:
            if rep is not None:
                rep.close()
            for lookup in lookups:
                lookup.close()

    def close(self) -> None:
        for t in self.tables:
            t.target = None
        for target in self._targets.values():
            target.close()
        self._targets.clear()
        self.target = None


def _count(tables: list) -> str:
    return f"{len(tables)} table" + ("s" if len(tables) != 1 else "")


def _published(plan) -> tuple:
    """The relations the publication names for an entry: its table, or the store table(s) its view follows."""
    return plan.table.change_tables or (plan.table,)


def _identity(address) -> tuple:
    """Which Qdrant an entry writes to, however its URL is spelled (pipeline.target_identity)."""
    return tuple(sorted(target_identity(address).items()))


def _partial_truncate(t: CdcSync, ui: UI):
    return lambda truncated, remaining: delete_truncated(t.options, t.plan, t.target, truncated, remaining, ui)


def run_many(entries: list[MigrationOptions], sync_options: SyncOptions, ui: UI, *, initial_copy: bool | None = None,
             stop: threading.Event | None = None, stats: SyncStats | None = None, service=None) -> SyncStats:
    """`sync --config FILE` (and `migrate --config FILE --then-sync`): like run_sync, for several tables."""
    from pg2qdrant.sync import _summary
    from pg2qdrant.sync.status import _StopSignals
    if initial_copy is not None:
        sync_options.initial_copy = initial_copy
    if sync_options.mode != "cdc":
        raise InputError(f"--sync.mode {sync_options.mode} follows one table at a time; with a file of "
                         f"{len(entries)} tables only cdc (one slot for all) is supported.",
                         fix="run one entry at a time with --only NAME, or use --sync.mode cdc.")
    for options in entries:
        sync_options.validate(options)
    stop = stop or threading.Event()
    stats = stats or SyncStats()
    runner = ManySync(entries, sync_options, ui, stop, stats)
    try:
        runner.prepare()
        if service is not None:
            runner.observer = service.sync_observer(stats, runner.slot, tables=[
                (t.options.table, t.plan.collection) for t in runner.tables])
        with _StopSignals(stop):
            ui.info(f"Streaming changes of {_count(runner.tables)} (slot {runner.slot}, publication "
                    f"{runner.publication}): " + ", ".join(f"{t.plan.table.display} -> {t.plan.collection!r}"
                                                         for t in runner.tables)
                    + "; stop with Ctrl-C or SIGTERM.")
            runner.run()
    finally:
        runner.close()
    summary = _summary(sync_options, runner, stats)
    summary.rows += [(f"changes: {t.plan.collection}", f"{n:,}")
                     for t, n in zip(runner.tables, runner.changes_by_table)]
    summary.render(ui)
    return stats
