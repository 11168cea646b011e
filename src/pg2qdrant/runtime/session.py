"""TODO docstring (pg2qdrant/runtime/session.py, from pg2qdrant/pipeline.py)."""

from __future__ import annotations

from dataclasses import dataclass

from pg2qdrant.core import layouts
from pg2qdrant.core.errors import DataError, InputError
from pg2qdrant.core.mapping.ids import keys_can_share_ids, shared_id_error
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.core.plan import Plan, build_plan, pgvector_feature_check
from pg2qdrant.source import adapters, catalog, checks, connect, snapshot
from pg2qdrant.source import where as source_where
from pg2qdrant.ui import UI

# A full read of a vector column to prove all rows share a dimension is affordable
# up to this many rows (a few seconds); above it the check happens while copying.
DIMENSION_PRECHECK_MAX_ROWS = 1_000_000


@dataclass
class SourceSession:
    """A coordinator connection holding the exported snapshot, and the plan made in it."""

    conn: connect.Connection
    plan: Plan
    snapshot_id: str
    source_rows: int | None = None  # exact count(*) in the snapshot, when asked for

    def close(self) -> None:
        snapshot.release(self.conn)


def open_source(options: MigrationOptions, ui: UI, *, snapshot_id: str | None = None,
                count: bool = True, rows: int | None = None, keys_checked: bool = False) -> SourceSession:
    """Connect, describe the table, build the plan and run the pre-write checks.

    Everything happens in one REPEATABLE READ READ ONLY transaction whose snapshot
    the readers import. With ``snapshot_id`` (a replication slot's exported
    snapshot, for a gap-free hand-off to `sync`) that snapshot is imported
    instead of exporting a new one. ``rows``: the count, when it was already
    made in that snapshot (not made again); ``keys_checked``: the key checks
    passed in that snapshot (a table without a unique constraint is not scanned again).
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
        pgvector_feature_check(server, table, options.columns)
        plan = build_plan(table, server, collection=options.collection, key_columns=options.key_columns,
                          key_source=options.key_source, columns=options.columns,
                          distance_overrides=options.distance_overrides, distance_source=options.distance_source,
                          id_mode=options.id_mode, payload_index_flags=options.payload_index,
                          auto_payload_index=options.auto_payload_index,
                          index_flags=options.collection_options(()))
        adapters.check_loadable(plan)
        plan = layouts.apply_options(
            plan, where=options.where and source_where.validate_where(conn, table, options.where),
            vector_names=options.vector_names, payload_keys=options.payload_keys,
            tenant_column=options.tenant_column, payload_shape=options.payload_shape,
            extra_indexes=options.layout_indexes, notes=options.layout_notes,
            bm25=options.bm25, bm25_options=options.bm25_options,
            bm25_source="--qdrant.hybrid" if options.hybrid else "--qdrant.bm25")
        if plan.bm25:
            from pg2qdrant.destination.bm25 import check_encoders
            check_encoders(plan.bm25)  # the options Qdrant's BM25 refuses, qdrant-edge-py missing: before writing
        plan = _resolve_vector_sizes(conn, plan)
        if not keys_checked:
            _check_keys(conn, plan)
        if rows is None and count:
            rows = checks.count_rows(conn, plan)
        return SourceSession(conn, plan, snapshot_id, rows)
    except BaseException as exc:
        conn.close()
        refused = checks.refused_read(exc)
        if refused is None:
            raise
        raise refused from None


def _resolve_vector_sizes(conn: connect.Connection, plan: Plan) -> Plan:
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


def _check_keys(conn: connect.Connection, plan: Plan) -> None:
    """NULL and duplicate keys (unless a constraint rules them out), and distinct keys that
    share a point ID, stop the run before any write."""
    key = plan.key
    if keys_can_share_ids(key):
        _check_shared_ids(conn, plan)
    if key.unique_by_constraint:
        return
    nulls = checks.null_key_rows(conn, plan)
    if nulls:
        raise DataError(
            f"Key column(s) {', '.join(key.columns)} of {plan.table.display} are NULL in {nulls:,} row(s); "
            "a point needs an ID.",
            fix="fill the NULLs, or choose a unique NOT NULL column with --pg.key-column.",
        )
    dups = checks.duplicate_keys(conn, plan)
    if dups:
        shown = "; ".join(f"{', '.join(repr(v) for v in d[:-1])} ({d[-1]} rows)" for d in dups)
        raise DataError(
            f"Key column(s) {', '.join(key.columns)} of {plan.table.display} are not unique; "
            f"duplicated values include: {shown}. Each would overwrite the other in Qdrant.",
            fix="choose a unique column with --pg.key-column (several columns, comma-separated, "
                "form a composite key), or deduplicate the table.",
        )


def _check_shared_ids(conn: connect.Connection, plan: Plan) -> None:
    """Distinct key texts read as the same UUID would share a point (found in SQL, see checks)."""
    groups = checks.shared_id_groups(conn, plan)
    if groups:
        raise shared_id_error(plan, groups)
