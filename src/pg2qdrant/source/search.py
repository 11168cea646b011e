"""pgvector's exact top-k search: the ground truth verify's search-parity check compares
Qdrant's results with. Index scans are switched off for the duration (:func:`exact_scans`), so
the top-k is exact whatever indexes the table has. psycopg's errors leave as SourceError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from pg2qdrant.core.errors import SourceError
from pg2qdrant.source.catalog import ident
from pg2qdrant.source.where import where_sql

_INDEX_SCANS = ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan")


@contextmanager
def _as_source_error() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise SourceError(str(exc)) from exc


@contextmanager
def exact_scans(conn: psycopg.Connection) -> Iterator[None]:
    """Index scans off inside a savepoint of the caller's transaction (the savepoint also undoes the SETs)."""
    with _as_source_error():
        conn.execute("SAVEPOINT pg2qdrant_verify")
        try:
            for setting in _INDEX_SCANS:
                conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))
            yield
        finally:
            conn.execute("ROLLBACK TO SAVEPOINT pg2qdrant_verify")
            conn.execute("RELEASE SAVEPOINT pg2qdrant_verify")


def pgvector_schema(conn: psycopg.Connection) -> str:
    """The schema the vector extension is installed in (its operators and types live there)."""
    with _as_source_error():
        row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = "
                           "e.extnamespace WHERE e.extname = 'vector'").fetchone()
    return row[0] if row else "public"


class ExactSearch:
    """The ``k`` rows nearest to a query literal by one vector column: (key values, distance).

    ``operator`` is pgvector's distance operator (e.g. ``<=>``); the query literal is cast to
    the column's own type: ``cast_type`` (schema, name), a None schema meaning pgvector's, or
    ``bit(bits)`` without it.
    """

    def __init__(self, conn: psycopg.Connection, plan, read_index: int, operator: str, k: int, *,
                 cast_type: tuple[str | None, str] | None = None, bits: int | None = None):
        self.conn = conn
        self.nkeys = len(plan.key.read_indexes)
        schema = pgvector_schema(conn)
        cast = sql.SQL("bit({})").format(sql.SQL(str(int(bits or 0)))) if cast_type is None \
            else sql.Identifier(cast_type[0] or schema, cast_type[1])
        keys = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
        column = sql.SQL(plan.reads[read_index].sql)
        self.query = sql.SQL("SELECT {keys}, {col} OPERATOR({schema}.{op}) %s::{cast} FROM {table} "
                             "WHERE {col} IS NOT NULL{filter} ORDER BY {pos} LIMIT {k}").format(
            filter=sql.SQL(" AND ") + where_sql(plan) if plan.where else sql.SQL(""),
            keys=keys, col=column, schema=sql.Identifier(schema), op=sql.SQL(operator), cast=cast,
            table=ident(plan.table), pos=sql.SQL(str(self.nkeys + 1)), k=sql.Literal(k))

    def top_k(self, literal: str) -> list[tuple[tuple, float]]:
        """(key values in plan.key order, distance) of the nearest rows, nearest first."""
        with _as_source_error(), self.conn.cursor(binary=True) as cur:
            rows = cur.execute(self.query, (literal,)).fetchall()
        return [(tuple(r[:self.nkeys]), float(r[self.nkeys])) for r in rows]

    def uses_index(self, literal: str) -> bool:
        """pgvector's plan for this query still reads an index (its results may then be approximate)."""
        with _as_source_error():
            plan: Any = self.conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + self.query, (literal,)).fetchone()[0]
        text = json.dumps(plan)
        return "Index Scan" in text or "Index Only Scan" in text or "Bitmap" in text
