"""Reading source rows with the plan's own SELECT (all, sampled, or by key), mapped like migrate.

Kept apart from :mod:`.compare` because it talks to PostgreSQL (through
:mod:`pg2qdrant.source.row_reads`), while comparing is pure: the values check, the demo and
the tests read expected points through here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.plan import Plan
from pg2qdrant.runtime.mapping import row_mapper
from pg2qdrant.source import row_reads as source_rows
from pg2qdrant.source.connect import Connection


def iter_source_batches(conn: Connection, plan: Plan, *, sample_percent: float | None = None, seed: int = 0,
                        batch_rows: int = 256) -> Iterator[PointBatch]:
    """Stream rows (all, or a repeatable ``sample_percent`` % sample) mapped like migrate, ``batch_rows`` at a time."""
    mapper = row_mapper(plan)
    for rows in source_rows.row_batches(conn, plan, batch_rows, sample_percent=sample_percent, seed=seed):
        yield mapper.map_rows(rows)


def fetch_source_batch(conn: Connection, plan: Plan, keys: Sequence[tuple] | None = None) -> PointBatch:
    """Read every row (or the rows with these key values) and map them like migrate."""
    if keys is not None:
        rows = source_rows.rows_by_key(conn, plan, keys)
    else:
        rows = [row for chunk in source_rows.row_batches(conn, plan, 10_000) for row in chunk]
    return row_mapper(plan).map_rows(rows)
