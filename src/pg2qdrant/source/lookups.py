"""Rows and keys read by key: what sync reads again, and the key sets reconcile and verify compare."""

from __future__ import annotations

import psycopg
from psycopg import sql

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import SourceError
from pg2qdrant.core.plan import Plan
from pg2qdrant.source import reader


def key_match(plan: Plan, keys: list[tuple]) -> sql.Composable:
    """A WHERE clause matching rows by key values (as the key reads decode them).

    The values are quoted literals, not bind parameters: COPY takes none, and rendering
    parameters client-side would read a ``%`` of the --pg.where filter as a placeholder.
    """
    types = {"int": "int8", "uuid": "uuid", "text": "text"}
    exprs = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
    arrays = sql.SQL(", ").join(sql.SQL("{}::{}[]").format(sql.Literal([k[n] for k in keys]), sql.SQL(types[kind]))
                                for n, kind in enumerate(plan.key.kinds))
    return sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(exprs, arrays)


class SchemaChanged(SourceError):
    """The plan's SELECT no longer fits the table (a column dropped, renamed or retyped since the
    plan was made): sync makes the plan again from the catalog (sync.schema_watch)."""


# What PostgreSQL answers to a SELECT naming a column that was dropped, renamed or retyped.
_SCHEMA_ERRORS = (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable, psycopg.errors.DatatypeMismatch,
                  psycopg.errors.CannotCoerce, psycopg.errors.UndefinedFunction)


def fetch_rows_by_key(conn: psycopg.Connection, plan: Plan, oids: list[int], keys: list[tuple],
                      chunk: int = 500) -> list[tuple]:
    """Current rows with these key values, read with the plan's own SELECT and loaders (as the copy)."""
    out: list[tuple] = []
    try:
        for start in range(0, len(keys), chunk):
            query = reader.copy_query(conn, plan, key_match(plan, keys[start:start + chunk]))
            for rows in reader.copy_rows(conn, query, oids, chunk):
                out.extend(rows)
    except _SCHEMA_ERRORS as exc:
        raise SchemaChanged(f"{plan.table.display} no longer has the columns the plan reads: "
                            f"{redaction.redact(exc)}",
                            fix="restart sync: the plan is made again from the table.") from None
    return out
