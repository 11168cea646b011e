"""The ``--pg.where`` row filter in SQL: composed into every read, and checked by PostgreSQL.

The filter's text is checked for shape in :func:`pg2qdrant.layouts.check_where` (no SQL
needed); here it becomes a condition of the statements and is planned once by the server.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pg2qdrant.errors import InputError
from pg2qdrant.source.catalog import TableInfo


def where_sql(plan) -> sql.Composable | None:
    """The plan's row filter as a parenthesised SQL condition (None: every row)."""
    return sql.SQL("({})").format(sql.SQL(plan.where)) if getattr(plan, "where", None) else None


def and_where(plan, where: sql.Composable | None) -> sql.Composable | None:
    """``where`` AND the plan's row filter (either may be absent)."""
    own = where_sql(plan)
    if own is None or where is None:
        return where if own is None else own
    return sql.SQL("({}) AND {}").format(where, own)


def where_clause(plan) -> sql.Composable:
    """`` WHERE <the plan's row filter>``, or nothing."""
    where = where_sql(plan)
    return sql.SQL(" WHERE ") + where if where is not None else sql.SQL("")


def validate_where(conn: psycopg.Connection, table: TableInfo, text: str) -> str:
    """Check the filter in PostgreSQL: it must be a boolean condition over the table's columns.

    Planned with LIMIT 0 (no row is read) inside the caller's READ ONLY transaction, under a
    savepoint so that a rejected filter leaves the transaction usable.
    """
    query = sql.SQL("SELECT 1 FROM {t} WHERE ({w}) LIMIT 0").format(t=table.ident, w=sql.SQL(text))
    in_tx = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    try:
        if in_tx:
            conn.execute("SAVEPOINT pg2qdrant_where")
        conn.execute(query)
        if in_tx:
            conn.execute("RELEASE SAVEPOINT pg2qdrant_where")
    except psycopg.Error as exc:
        if in_tx:
            conn.execute("ROLLBACK TO SAVEPOINT pg2qdrant_where")
        detail = (exc.diag.message_primary or str(exc)).strip()
        raise InputError(f"--pg.where {text!r} is not a condition PostgreSQL accepts on {table.display}: {detail}.",
                         fix="write a boolean SQL expression over the table's columns (columns: "
                             + ", ".join(c.name for c in table.columns) + ").") from None
    return text
