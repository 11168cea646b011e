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


def source_select(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                  params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                  limit: int | None = None) -> sql.Composable:
    """``COPY (SELECT <plan reads> FROM table [TABLESAMPLE ...] [WHERE ...] [LIMIT n]) TO STDOUT``."""
    columns = sql.SQL(", ").join(sql.SQL(r.sql) for r in plan.reads)  # built from quoted catalog names
    query = sql.SQL("COPY (SELECT {c} FROM {t}{s}{w}{l}) TO STDOUT (FORMAT BINARY)").format(
        c=columns, t=plan.table.ident,
        s=(sql.SQL(" TABLESAMPLE ") + tablesample) if tablesample is not None else sql.SQL(""),
        w=(sql.SQL(" WHERE ") + where) if where is not None else sql.SQL(""),
        l=sql.SQL(" LIMIT {}").format(sql.Literal(int(limit))) if limit is not None else sql.SQL(""))
    if params:  # COPY takes no bind parameters: render them client-side, safely quoted
        query = sql.SQL(psycopg.ClientCursor(conn).mogrify(query, params))
    return query


def iter_source_batches(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                        params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                        limit: int | None = None, batch_rows: int = 256) -> Iterator[PointBatch]:
    """Stream rows with the plan's SELECT and map them like migrate, ``batch_rows`` at a time."""
    oids = reader.prepare_connection(conn, plan)
    mapper = RowMapper(plan)
    query = source_select(conn, plan, where, params, tablesample=tablesample, limit=limit)
    for rows in reader.copy_rows(conn, query, oids, batch_rows):
        yield mapper.map_rows(rows)


def fetch_source_batch(conn: psycopg.Connection, plan: Plan, where: sql.Composable | None = None,
                       params: Sequence[Any] = (), *, tablesample: sql.Composable | None = None,
                       limit: int | None = None) -> PointBatch:
    """Read rows with the plan's own SELECT (optionally filtered) and map them like migrate."""
    oids = reader.prepare_connection(conn, plan)
    query = source_select(conn, plan, where, params, tablesample=tablesample, limit=limit)
    rows = [row for chunk in reader.copy_rows(conn, query, oids, 10_000) for row in chunk]
    return RowMapper(plan).map_rows(rows)
