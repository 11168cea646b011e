"""Reading source rows with the plan's own SELECT (optionally filtered or sampled), mapped like migrate.

Kept apart from :mod:`.compare` because it talks to PostgreSQL, while comparing is
pure: the values check, the demo and the tests read expected points through here.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import psycopg
from psycopg import sql

from pg2qdrant.mapping import PointBatch, RowMapper
from pg2qdrant.plan import Plan
from pg2qdrant.source import reader


def iter_source_batches(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                        params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                        limit: int | None = None, batch_rows: int = 256) -> Iterator[PointBatch]:
    """Stream rows with the plan's SELECT and map them like migrate, ``batch_rows`` at a time."""
    oids = reader.prepare_connection(conn, plan)
    mapper = RowMapper(plan)
    query = reader.copy_query(conn, plan, where, params, tablesample=tablesample, limit=limit)
    for rows in reader.copy_rows(conn, query, oids, batch_rows):
        yield mapper.map_rows(rows)


def fetch_source_batch(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                       params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                       limit: int | None = None) -> PointBatch:
    """Read rows with the plan's own SELECT (optionally filtered) and map them like migrate."""
    oids = reader.prepare_connection(conn, plan)
    query = reader.copy_query(conn, plan, where, params, tablesample=tablesample, limit=limit)
    rows = [row for chunk in reader.copy_rows(conn, query, oids, 10_000) for row in chunk]
    return RowMapper(plan).map_rows(rows)
