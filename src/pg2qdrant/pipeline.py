"""The migrate flow: catalog -> plan -> checks -> ranges -> [read -> map -> write] -> summary.

This module owns the order of operations and the guarantees between them:
every check that can fail on user input runs before the first write; all
reads happen in one snapshot; the end compares what was read with what the
collection holds.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterator

import psycopg
from psycopg import sql

from pg2qdrant import redaction
from pg2qdrant.errors import DataError, InputError
from pg2qdrant.errors import SourceError
from pg2qdrant.mapping import PointBatch
from pg2qdrant.plan import (CollectionOptions, Plan, build_plan, pgvector_feature_check,
                            shape_differences)
from pg2qdrant.source import catalog, connect, reader, snapshot
from pg2qdrant.source.reader import ReadRange
from pg2qdrant.target import open_target
from pg2qdrant.target.qdrant import TargetAddress, parse_target_url
from pg2qdrant.ui import UI, Summary, render_plan
from pg2qdrant.workers import ReaderPool, ReaderSpec

# A full read of a vector column to prove all rows share a dimension is affordable
# up to this many rows (a few seconds); above it the check happens while copying.
DIMENSION_PRECHECK_MAX_ROWS = 1_000_000
DEFAULT_BATCH_SIZE = 256  # points per request: Qdrant's bulk-load advice is 64-256
READ_BATCH_ROWS = 1024  # rows mapped at a time: amortises numpy calls, bounds memory per batch
ROWS_PER_RANGE = 50_000  # a range is the unit of parallel work and of resume
RANGES_PER_WORKER = 4


@dataclass
class MigrationOptions:
    pg_url: str
    table: str
    collection: str
    qdrant_url: str = "http://localhost:6334"
    api_key: str | None = None
    key_columns: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    distance_overrides: dict[str, str] = field(default_factory=dict)
    num_workers: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_delay_ms: int = 0
    restart: bool = False
    create_collection: bool = True
    id_mode: str = "native"
    skip_tls_verification: bool = False
    dry_run: bool = False
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    on_disk: bool | None = None
    quantization: str | None = None
    shard_number: int | None = None
    replication_factor: int | None = None
    payload_index: list[str] = field(default_factory=list)
    auto_payload_index: bool = True

    def collection_options(self, plan: Plan) -> CollectionOptions:
        return CollectionOptions(
            hnsw_m=self.hnsw_m, hnsw_ef_construct=self.hnsw_ef_construct, on_disk=self.on_disk,
            quantization=self.quantization, shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            payload_indexes=tuple((p.field, p.type) for p in plan.payload_indexes),
        )

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise InputError(f"--migration.batch-size must be positive (got {self.batch_size}).",
                             fix=f"use e.g. --migration.batch-size {DEFAULT_BATCH_SIZE}.")
        if self.num_workers < 0:
            raise InputError(f"--migration.num-workers must be positive (got {self.num_workers}).",
                             fix="use 1 or more (0 means one per CPU core).")
        if self.hnsw_m < 0 or self.hnsw_ef_construct <= 0:
            raise InputError("--qdrant.hnsw-m must be >= 0 and --qdrant.hnsw-ef-construct > 0.",
                             fix="use e.g. --qdrant.hnsw-m 16 --qdrant.hnsw-ef-construct 100.")
        if self.quantization not in (None, "int8"):
            raise InputError(f"--qdrant.quantization {self.quantization!r} is not supported.",
                             fix="use --qdrant.quantization int8 (scalar quantization), or leave it out.")
        for flag, value in (("--qdrant.shard-number", self.shard_number),
                            ("--qdrant.replication-factor", self.replication_factor)):
            if value is not None and value <= 0:
                raise InputError(f"{flag} must be positive (got {value}).", fix=f"use e.g. {flag} 1.")
        if self.batch_delay_ms < 0:
            raise InputError(f"--migration.batch-delay must not be negative (got {self.batch_delay_ms}).",
                             fix="give milliseconds to sleep between batches, e.g. 100.")


@dataclass
class MigrationResult:
    plan: Plan
    source_rows: int
    points_written: int
    target_count: int
    seconds: float
    created_collection: bool
    dry_run: bool = False
    workers: int = 1
    ranges: int = 1
    range_kind: str = "key"

    @property
    def rate(self) -> float:
        return self.points_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def ranges_text(self) -> str:
        kind = {"key": "key ranges", "ctid": "page ranges", "all": "one pass"}.get(self.range_kind, self.range_kind)
        return f"{self.workers} / {self.ranges} {kind}"

    def summary(self, target: str) -> Summary:
        if self.dry_run:
            return Summary("Dry run summary (nothing written)", [
                ("source", f"{self.plan.table.display} ({self.source_rows:,} rows in the snapshot)"),
                ("rows read, mapped and validated", f"{self.points_written:,}"),
                ("workers / ranges", self.ranges_text),
                ("time", f"{self.seconds:,.1f} s"),
                ("rate", f"{self.rate:,.0f} rows/s"),
            ])
        return Summary("Migration summary", [
            ("source", f"{self.plan.table.display} ({self.source_rows:,} rows in the snapshot)"),
            ("target", f"{self.plan.collection} at {target}"),
            ("points written", f"{self.points_written:,}"),
            ("points in collection", f"{self.target_count:,}"),
            ("workers / ranges", self.ranges_text),
            ("time", f"{self.seconds:,.1f} s"),
            ("rate", f"{self.rate:,.0f} rows/s"),
        ])


# ---------------------------------------------------------------------------------------
# Source side: plan and checks, all inside one snapshot
# ---------------------------------------------------------------------------------------

@dataclass
class SourceSession:
    """A coordinator connection holding the exported snapshot, and the plan made in it."""

    conn: psycopg.Connection
    plan: Plan
    snapshot_id: str

    def close(self) -> None:
        try:
            snapshot.end(self.conn)
        finally:
            self.conn.close()


def open_source(options: MigrationOptions, ui: UI, *, snapshot_id: str | None = None) -> SourceSession:
    """Connect, describe the table, build the plan and run the pre-write checks.

    Everything happens in one REPEATABLE READ READ ONLY transaction whose snapshot
    the readers import. With ``snapshot_id`` (a replication slot's exported
    snapshot, for a gap-free hand-off to `sync`) that snapshot is imported
    instead of exporting a new one.
    """
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        server = catalog.server_info(conn)
        if server.pgvector is None:
            raise InputError(
                f"The pgvector extension is not installed in database {server.database!r}.",
                fix="connect to the database that holds your embeddings (the last part of --pg.url).",
            )
        if snapshot_id is None:
            snapshot_id = snapshot.begin_snapshot(conn)
        else:
            snapshot.attach_snapshot(conn, snapshot_id)
        table = catalog.describe_table(conn, options.table)
        pgvector_feature_check(server, table)
        plan = build_plan(table, server, collection=options.collection, key_columns=options.key_columns,
                          columns=options.columns, distance_overrides=options.distance_overrides,
                          id_mode=options.id_mode, payload_index_flags=options.payload_index,
                          auto_payload_index=options.auto_payload_index)
        plan = _resolve_vector_sizes(conn, plan)
        _check_keys(conn, plan)
        return SourceSession(conn, plan, snapshot_id)
    except psycopg.errors.InsufficientPrivilege as exc:
        conn.close()
        raise InputError(f"PostgreSQL refused a read: {redaction.redact(exc)}",
                         fix="grant this role SELECT on the table (and USAGE on its schema).") from None
    except BaseException:
        conn.close()
        raise


def _resolve_vector_sizes(conn: psycopg.Connection, plan: Plan) -> Plan:
    """Vector columns declared without a dimension take it from the data (all rows must agree)."""
    for v in plan.vectors:
        if not v.size_from_data:
            continue
        dims: list[int]
        if plan.table.estimated_rows <= DIMENSION_PRECHECK_MAX_ROWS:
            dims = catalog.vector_dimensions(conn, plan.table, v.column, v.declared.split("(")[0])
        else:
            first = catalog.first_vector_dimension(conn, plan.table, v.column)
            dims = [] if first is None else [first]
        if not dims:
            raise InputError(
                f"Vector column {v.column} is declared without a dimension ({v.declared}) and holds no "
                "value to take it from.",
                fix=f"declare the dimension (ALTER TABLE ... ALTER COLUMN {v.column} TYPE vector(N)) "
                    "or leave the column out with --pg.columns.",
            )
        if len(dims) > 1:
            raise DataError(
                f"Vector column {v.column} ({v.declared}) holds vectors of different dimensions: "
                f"{', '.join(map(str, dims))}. A Qdrant vector has one size.",
                fix=f"make the rows agree (e.g. find them with SELECT vector_dims({v.column}), count(*) ... "
                    "GROUP BY 1), or migrate each dimension to its own collection from a view.",
            )
        plan = plan.with_vector_size(v.name, dims[0])
    return plan


def _check_keys(conn: psycopg.Connection, plan: Plan) -> None:
    """NULL and duplicate keys stop the run before any write (unless a constraint rules them out)."""
    key = plan.key
    if key.unique_by_constraint:
        return
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in key.columns)
    any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(c)) for c in key.columns)
    nulls = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {n}").format(t=plan.table.ident, n=any_null)
                         ).fetchone()[0]
    if nulls:
        raise DataError(
            f"Key column(s) {', '.join(key.columns)} of {plan.table.display} are NULL in {nulls:,} row(s); "
            "a point needs an ID.",
            fix="fill the NULLs, or choose a unique NOT NULL column with --pg.key-column.",
        )
    dups = conn.execute(sql.SQL(
        "SELECT {cols}, count(*) FROM {t} GROUP BY {cols} HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT 5"
    ).format(cols=cols, t=plan.table.ident)).fetchall()
    if dups:
        shown = "; ".join(f"{', '.join(repr(v) for v in d[:-1])} ({d[-1]} rows)" for d in dups)
        raise DataError(
            f"Key column(s) {', '.join(key.columns)} of {plan.table.display} are not unique; "
            f"duplicated values include: {shown}. Each would overwrite the other in Qdrant.",
            fix="choose a unique column with --pg.key-column (several columns, comma-separated, "
                "form a composite key), or deduplicate the table.",
        )


def count_rows(conn: psycopg.Connection, plan: Plan) -> int:
    """Exact row count in the snapshot (not n_live_tup, which is an estimate)."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(plan.table.ident)).fetchone()[0]


# ---------------------------------------------------------------------------------------
# Target side
# ---------------------------------------------------------------------------------------

def connect_target(options: MigrationOptions, address: TargetAddress | None = None, ui: UI | None = None):
    address = address or parse_target_url(options.qdrant_url)
    if ui and options.api_key and address.kind == "server" and not address.https:
        ui.warn(f"the API key is sent unencrypted to {address.display()}; use https:// for remote servers.")
    return open_target(address, api_key=options.api_key, skip_tls_verification=options.skip_tls_verification)


def ensure_collection(target, plan: Plan, collection_options: CollectionOptions, *, create: bool, ui: UI) -> bool:
    """Create the collection, or prove the existing one fits the plan. True when created."""
    actual = target.shape(plan.collection)
    if actual is None:
        if not create:
            raise InputError(
                f"Collection {plan.collection!r} does not exist and --migration.create-collection is false.",
                fix="create it first, or drop --migration.create-collection=false to let pg2qdrant create it.",
            )
        target.create_collection(plan, collection_options)
        ui.info(f"Created collection {plan.collection!r}: {plan.shape().describe()}"
                + (f"; payload indexes: {', '.join(f'{f} ({t})' for f, t in collection_options.payload_indexes)}"
                   if collection_options.payload_indexes else ""))
        return True
    diffs = shape_differences(plan.shape(), actual)
    if diffs:
        raise InputError(
            f"Collection {plan.collection!r} already exists with a different vector configuration: "
            + "; ".join(diffs) + f". (The table needs: {plan.shape().describe()}.)",
            fix="write to a new collection (--qdrant.collection), delete the existing one, or make the plan "
                "match it (--qdrant.distance-metric column=metric, --pg.columns).",
        )
    ui.info(f"Collection {plan.collection!r} exists and matches the plan; points are upserted by ID.")
    return False


class Writer:
    """Writes batches as requests bounded by points and bytes, several in flight for a server.

    Every request is sent with wait=true, so a write counts as done (and a range as
    complete) only once Qdrant has applied it; concurrency comes from requests in
    flight, not from skipping the acknowledgement.
    """

    def __init__(self, target, collection: str, *, batch_size: int, delay_s: float, on_written):
        self.target = target
        self.collection = collection
        self.batch_size = batch_size
        self.max_bytes = target.max_request_bytes
        self.delay_s = delay_s
        self.on_written = on_written  # (range_index, points) after Qdrant acknowledged them
        self.in_flight = max(1, target.max_in_flight)
        self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="pg2qdrant-writer") \
            if self.in_flight > 1 else None
        self._pending: set[Future] = set()

    def requests(self, batch: PointBatch) -> Iterator[PointBatch]:
        """Slices of ``batch`` within the point and (for servers) byte limits."""
        if self.max_bytes is None:
            for start in range(0, len(batch), self.batch_size):
                yield batch.slice(start, start + self.batch_size)
            return
        sizes = batch.point_sizes()
        start = 0
        while start < len(batch):
            end, total = start, 0
            while end < len(batch) and end - start < self.batch_size and (end == start or total + sizes[end] <= self.max_bytes):
                total += sizes[end]
                end += 1
            if sizes[start] > self.max_bytes:
                raise DataError(
                    f"Point {batch.ids[start]!r} is about {sizes[start] / 2**20:.1f} MiB, larger than the "
                    f"{self.max_bytes / 2**20:.0f} MiB we allow per request (the server rejects 32 MiB).",
                    fix="leave the large columns out with --pg.columns, or raise the server's "
                        "service.max_request_size_mb and use a smaller --migration.batch-size.",
                )
            yield batch.slice(start, end)
            start = end

    def write(self, range_index: int, batch: PointBatch) -> None:
        for request in self.requests(batch):
            if self._pool is None:
                self._send(range_index, request)
            else:
                while len(self._pending) >= self.in_flight:
                    self._collect(wait(self._pending, return_when=FIRST_COMPLETED).done)
                self._pending.add(self._pool.submit(self._send, range_index, request))

    def _send(self, range_index: int, request: PointBatch) -> tuple[int, int]:
        self.target.upsert(self.collection, request, wait=True)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self._pool is None:
            self.on_written(range_index, len(request))
        return range_index, len(request)

    def _collect(self, done) -> None:
        for future in done:
            self._pending.discard(future)
            range_index, n = future.result()  # re-raises the request's error here
            self.on_written(range_index, n)

    def drain(self) -> None:
        while self._pending:
            self._collect(wait(self._pending, return_when=FIRST_COMPLETED).done)

    def close(self) -> None:
        if self._pool is not None:
            for f in self._pending:
                f.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------
# The copy
# ---------------------------------------------------------------------------------------

def plan_read_ranges(conn: psycopg.Connection, plan: Plan, workers: int) -> list[ReadRange]:
    """Ranges sized so that workers share the work and a range stays a small unit of resume.

    Key ranges when the key allows (safe to resume across snapshots), else page ranges.
    """
    rows = max(plan.table.estimated_rows, 1)
    wanted = max(-(-rows // ROWS_PER_RANGE), 1)
    if rows >= ROWS_PER_RANGE // 4:  # a few ranges per worker keep them all busy until the end
        wanted = max(wanted, RANGES_PER_WORKER * max(workers, 1))
    key = reader.key_range_column(plan)
    if key is not None:
        return reader.plan_key_ranges(conn, plan, key[0], key[1], wanted)
    total_pages = sum(leaf.pages for leaf in plan.table.leaves)
    pages = max(1, -(-total_pages // wanted)) if total_pages else 1
    return reader.plan_ctid_ranges(plan.table, server_version=plan.server.version_num, pages_per_range=pages)


def migrate(options: MigrationOptions, ui: UI, *, show_plan: bool = False,
            snapshot_id: str | None = None) -> MigrationResult:
    """Copy the table; with ``snapshot_id`` the copy reads that exported snapshot (see open_source)."""
    options.validate()
    address = parse_target_url(options.qdrant_url)  # input errors before any connection
    started = time.monotonic()
    session = open_source(options, ui, snapshot_id=snapshot_id)
    target = None
    try:
        plan = session.plan
        if show_plan:
            render_plan(ui, plan, address.display())
        else:
            for w in plan.warnings:
                ui.warn(w)
        source_rows = count_rows(session.conn, plan)
        ranges = plan_read_ranges(session.conn, plan, options.num_workers)
        created = False
        collection_options = options.collection_options(plan)
        if not options.dry_run:
            target = connect_target(options, address, ui)
            created = ensure_collection(target, plan, collection_options, create=options.create_collection, ui=ui)
        written = _copy(session, target, ranges, options, ui, source_rows)
        target_count = 0
        if target is not None:
            target.finish_load(plan, collection_options, created)
            target_count = target.count(plan.collection)
    finally:
        if target is not None:
            target.close()
        session.close()
    result = MigrationResult(plan, source_rows, written, target_count, time.monotonic() - started, created,
                             dry_run=options.dry_run, workers=min(options.num_workers, len(ranges) or 1),
                             ranges=len(ranges), range_kind=ranges[0].kind if ranges else "all")
    _check_result(result)
    return result


def _copy(session: SourceSession, target, ranges: list[ReadRange], options: MigrationOptions, ui: UI,
          source_rows: int) -> int:
    plan = session.plan
    spec = ReaderSpec(options.pg_url, session.snapshot_id, plan, batch_rows=READ_BATCH_ROWS,
                      dry_run=options.dry_run, secrets=redaction.registered())
    pool = ReaderPool(spec, ranges, options.num_workers)
    done = 0
    verb = "Reading and mapping (dry run)" if options.dry_run else "Copying"
    with ui.progress(source_rows, f"{verb} {plan.table.display}") as progress:

        def written(range_index: int, n: int) -> None:
            progress.advance(n)

        writer = None if target is None else Writer(
            target, plan.collection, batch_size=options.batch_size, delay_s=options.batch_delay_ms / 1000.0,
            on_written=written)
        pool.start()
        try:
            for kind, range_index, payload in pool.messages():
                if kind == "batch":
                    writer.write(range_index, payload)
                    done += len(payload)
                elif kind == "range_done" and writer is None:
                    done += payload
                    progress.advance(payload)
            if writer is not None:
                writer.drain()
        finally:
            pool.stop()
            if writer is not None:
                writer.close()
    return done


def _check_result(result: MigrationResult) -> None:
    if result.points_written != result.source_rows:
        raise SourceError(
            f"Read {result.points_written:,} rows but the snapshot holds {result.source_rows:,}.",
            fix="this should not happen; rerun with --debug and report it.",
        )
    if result.created_collection and result.target_count != result.source_rows:
        raise DataError(
            f"The collection holds {result.target_count:,} points for {result.source_rows:,} source rows: "
            "different keys produced the same point ID (for example UUID text that differs only in case).",
            fix="choose a key whose values map to distinct IDs (--pg.key-column), or --migration.id-mode.",
        )
