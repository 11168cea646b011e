"""The migrate flow: catalog -> plan -> checks -> ranges -> [read -> map -> write] -> summary.

This module owns the order of operations and the guarantees between them:
every check that can fail on user input runs before the first write; all
reads happen in one snapshot; the end compares what was read with what the
collection holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import DataError, Interrupted, Pg2QdrantError, SourceError
from pg2qdrant.core.options import READ_BATCH_ROWS, ROWS_PER_RANGE, MigrationOptions
from pg2qdrant.core.plan import Plan, plan_fingerprint
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.checkpoints import MigrationState, StateStore, state_id_for
from pg2qdrant.destination.server import wire_for
from pg2qdrant.destination.writer import Writer, request_points
from pg2qdrant.migrate.workers import DryRunTarget, ReaderPool, ReaderSpec, SharedReaders, TableReads, WriteSpec
from pg2qdrant.runtime.session import SourceSession, open_source
from pg2qdrant.runtime.target import (
    connect_target,
    describe_target,
    ensure_collection,
    source_identity,
    state_store,
    strict_mode_indexes,
    target_identity,
    target_settings,
)
from pg2qdrant.source import connect, reader, snapshot
from pg2qdrant.source.reader import ReadRange
from pg2qdrant.ui import UI, Summary, render_plan

RANGES_PER_WORKER = 4


@dataclass
class MigrationResult:
    plan: Plan
    source_rows: int
    points_written: int
    target_count: int
    seconds: float
    dry_run: bool = False
    workers: int = 1
    ranges: int = 1
    range_kind: str = "key"
    resumed_rows: int = 0
    retries: int = 0
    already_complete: bool = False
    orphans_deleted: int | None = None  # None: the IDs were not compared (no --migration.delete-orphans)

    @property
    def rate(self) -> float:
        return self.points_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def ranges_text(self) -> str:
        kind = {"key": "key ranges", "ctid": "page ranges", "all": "one pass"}.get(self.range_kind, self.range_kind)
        return f"{self.workers} / {self.ranges} {kind}"

    def summary(self, target: str) -> Summary:
        if self.already_complete:
            return Summary("Migration already complete", [
                ("source", f"{self.plan.table.display} ({self.source_rows:,} rows in the snapshot)"),
                ("target", f"{self.plan.collection} at {target}"),
                ("points in collection", f"{self.target_count:,}"),
                *self._deleted_row(),
                ("verdict", self.verdict),
                ("to copy again", "--migration.restart"),
            ])
        if self.dry_run:
            return Summary("Dry run summary (nothing written)", [
                ("source", f"{self.plan.table.display} ({self.source_rows:,} rows in the snapshot)"),
                ("rows read, mapped and validated", f"{self.points_written:,}"),
                ("workers / ranges", self.ranges_text),
                ("time", f"{self.seconds:,.1f} s"),
                ("rate", f"{self.rate:,.0f} rows/s"),
            ])
        rows = [
            ("source", f"{self.plan.table.display} ({self.source_rows:,} rows in the snapshot)"),
            ("target", f"{self.plan.collection} at {target}"),
            ("points written", f"{self.points_written:,}"
             + (f" (+{self.resumed_rows:,} by earlier runs)" if self.resumed_rows else "")),
            ("points in collection", f"{self.target_count:,}"),
            ("workers / ranges", self.ranges_text),
            ("time", f"{self.seconds:,.1f} s"),
            ("rate", f"{self.rate:,.0f} rows/s"),
        ]
        if self.retries:
            rows.append(("transient failures retried", f"{self.retries:,}"))
        rows += [*self._deleted_row(), ("verdict", self.verdict)]
        return Summary("Migration summary", rows)

    def _deleted_row(self) -> list[tuple[str, str]]:
        return [] if self.orphans_deleted is None else [("points without a row deleted", f"{self.orphans_deleted:,}")]

    @property
    def verdict(self) -> str:
        """Whether the collection now equals the table (the snapshot's rows), and if not, what to do.

        Equal counts prove equal ID sets when this run wrote every row of its snapshot
        (each write acknowledged), or when the IDs were compared (--migration.delete-orphans);
        rows copied by earlier runs were read in older snapshots, which only verify can vouch for.
        """
        extra = self.target_count - self.source_rows
        if extra > 0:
            return (f"NOT an exact copy: {orphan_text(extra, exact=self.exact_rows)}; "
                    "rerun with --migration.delete-orphans to delete them")
        if extra < 0:
            return f"NOT an exact copy: {-extra:,} row(s) have no point"
        if self.orphans_deleted is None and (self.resumed_rows or self.already_complete):
            return ("as many points as rows; parts were copied by earlier runs from older snapshots: "
                    "`pg2qdrant verify` compares every ID")
        return "the collection equals the table: one point per row, no other point"

    @property
    def exact_rows(self) -> bool:
        """Every row of the snapshot has its point (written by this run or matched by ID)."""
        return self.orphans_deleted is not None or not (self.resumed_rows or self.already_complete)


def orphan_text(extra: int, *, exact: bool) -> str:
    return (f"{'' if exact else 'at least '}{extra:,} point(s) have no row in the table (rows deleted since an "
            "earlier copy, or points written by something else)")


# ---------------------------------------------------------------------------------------
# Source side: plan and checks, all inside one snapshot
# ---------------------------------------------------------------------------------------




@dataclass
class SharedCopy:
    """What the tables of one `migrate --config --migration.consistent` run share: the exported
    snapshot (held by ``conn`` until :meth:`close`), the reader pool (processes started once, for
    every table) and what the checks before the first copy found in that snapshot: each table's
    row count and that its keys passed (the same snapshot gives the same answers, so the copies
    do not scan again)."""

    conn: connect.Connection
    readers: SharedReaders = field(default_factory=SharedReaders)
    # (table, --pg.where, key columns, id mode) -> rows (None: not counted): the key checks passed
    checked: dict[tuple, int | None] = field(default_factory=dict)

    def close(self) -> None:
        self.readers.close()
        self.conn.close()

    @staticmethod
    def _key(options: MigrationOptions) -> tuple:
        return options.table, options.where, tuple(options.key_columns), options.id_mode

    def counted(self, options: MigrationOptions) -> int | None:
        return self.checked.get(self._key(options))

    def keys_checked(self, options: MigrationOptions) -> bool:
        return self._key(options) in self.checked

    def remember(self, options: MigrationOptions, rows: int | None) -> None:
        """The checks of ``options`` passed in the snapshot (a session was opened), with this count."""
        self.checked[self._key(options)] = rows


# ---------------------------------------------------------------------------------------
# Target side
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# The copy
# ---------------------------------------------------------------------------------------

def plan_read_ranges(conn: connect.Connection, plan: Plan, workers: int,
                     range_rows: int | None = None) -> list[ReadRange]:
    """Ranges sized so that workers share the work and a range stays a small unit of resume.

    Key ranges when the key allows (safe to resume across snapshots), else page ranges.
    """
    rows = max(plan.table.estimated_rows, 1)
    per_range = range_rows or ROWS_PER_RANGE
    wanted = max(-(-rows // per_range), 1)
    if rows >= per_range // 4:  # a few ranges per worker keep them all busy until the end
        wanted = max(wanted, RANGES_PER_WORKER * max(workers, 1))
    key = reader.key_range_column(plan)
    if key is not None:
        return reader.plan_key_ranges(conn, plan, key[0], key[1], wanted)
    total_pages = sum(leaf.pages for leaf in plan.table.leaves)
    pages = max(1, -(-total_pages // wanted)) if total_pages else 1
    return reader.plan_ctid_ranges(plan.table, server_version=plan.server.version_num, pages_per_range=pages)


# complexity: the copy's order of operations (checks, saved progress, collection, ranges, orphans, HNSW, verdict) in
# one place, on purpose.
def migrate(options: MigrationOptions, ui: UI, *, show_plan: bool = False,
            snapshot_id: str | None = None, target=None) -> MigrationResult:
    """Copy the table (resuming a stopped run); with ``snapshot_id`` read that exported snapshot.

    ``target``: an open target to write to (sync's initial copy shares its client: a
    ``:memory:`` collection lives in one client, local mode allows one per folder).
    """
    options.validate()
    address = parse_target_url(options.qdrant_url)  # input errors before any connection
    started = time.monotonic()
    shared = options.shared_copy if snapshot_id is None else None
    session = open_source(options, ui, snapshot_id=snapshot_id or options.shared_snapshot,
                          rows=shared.counted(options) if shared is not None else None,
                          keys_checked=shared is not None and shared.keys_checked(options))
    own_target = target is None
    try:
        plan = session.plan
        if show_plan:
            render_plan(ui, plan, address.display())
        else:
            for w in plan.warnings:
                ui.warn(w)
            for note in plan.index_notes:
                ui.info(note)
        source_rows = session.source_rows
        if options.dry_run:
            ranges = plan_read_ranges(session.conn, plan, options.num_workers, options.range_rows)
            run = CopyRun(session, None, ranges, options, ui, state=None, store=None)
            written = run.execute(source_rows)
            result = MigrationResult(plan, source_rows, written, 0, time.monotonic() - started,
                                     dry_run=True, workers=run.pool_workers, ranges=len(ranges),
                                     range_kind=_kind(ranges))
            _check_result(result, ui)
            return result
        if own_target:
            target = connect_target(options, address, ui)
        store = state_store(options, target)
        exists = target.shape(plan.collection) is not None
        if not exists and not options.create_collection:  # stop before saved progress is judged or replaced
            ensure_collection(target, plan, options.collection_options(plan.payload_indexes), create=False, ui=ui)
        if exists:  # strict mode's needs, proven before the state record is written
            strict_mode_indexes(target, plan.collection_spec(options.collection_options(plan.payload_indexes)),
                                create=False)
        state, _ = _load_or_start_state(session, plan, options, store, ui, target, target_identity(address),
                                        exists)
        if state.status == "complete":
            deleted = delete_orphans(session, options.pg_url, target, ui) if options.delete_orphans else None
            count = target.count(plan.collection)
            ui.info(f"Migration of {plan.table.display} into {plan.collection!r} is already complete "
                    f"({count:,} points; state in {store.describe()}). Nothing to copy; pass "
                    "--migration.restart to copy again.")
            result = MigrationResult(plan, source_rows, 0, count, time.monotonic() - started,
                                     already_complete=True, ranges=len(state.ranges), orphans_deleted=deleted)
            _check_result(result, ui)
            return result
        collection_options = options.collection_options(plan.payload_indexes)
        if not state.collection_created and options.create_collection and not exists:
            # Recorded before creating: a run killed right after creation still restores HNSW at the end.
            state.collection_created = True
            store.save(state)
        ensure_collection(target, plan, collection_options, create=options.create_collection, ui=ui,
                          batch_size=options.batch_size)
        ranges = [ReadRange.from_json(r) for r in state.ranges]
        run = CopyRun(session, target, ranges, options, ui, state=state, store=store)
        written = run.execute(source_rows)
        deleted = None
        if options.delete_orphans:
            deleted = 0  # when this run wrote every row's point, a count no higher than the rows has no orphan
            if run.resumed_rows or target.count(plan.collection) > source_rows:
                deleted = delete_orphans(session, options.pg_url, target, ui)
        target.finish_load(plan.collection_spec(collection_options), state.collection_created)
        state.status = "complete"
        store.save(state)
        target_count = target.count(plan.collection)
        retries = target.retries + run.target_retries + run.source_retries
    finally:
        if target is not None and own_target:
            target.close()
        session.close()
    result = MigrationResult(plan, source_rows, written, target_count, time.monotonic() - started,
                             workers=run.pool_workers, ranges=len(ranges),
                             range_kind=_kind(ranges), resumed_rows=run.resumed_rows, retries=retries,
                             orphans_deleted=deleted)
    _check_result(result, ui)
    return result


def delete_orphans(session: SourceSession, pg_url: str, target, ui: UI) -> int:
    """--migration.delete-orphans: delete the points that no row of the snapshot maps to.

    Deleting only those keeps the collection serving (and its settings, aliases and
    indexes) where recreating it would not, and works with --migration.create-collection
    false. The comparison is verify's memory-bounded ID scan, in the copy's snapshot:
    rows copied by earlier runs were read in older snapshots, so a point whose row was
    deleted since is an orphan here and goes too.
    """
    from pg2qdrant.runtime.ids import scan_ids  # the verify package is not needed by a plain copy
    plan = session.plan
    conn = session.conn
    if not connect.usable(conn):  # PostgreSQL restarted during the copy: compare in a new snapshot
        session.conn = conn = connect.connect(pg_url, autocommit=True)
        snapshot.begin_snapshot(conn)
    ui.info(f"Comparing the IDs of {plan.table.display} with the points of {plan.collection!r} to delete "
            "points that have no row (--migration.delete-orphans).")
    scan = scan_ids(conn, plan, target, plan.collection, expected_points=session.source_rows or 0,
                    on_orphans=lambda ids: target.delete_points(plan.collection, ids))
    if scan.orphans:
        ui.info(f"Deleted {scan.orphans:,} point(s) of {plan.collection!r} that have no row in "
                f"{plan.table.display}.")
    return scan.orphans


def _kind(ranges: list[ReadRange]) -> str:
    return ranges[0].kind if ranges else "all"


# complexity: the resume decision table: saved progress kept, voided (collection gone or emptied), ignored
# (--migration.restart, a shared snapshot), each with its message.
def _load_or_start_state(session: SourceSession, plan: Plan, options: MigrationOptions, store: StateStore,
                         ui: UI, target, where: dict, exists: bool) -> tuple[MigrationState, bool]:
    """The saved progress to resume, or a new one: saved progress only counts for the target it
    describes (``where``, the collection ``exists`` and still holds the rows it records)."""
    source = source_identity(plan)
    fingerprint = plan_fingerprint(plan)
    state_id = state_id_for(source, plan.collection, fingerprint, where if options.state_file else None)
    state = store.load(state_id)
    if state is None and options.state_file:
        _note_other_targets(store, source, plan, fingerprint, where, ui)
    restart = options.restart or options.shared_snapshot is not None
    void = None if state is None or restart else _void_progress(state, target, plan.collection, exists)
    if state is not None and not restart and void is None:
        if state.status != "complete":
            ui.info(f"Resuming the migration of {plan.table.display} into {plan.collection!r}: "
                    f"{len(state.done)} of {len(state.ranges)} ranges ({state.rows_done:,} rows) were "
                    f"completed by an earlier run (state in {store.describe()}).")
        return state, True
    if void is not None:
        ui.warn(f"{void}, so the saved progress of an earlier run ({len(state.done)} of {len(state.ranges)} "
                f"ranges, {state.rows_done:,} rows, in {store.describe()}) does not describe it: "
                "starting over and copying everything.")
    elif state is not None and not options.restart:
        ui.warn(f"--migration.consistent: the saved progress of an earlier run ({len(state.done)} of "
                f"{len(state.ranges)} ranges) was read in another snapshot, which ended with that run; copying "
                f"every row of {plan.table.display} again, in this run's snapshot.")
    elif state is not None:
        ui.info("--migration.restart: earlier progress is ignored; copying everything again.")
    ranges = plan_read_ranges(session.conn, plan, options.num_workers, options.range_rows)
    fresh = MigrationState(state_id=state_id, source=source, collection=plan.collection,
                           plan_fingerprint=fingerprint, ranges=[r.to_json() for r in ranges], target=where,
                           # a collection an earlier run created (HNSW off) still gets HNSW at the end
                           collection_created=exists and state is not None and state.collection_created)
    store.save(fresh)  # before the first write: a killed run is resumable from here
    return fresh, False


def _void_progress(state: MigrationState, target, collection: str, exists: bool) -> str | None:
    """Why saved progress cannot describe the collection as it is now (None when it can)."""
    if not exists:
        return f"Collection {collection!r} does not exist (deleted since the earlier run?)"
    count = target.count(collection)
    if count < state.rows_done:
        return (f"Collection {collection!r} holds {count:,} points, fewer than the {state.rows_done:,} rows "
                "already copied into it (it was recreated, or points were deleted)")
    return None


def _note_other_targets(store: StateStore, source: dict, plan: Plan, fingerprint: str, where: dict,
                        ui: UI) -> None:
    """Say so when the state file holds this migration's progress for other targets only (not used here)."""
    others = [s for s in store.list() if s.source == source and s.collection == plan.collection
              and s.plan_fingerprint == fingerprint and s.target != where]
    if others:
        ui.info(f"{store.describe()} holds progress of this migration for another target "
                f"({', '.join(sorted({describe_target(s.target) or 'unknown' for s in others}))}); it does not "
                f"apply to {describe_target(where)}: copying everything.")


class CopyRun:
    """One pass over the ranges not yet complete: workers read, map and write; here, per-range bookkeeping.

    A range is complete when its reader reported how many rows it read AND Qdrant
    acknowledged that many points for the same attempt; only then is it recorded
    in the state. A range whose read failed (PostgreSQL dropped the connection) is
    queued again, up to --migration.max-retries times.

    For a server, each worker writes through its own connection and reports counts;
    an in-process target (Edge, local mode) locks its folder, so there the workers
    send batches and this process is the one writer.
    """

    def __init__(self, session: SourceSession, target, ranges: list[ReadRange], options: MigrationOptions,
                 ui: UI, *, state: MigrationState | None, store: StateStore | None):
        self.session, self.target, self.options, self.ui = session, target, options, ui
        self.state, self.store = state, store
        self.by_index = {r.index: r for r in ranges}
        self.todo = [r for r in ranges if state is None or not state.is_done(r.index)]
        self.resumed_rows = state.rows_done if state is not None else 0
        self.attempt: dict[int, int] = {r.index: 0 for r in self.todo}
        self.read_rows: dict[int, int] = {}  # range -> rows of its current attempt (once known)
        self.written: dict[int, int] = {}  # range -> points acknowledged for its current attempt
        self.remaining = {r.index for r in self.todo}
        self.changed: set[int] = set()  # ranges whose counts moved since the last completion check
        self.source_retries = 0
        self.target_retries = 0  # transient Qdrant failures retried by workers
        self.pool_workers = 1
        self.rows = 0

    # complexity: sets up readers for the three ways a copy runs (one thread, a process pool, the shared pool of a
    # consistent run) and tears them down on every exit path.
    def execute(self, source_rows: int) -> int:
        plan = self.session.plan
        verb = "Reading and mapping (dry run)" if self.target is None else "Copying"
        if not self.todo:
            return 0
        settings = target_settings(self.options)
        workers_write = self.target is not None and not settings.in_process
        write = None
        if workers_write:
            write = WriteSpec(settings, plan.collection, request_points(self.target, plan.collection,
                                                                        self.options.batch_size),
                              self.options.batch_delay_ms / 1000.0)
        elif self.target is None:  # the dry run: the same requests, dropped
            dry = DryRunTarget(wire_for(settings.address), settings.capabilities.max_request_bytes)
            write = WriteSpec(dry, plan.collection, self.options.batch_size, 0.0)
        spec = ReaderSpec(self.options.pg_url, self.session.snapshot_id, plan, batch_rows=READ_BATCH_ROWS,
                          secrets=redaction.registered(), write=write)
        self.pool_workers = max(1, min(self.options.num_workers, len(self.todo)))
        sends_batches = self.target is not None and not workers_write
        readers = self.options.shared_copy.readers if self.options.shared_copy is not None else None
        with self.ui.progress(source_rows, f"{verb} {plan.table.display}",
                              copy_of=(self.options.table, plan.collection)) as progress:
            progress.start_at(self.resumed_rows)
            progress.ranges_total, progress.ranges_done = len(self.by_index), len(self.by_index) - len(self.todo)
            self.progress = progress
            writer = None if self.target is None or workers_write else Writer(
                self.target, plan.collection, batch_size=self.options.batch_size,
                delay_s=self.options.batch_delay_ms / 1000.0, on_written=self._written)
            pool = readers.pool_for(self.pool_workers, self.options.num_workers, sends_batches=sends_batches) \
                if readers is not None else ReaderPool(self.pool_workers, sends_batches=sends_batches).start()
            complete = False
            try:
                self._loop(pool.reads(spec, self.todo), writer)
                complete = True
            except KeyboardInterrupt:
                raise self._interrupted() from None
            except Pg2QdrantError as exc:
                if self.state is not None:
                    exc.message += (f" Progress is saved ({len(self.state.done)} of {len(self.state.ranges)} "
                                    "ranges complete): rerun the same command to resume.")
                raise
            finally:
                if readers is None:
                    pool.stop()
                elif not complete:  # its readers may be mid-range: the next table starts new ones
                    readers.close()
                if writer is not None:
                    writer.close()
        return self.rows

    def _loop(self, pool: TableReads, writer: Writer | None) -> None:
        for kind, tag, payload in pool.messages():
            if writer is not None:
                writer.poll()  # writes acknowledged meanwhile may complete ranges
            if kind == "note":
                self.ui.warn(payload)
            elif kind == "retried":
                self.target_retries += payload
            elif kind == "tick" or attempt_of(tag) != self.attempt.get(tag[0]):
                pass  # nothing new, or a late message of an attempt that was given up
            elif kind == "batch":
                writer.write(tag, payload)
            elif kind == "written":
                self._written(tag, payload)
            elif kind == "range_done":
                self.read_rows[tag[0]] = payload
                self.changed.add(tag[0])
            elif kind == "range_failed":
                self._retry_range(pool, tag[0], payload)
            self._record_completed()
            if not self.remaining:
                pool.finish()
        if writer is not None:
            writer.drain()
            self._record_completed()
        if self.remaining:  # pragma: no cover - every exit path above completes or raises
            raise SourceError(f"{len(self.remaining)} ranges were not completed.", fix="rerun to resume.")

    def _record_completed(self) -> None:
        """Record the ranges that became complete (only those whose counts moved are looked at)."""
        for index in self.changed & self.remaining:
            if self._complete(index):
                self.remaining.discard(index)
                self._record(index)
                self.progress.ranges_done += 1
        self.changed.clear()

    def _written(self, tag: tuple[int, int], n: int) -> None:
        index, attempt = tag
        if attempt != self.attempt.get(index):
            return
        self.written[index] = self.written.get(index, 0) + n
        self.changed.add(index)
        self.rows += n
        self.progress.advance(n)

    def _complete(self, index: int) -> bool:
        return index in self.read_rows and self.written.get(index, 0) == self.read_rows[index]

    def _record(self, index: int) -> None:
        if self.state is not None:
            self.state.mark_done(index, self.read_rows[index])
            self.store.save(self.state)

    def _retry_range(self, pool: TableReads, index: int, error: str) -> None:
        attempt = self.attempt[index] + 1
        rng = self.by_index[index]
        if attempt > self.options.max_retries:
            raise SourceError(f"PostgreSQL failed while reading {rng.describe()}, {attempt} times; last error: "
                              f"{error}", fix="check the server, then rerun the same command to resume.")
        self.source_retries += 1
        self.ui.warn(f"PostgreSQL failed while reading {rng.describe()} ({error.strip()}); "
                     f"retrying the range (attempt {attempt + 1}).")
        # Points written by the failed attempt are upserted again: same IDs, same values.
        self.rows -= self.written.pop(index, 0)
        self.read_rows.pop(index, None)
        self.attempt[index] = attempt
        pool.requeue(rng, attempt)

    def _interrupted(self) -> Interrupted:
        if self.state is None:
            return Interrupted("Interrupted (dry run: nothing was written).")
        return Interrupted(
            f"Interrupted. {len(self.state.done)} of {len(self.state.ranges)} ranges "
            f"({self.state.rows_done:,} rows) are complete and saved in {self.store.describe()}.",
            fix="rerun the same command to resume where this run stopped.")


def attempt_of(tag: tuple[int, int] | None) -> int | None:
    return tag[1] if tag is not None else None


def _check_result(result: MigrationResult, ui: UI) -> None:
    """Compare what was read with what the collection holds; resumed runs too, as far as they allow.

    A run that read every row itself must have written each; a collection can never hold fewer
    points than rows (every row's point was acknowledged), and more points means points without
    a row: said, with the way to delete them.
    """
    if not (result.resumed_rows or result.already_complete) and result.points_written != result.source_rows:
        raise SourceError(
            f"Read {result.points_written:,} rows but the snapshot holds {result.source_rows:,}.",
            fix="this should not happen; rerun with --debug and report it.",
        )
    if result.dry_run:
        return
    count, rows = result.target_count, result.source_rows
    if count < rows and (result.resumed_rows or result.already_complete):
        raise SourceError(
            f"The collection holds {count:,} points for {rows:,} rows in the snapshot: {rows - count:,} rows have "
            "no point. Parts were copied by earlier runs, which read older snapshots: rows added since "
            "then to those parts were not copied (or points were deleted from the collection meanwhile).",
            fix="rerun with --migration.restart to copy everything from one snapshot, or catch up with "
                "`pg2qdrant sync`; `pg2qdrant verify` lists the missing points.",
        )
    if count < rows:
        raise DataError(
            f"The collection holds {count:,} points for {rows:,} source rows: "
            "different keys produced the same point ID (for example UUID text that differs only in case).",
            fix="choose a key whose values map to distinct IDs (--pg.key-column), or --migration.id-mode.",
        )
    if count > rows:
        ui.warn(f"The collection holds {count:,} points for {rows:,} rows in the snapshot: "
                f"{orphan_text(count - rows, exact=result.exact_rows)}. It is not an exact copy of the table; "
                "rerun the same command with --migration.delete-orphans to delete them.")
