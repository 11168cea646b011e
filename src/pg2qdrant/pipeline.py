"""The migrate flow: catalog -> plan -> checks -> ranges -> [read -> map -> write] -> summary.

This module owns the order of operations and the guarantees between them:
every check that can fail on user input runs before the first write; all
reads happen in one snapshot; the end compares what was read with what the
collection holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pg2qdrant import redaction
from pg2qdrant.errors import DataError, InputError, SourceError
from pg2qdrant.mapping import RowMapper
from pg2qdrant.plan import Plan, build_plan, pgvector_feature_check, shape_differences
from pg2qdrant.source import catalog, connect, reader, snapshot
from pg2qdrant.target.qdrant import QdrantTarget, TargetAddress, parse_target_url
from pg2qdrant.ui import UI, Summary

# A full read of a vector column to prove all rows share a dimension is affordable
# up to this many rows (a few seconds); above it the check happens while copying.
DIMENSION_PRECHECK_MAX_ROWS = 1_000_000
DEFAULT_BATCH_SIZE = 256  # points per request: Qdrant's bulk-load advice is 64-256
PAGES_PER_RANGE = 2048  # 16 MiB of heap per range: many ranges per worker, small resume unit


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

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise InputError(f"--migration.batch-size must be positive (got {self.batch_size}).",
                             fix=f"use e.g. --migration.batch-size {DEFAULT_BATCH_SIZE}.")
        if self.num_workers < 0:
            raise InputError(f"--migration.num-workers must be positive (got {self.num_workers}).",
                             fix="use 1 or more (0 means one per CPU core).")
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

    @property
    def rate(self) -> float:
        return self.points_written / self.seconds if self.seconds > 0 else 0.0

    def summary(self, target: str) -> Summary:
        return Summary("Migration summary", [
            ("source", f"{self.plan.table.display} ({self.source_rows:,} rows in the snapshot)"),
            ("target", f"{self.plan.collection} at {target}"),
            ("points written", f"{self.points_written:,}"),
            ("points in collection", f"{self.target_count:,}"),
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


def open_source(options: MigrationOptions, ui: UI) -> SourceSession:
    """Connect, describe the table, build the plan and run the pre-write checks."""
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        server = catalog.server_info(conn)
        if server.pgvector is None:
            raise InputError(
                f"The pgvector extension is not installed in database {server.database!r}.",
                fix="connect to the database that holds your embeddings (the last part of --pg.url).",
            )
        snapshot_id = snapshot.begin_snapshot(conn)
        table = catalog.describe_table(conn, options.table)
        pgvector_feature_check(server, table)
        plan = build_plan(table, server, collection=options.collection, key_columns=options.key_columns,
                          columns=options.columns, distance_overrides=options.distance_overrides,
                          id_mode=options.id_mode)
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

def open_target(options: MigrationOptions, address: TargetAddress | None = None,
                ui: UI | None = None) -> QdrantTarget:
    address = address or parse_target_url(options.qdrant_url)
    if ui and options.api_key and address.kind == "server" and not address.https:
        ui.warn(f"the API key is sent unencrypted to {address.display()}; use https:// for remote servers.")
    target = QdrantTarget(address, api_key=options.api_key,
                          skip_tls_verification=options.skip_tls_verification)
    try:
        target.check_reachable()
    except BaseException:
        target.close()
        raise
    return target


def ensure_collection(target: QdrantTarget, plan: Plan, *, create: bool, ui: UI) -> bool:
    """Create the collection, or prove the existing one fits the plan. True when created."""
    actual = target.shape(plan.collection)
    if actual is None:
        if not create:
            raise InputError(
                f"Collection {plan.collection!r} does not exist and --migration.create-collection is false.",
                fix="create it first, or drop --migration.create-collection=false to let pg2qdrant create it.",
            )
        target.create_collection(plan)
        ui.info(f"Created collection {plan.collection!r}: {plan.shape().describe()}")
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


# ---------------------------------------------------------------------------------------
# The copy
# ---------------------------------------------------------------------------------------

def migrate(options: MigrationOptions, ui: UI, *, show_plan: bool = False) -> MigrationResult:
    options.validate()
    address = parse_target_url(options.qdrant_url)  # input errors before any connection
    started = time.monotonic()
    session = open_source(options, ui)
    try:
        plan = session.plan
        if show_plan:
            from pg2qdrant.ui import render_plan
            render_plan(ui, plan, address.display())
        else:
            for w in plan.warnings:
                ui.warn(w)
        source_rows = count_rows(session.conn, plan)
        target = open_target(options, address, ui)
        try:
            created = ensure_collection(target, plan, create=options.create_collection, ui=ui)
            written = _copy(session, target, options, ui, source_rows)
            target_count = target.count(plan.collection)
        finally:
            target.close()
    finally:
        session.close()
    result = MigrationResult(plan, source_rows, written, target_count, time.monotonic() - started, created)
    _check_result(result)
    return result


def _copy(session: SourceSession, target: QdrantTarget, options: MigrationOptions, ui: UI,
          source_rows: int) -> int:
    plan, conn = session.plan, session.conn
    oids = reader.prepare_connection(conn, plan)
    mapper = RowMapper(plan)
    ranges = reader.plan_ranges(plan.table, server_version=plan.server.version_num,
                                pages_per_range=PAGES_PER_RANGE)
    written = 0
    read_batch = max(options.batch_size * 4, 1024)
    delay = options.batch_delay_ms / 1000.0
    with ui.progress(source_rows, f"Copying {plan.table.display}") as progress:
        for rng in ranges:
            try:
                for rows in reader.read_range(conn, plan, rng, oids, read_batch):
                    batch = mapper.map_rows(rows)
                    for start in range(0, len(batch), options.batch_size):
                        part = batch.slice(start, start + options.batch_size)
                        target.upsert(plan.collection, part, wait=True)
                        written += len(part)
                        progress.advance(len(part))
                        if delay:
                            time.sleep(delay)
            except psycopg.OperationalError as exc:
                raise SourceError(f"PostgreSQL failed while reading {rng.describe()}: {redaction.redact(exc)}",
                                  fix="rerun the same command when the server is back.") from None
    return written


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

