"""Poll mode's reads: the updated column's high-water mark, and the rows past a watermark
less an overlap, both in one REPEATABLE READ snapshot (so no row falls between them)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import sql

from pg2qdrant.core.table import Column
from pg2qdrant.source import reader, snapshot
from pg2qdrant.source.catalog import ident


def rows_since(conn: psycopg.Connection, plan, column: Column, watermark: str | None, overlap: float, *,
               seconds: bool, batch_rows: int) -> tuple[str | None, Iterator[list[tuple]]]:
    """(max of ``column`` as text, the rows with ``column > watermark - overlap``: all rows
    without a watermark). ``seconds``: the overlap is seconds of a time column, else a number.
    Starts the snapshot; the caller ends it (:func:`snapshot.end`) after reading the rows."""
    oids = reader.prepare_connection(conn, plan)
    snapshot.begin_read_only(conn)  # max() and rows: one snapshot
    name = sql.Identifier(column.name)
    type_sql = sql.SQL(column.declared)  # format_type() output from the catalog
    high = conn.execute(sql.SQL("SELECT max({})::text FROM {}").format(name, ident(plan.table))).fetchone()[0]
    where = None
    if watermark is not None:
        if seconds:
            where = sql.SQL("{} > {}::{} - {} * interval '1 second'").format(
                name, sql.Literal(watermark), type_sql, sql.Literal(overlap))
        else:
            where = sql.SQL("{} > {}::{} - {}").format(name, sql.Literal(watermark), type_sql, sql.Literal(overlap))
    return high, reader.copy_rows(conn, reader.copy_query(conn, plan, where), oids, batch_rows)
