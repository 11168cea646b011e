"""Reconciliation: compare ID sets, delete orphans, fill missing points.

:func:`reconcile` is ``--sync.mode reconcile`` / ``--sync.reconcile``, the orphan
check after an initial copy into an existing collection; :func:`_reconcile_now`
runs it on a connection of its own and counts the result. :func:`delete_truncated`
is the same comparison restricted to the relations a TRUNCATE left alone.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pg2qdrant.mapping import PointId, RowMapper, make_point_id, normalize_point_id, shared_id_error
from pg2qdrant.pipeline import MigrationOptions
from pg2qdrant.plan import Plan
from pg2qdrant.source import connect, lookups, reader
from pg2qdrant.source.catalog import Leaf
from pg2qdrant.sync.options import REREAD_CHUNK, SyncStats
from pg2qdrant.destination import operations as ops
from pg2qdrant.ui import UI
from pg2qdrant.writer import Writer

DELETE_BATCH = 10_000  # point IDs per delete operation handed to the Writer


def reconcile(plan: Plan, target, conn: psycopg.Connection, *, batch_size: int, fill: bool = True,
              ui: UI | None = None) -> tuple[int, int]:
    """Make the collection's ID set equal the table's: (orphans deleted, missing points written).

    Runs while nothing else writes the collection. ``conn`` may be inside a
    snapshot (the initial copy's), then the comparison is as of that snapshot.
    """
    oids = reader.prepare_connection(conn, plan)
    source: dict[PointId, tuple] = {}
    for key in lookups.iter_key_rows(conn, plan, oids):
        pid = normalize_point_id(make_point_id(plan.key, key))
        other = source.setdefault(pid, key)
        if other != key:  # two rows, one point: deleting either would remove the other's
            raise shared_id_error(plan, [(pid, [other[0], key[0]])])
    present = {normalize_point_id(r.id) for r in target.scroll(plan.collection, batch=2000, with_vectors=False,
                                                   with_payload=False)}
    orphans = [pid for pid in present if pid not in source]
    writer = Writer(target, plan.collection, batch_size=batch_size)  # requests bounded by points and bytes
    _delete(writer, orphans)
    filled = 0
    if fill:
        missing = [key for pid, key in source.items() if pid not in present]
        if missing:
            mapper = RowMapper(plan)
            for start in range(0, len(missing), REREAD_CHUNK):
                rows = lookups.fetch_rows_by_key(conn, plan, oids, missing[start:start + REREAD_CHUNK])
                writer.apply([ops.Upsert(mapper.map_rows(rows))])
                filled += len(rows)
    if ui is not None and (orphans or filled):
        ui.info(f"Reconciled {plan.collection!r} with {plan.table.display}: {len(orphans):,} orphan point(s) "
                f"deleted, {filled:,} missing point(s) written.")
    return len(orphans), filled


def _reconcile_now(options: MigrationOptions, plan: Plan, target, ui: UI, stats: SyncStats) -> None:
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        deleted, filled = reconcile(plan, target, conn, batch_size=options.batch_size, ui=ui)
        stats.deleted_orphans += deleted
        stats.filled_missing += filled
    finally:
        conn.close()


def _delete(writer: Writer, ids: list[PointId]) -> None:
    """Delete ``ids`` through the Writer: requests bounded by points and bytes, split when refused."""
    for start in range(0, len(ids), DELETE_BATCH):
        writer.apply([ops.DeletePoints(tuple(ids[start:start + DELETE_BATCH]))])


def delete_truncated(options: MigrationOptions, plan: Plan, target, truncated: tuple[Leaf, ...],
                     remaining: tuple[Leaf, ...], ui: UI) -> int:
    """After a TRUNCATE of some of the table's relations: delete exactly their points.

    The points carry nothing naming the relation their row came from, so the truncated
    relations' points are found as the complement: every point whose ID no row of the
    ``remaining`` relations (each read alone, ``ONLY``) has. Called when the stream
    reaches the Truncate, with the collection as of just before it; the rows are read
    now, at or after the TRUNCATE. A point of a remaining relation whose row was deleted
    since then goes too, which the later Delete in the stream would do anyway; a row
    re-inserted into a truncated relation since then has its Insert later in the stream.
    Not filled from the table (unlike :func:`reconcile`): the stream brings what follows.
    Holds the remaining relations' IDs in memory (as :func:`reconcile` holds the table's).
    A key held by a truncated parent and by one of its children at once (inheritance does
    not keep keys unique across tables; both rows were one point) keeps its point.
    """
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        oids = reader.prepare_connection(conn, plan)
        kept: set[PointId] = set()
        for leaf in remaining:
            for key in lookups.iter_key_rows(conn, plan, oids, sql.SQL("ONLY ") + leaf.ident):
                kept.add(normalize_point_id(make_point_id(plan.key, key)))
    finally:
        conn.close()
    gone = [pid for pid in (normalize_point_id(r.id) for r in target.scroll(
        plan.collection, batch=2000, with_vectors=False, with_payload=False)) if pid not in kept]
    _delete(Writer(target, plan.collection, batch_size=options.batch_size), gone)
    ui.info(f"TRUNCATE of {_names(truncated)}: deleted {len(gone):,} point(s); the points of {_names(remaining)} "
            "stay.")
    return len(gone)


def _names(leaves: tuple[Leaf, ...], shown: int = 4) -> str:
    if not leaves:
        return "relations dropped since"
    more = f" (+{len(leaves) - shown} more)" if len(leaves) > shown else ""
    return ", ".join(leaf.display for leaf in leaves[:shown]) + more
