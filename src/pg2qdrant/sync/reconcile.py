"""Reconciliation: compare ID sets, delete orphans, fill missing points.

:func:`reconcile_ids` is ``--sync.mode reconcile`` / ``--sync.reconcile``, the orphan
check after an initial copy into an existing collection; :func:`_reconcile_now`
runs it on a connection of its own and counts the result. :func:`delete_truncated`
is the same comparison restricted to the relations a TRUNCATE left alone.

Both compare with verify's ID scan (:func:`pg2qdrant.runtime.ids.scan_ids`): IDs
streamed from both sides into compact arrays and merged, in hash buckets when the
table is large, so neither side's ID set is ever held whole; what is kept beyond a
bucket is the missing points' IDs (16 bytes each) until they are filled.
"""

from __future__ import annotations

from pg2qdrant.core.mapping.ids import PointId, make_point_id, shared_id_error
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.core.plan import Plan
from pg2qdrant.core.table import Leaf
from pg2qdrant.destination import operations as ops
from pg2qdrant.destination.writer import Writer
from pg2qdrant.runtime.ids import ID_MEMORY_MB, ID_READ_ROWS, IdSet, scan_ids
from pg2qdrant.runtime.mapping import row_mapper
from pg2qdrant.source import connect
from pg2qdrant.source import ids as source_ids
from pg2qdrant.source import row_reads as source_rows
from pg2qdrant.sync.options import REREAD_CHUNK, SyncStats
from pg2qdrant.ui import UI

DELETE_BATCH = 10_000  # point IDs per delete operation handed to the Writer
FILL_BY_KEY_MAX = 100_000  # missing points re-read by key (keys held); more: one pass over the rows


def reconcile_ids(plan: Plan, target, conn: connect.Connection, *, batch_size: int, fill: bool = True,
              ui: UI | None = None, memory_mb: float = ID_MEMORY_MB) -> tuple[int, int]:
    """Make the collection's ID set equal the table's: (orphans deleted, missing points written).

    Runs while nothing else writes the collection. ``conn`` may be inside a
    snapshot (the initial copy's), then the comparison is as of that snapshot.
    Distinct keys on one point stop it (deleting either row would remove the other's
    point), before anything is deleted when the IDs fit in one bucket.
    """
    writer = Writer(target, plan.collection, batch_size=batch_size)  # requests bounded by points and bytes
    missing = IdSet()
    scan = scan_ids(conn, plan, target, plan.collection, memory_mb=memory_mb,
                    expected_points=target.count(plan.collection),
                    on_duplicates=lambda ids: _check_shared(conn, plan, ids),
                    on_orphans=lambda ids: _delete(writer, ids), on_missing=missing.add if fill else None)
    filled = _fill(conn, plan, writer, missing) if fill and len(missing) else 0
    if ui is not None and (scan.orphans or filled):
        ui.info(f"Reconciled {plan.collection!r} with {plan.table.display}: {scan.orphans:,} orphan point(s) "
                f"deleted, {filled:,} missing point(s) written.")
    return scan.orphans, filled


def _check_shared(conn: connect.Connection, plan: Plan, pids: list[PointId]) -> None:
    """Several rows on one point: fine when they hold the same key (an inheritance parent and
    child), a DataError naming the keys when the keys differ (a UUID spelled two ways)."""
    shared = IdSet()
    shared.add(pids)
    first: dict[PointId, tuple] = {}
    for _, keys in source_ids.key_batches(conn, plan, ID_READ_ROWS):
        ids = [make_point_id(plan.key, k) for k in keys]
        for pid, key, hit in zip(ids, keys, shared.contains(ids)):
            if hit and first.setdefault(pid, key) != key:
                raise shared_id_error(plan, [(pid, [first[pid][0], key[0]])])


def _fill(conn: connect.Connection, plan: Plan, writer: Writer, missing: IdSet) -> int:
    """Write the points of the rows whose IDs are ``missing``: re-read by key when they are few,
    else picked from one pass over the rows (the keys of many would not fit in memory)."""
    mapper = row_mapper(plan)
    filled = 0
    if len(missing) > FILL_BY_KEY_MAX:
        for rows in source_rows.row_batches(conn, plan, REREAD_CHUNK):
            wanted = [row for row, hit in zip(rows, missing.contains([mapper.point_id(r) for r in rows])) if hit]
            if wanted:
                writer.apply([ops.Upsert(mapper.map_rows(wanted))])
                filled += len(wanted)
        return filled
    keys = [key for _, batch in source_ids.key_batches(conn, plan, ID_READ_ROWS)
            for key, hit in zip(batch, missing.contains([make_point_id(plan.key, k) for k in batch])) if hit]
    for start in range(0, len(keys), REREAD_CHUNK):
        rows = source_rows.rows_by_key(conn, plan, keys[start:start + REREAD_CHUNK])
        writer.apply([ops.Upsert(mapper.map_rows(rows))])
        filled += len(rows)
    return filled


def _reconcile_now(options: MigrationOptions, plan: Plan, target, ui: UI, stats: SyncStats, *,
                   fill: bool = True) -> None:
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        deleted, filled = reconcile_ids(plan, target, conn, batch_size=options.batch_size, fill=fill, ui=ui)
        stats.deleted_orphans += deleted
        stats.filled_missing += filled
    finally:
        conn.close()


def _delete(writer: Writer, ids: list[PointId]) -> None:
    """Delete ``ids`` through the Writer: requests bounded by points and bytes, split when refused."""
    for start in range(0, len(ids), DELETE_BATCH):
        writer.apply([ops.DeletePoints(tuple(ids[start:start + DELETE_BATCH]))])


def delete_truncated(options: MigrationOptions, plan: Plan, target, truncated: tuple[Leaf, ...],
                     remaining: tuple[Leaf, ...], ui: UI, change: str = "TRUNCATE") -> int:
    """After a TRUNCATE of some of the table's relations: delete exactly their points.

    The points carry nothing naming the relation their row came from, so the truncated
    relations' points are found as the complement: every point whose ID no row of the
    ``remaining`` relations (each read alone, ``ONLY``) has. Called when the stream
    reaches the Truncate, with the collection as of just before it; the rows are read
    now, at or after the TRUNCATE. A point of a remaining relation whose row was deleted
    since then goes too, which the later Delete in the stream would do anyway; a row
    re-inserted into a truncated relation since then has its Insert later in the stream.
    Not filled from the table (unlike :func:`reconcile_ids`): the stream brings what follows.
    A key held by a truncated parent and by one of its children at once (inheritance does
    not keep keys unique across tables; both rows were one point) keeps its point. Also used for
    partitions detached or dropped while syncing (``change`` names what happened in the message).
    """
    writer = Writer(target, plan.collection, batch_size=options.batch_size)
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        scan = scan_ids(conn, plan, target, plan.collection, expected_points=target.count(plan.collection),
                        leaves=remaining,
                        on_orphans=lambda ids: _delete(writer, ids))
    finally:
        conn.close()
    ui.info(f"{change} of {_names(truncated)}: deleted {scan.orphans:,} point(s); the points of "
            f"{_names(remaining)} stay.")
    return scan.orphans


def _names(leaves: tuple[Leaf, ...], shown: int = 4) -> str:
    if not leaves:
        return "relations dropped since"
    more = f" (+{len(leaves) - shown} more)" if len(leaves) > shown else ""
    return ", ".join(leaf.display for leaf in leaves[:shown]) + more
