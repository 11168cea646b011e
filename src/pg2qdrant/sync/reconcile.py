"""Reconciliation: compare ID sets, delete orphans, fill missing points.

:func:`reconcile` is ``--sync.mode reconcile`` / ``--sync.reconcile``, the orphan
check after an initial copy into an existing collection, and the fix-up after a
TRUNCATE of only some partitions; :func:`_reconcile_now` runs it on a connection
of its own and counts the result.
"""

from __future__ import annotations

import psycopg

from pg2qdrant.mapping import PointId, RowMapper, make_point_id, normalize_point_id, shared_id_error
from pg2qdrant.pipeline import MigrationOptions
from pg2qdrant.plan import Plan
from pg2qdrant.source import changes, connect, reader
from pg2qdrant.sync.options import REREAD_CHUNK, SyncStats
from pg2qdrant.destination import operations as ops
from pg2qdrant.ui import UI


def reconcile(plan: Plan, target, conn: psycopg.Connection, *, batch_size: int, fill: bool = True,
              ui: UI | None = None) -> tuple[int, int]:
    """Make the collection's ID set equal the table's: (orphans deleted, missing points written).

    Runs while nothing else writes the collection. ``conn`` may be inside a
    snapshot (the initial copy's), then the comparison is as of that snapshot.
    """
    oids = reader.prepare_connection(conn, plan)
    source: dict[PointId, tuple] = {}
    for key in changes.iter_key_rows(conn, plan, oids):
        pid = normalize_point_id(make_point_id(plan.key, key))
        other = source.setdefault(pid, key)
        if other != key:  # two rows, one point: deleting either would remove the other's
            raise shared_id_error(plan, [(pid, [other[0], key[0]])])
    present = {normalize_point_id(r.id) for r in target.scroll(plan.collection, batch=2000, with_vectors=False,
                                                   with_payload=False)}
    orphans = [pid for pid in present if pid not in source]
    for start in range(0, len(orphans), 10_000):
        target.apply(plan.collection, [ops.DeletePoints(tuple(orphans[start:start + 10_000]))], wait=True)
    filled = 0
    if fill:
        missing = [key for pid, key in source.items() if pid not in present]
        if missing:
            mapper = RowMapper(plan)
            for start in range(0, len(missing), REREAD_CHUNK):
                rows = changes.fetch_rows_by_key(conn, plan, oids, missing[start:start + REREAD_CHUNK])
                for s in range(0, len(rows), batch_size):
                    target.apply(plan.collection, [ops.Upsert(mapper.map_rows(rows[s:s + batch_size]))], wait=True)
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
