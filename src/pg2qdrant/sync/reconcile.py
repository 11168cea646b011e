"""Reconciliation: compare ID sets, delete orphans, fill missing points.

:func:`reconcile` is ``--sync.mode reconcile`` / ``--sync.reconcile``, the orphan
check after an initial copy into an existing collection, and the fix-up after a
TRUNCATE of only some partitions; :func:`_reconcile_now` runs it on a connection
of its own and counts the result.
"""

from __future__ import annotations

import psycopg

from pg2qdrant.mapping import PointId, RowMapper, make_point_id, normalize_point_id
from pg2qdrant.pipeline import MigrationOptions
from pg2qdrant.plan import Plan
from pg2qdrant.source import changes, connect, reader
from pg2qdrant.sync.options import REREAD_CHUNK, SyncStats
from pg2qdrant.destination import operations as ops
from pg2qdrant.ui import UI
from pg2qdrant.writer import Writer


def reconcile(plan: Plan, target, conn: psycopg.Connection, *, batch_size: int, fill: bool = True,
              ui: UI | None = None) -> tuple[int, int]:
    """Make the collection's ID set equal the table's: (orphans deleted, missing points written).

    Runs while nothing else writes the collection. ``conn`` may be inside a
    snapshot (the initial copy's), then the comparison is as of that snapshot.
    """
    oids = reader.prepare_connection(conn, plan)
    source: dict[PointId, tuple] = {}
    for key in changes.iter_key_rows(conn, plan, oids):
        source[normalize_point_id(make_point_id(plan.key, key))] = key
    present = {normalize_point_id(r.id) for r in target.scroll(plan.collection, batch=2000, with_vectors=False,
                                                   with_payload=False)}
    orphans = [pid for pid in present if pid not in source]
    writer = Writer(target, plan.collection, batch_size=batch_size)  # requests bounded by points and bytes
    for start in range(0, len(orphans), 10_000):
        writer.apply([ops.DeletePoints(tuple(orphans[start:start + 10_000]))])
    filled = 0
    if fill:
        missing = [key for pid, key in source.items() if pid not in present]
        if missing:
            mapper = RowMapper(plan)
            for start in range(0, len(missing), REREAD_CHUNK):
                rows = changes.fetch_rows_by_key(conn, plan, oids, missing[start:start + REREAD_CHUNK])
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
