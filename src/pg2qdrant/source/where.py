"""The ``--pg.where`` row filter in SQL: composed into every read, and checked by PostgreSQL.

The filter's text is checked for shape in :func:`check_where` (no SQL
needed); here it becomes a condition of the statements and is planned once by the server.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.table import TableInfo
from pg2qdrant.source.catalog import ident

# The expression is spliced into `WHERE (<expr>)` of every read, so it must not be able to close
# that parenthesis or end the statement. PostgreSQL has no "parse one expression" call a client
# can use, so this scanner finds the top level of the text (outside string literals, quoted
# identifiers and dollar quotes); PostgreSQL itself then checks the expression (validate_where).
_TOKEN = re.compile(r"""
    (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<ident>"(?:[^"]|"")*")
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$)
  | (?P<comment>--|/\*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<semi>;)
  | (?P<other>[^'"$()\-/;eE]+|.)
""", re.VERBOSE | re.DOTALL)


def check_where(expr: str) -> str:
    """The expression, stripped, when it cannot escape ``WHERE (...)``; else InputError."""
    text = (expr or "").strip()
    fix = "give one SQL condition on the table's columns, e.g. --pg.where \"lang = 'en' AND deleted_at IS NULL\"."
    if not text:
        raise InputError("--pg.where is empty.", fix=fix)
    depth, pos = 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        kind = m.lastgroup if m.lastgroup != "tag" else "dollar"
        if kind == "dollar":  # $tag$ ... $tag$: skip to the closing tag
            end = text.find(m.group(0), m.end())
            if end < 0:
                raise InputError(f"--pg.where {text!r}: the dollar quote {m.group(0)} is not closed.", fix=fix)
            pos = end + len(m.group(0))
            continue
        if kind == "comment":
            raise InputError(f"--pg.where {text!r} contains a comment.", fix="remove the comment. " + fix)
        if kind == "semi":
            raise InputError(f"--pg.where {text!r} contains ';': it must be one condition, not statements.", fix=fix)
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth < 0:
                raise InputError(f"--pg.where {text!r} closes a parenthesis it did not open.", fix=fix)
        elif kind == "other" and m.group(0) in ("'", '"'):
            raise InputError(f"--pg.where {text!r}: a quoted string or name is not closed.", fix=fix)
        pos = m.end()
    if depth:
        raise InputError(f"--pg.where {text!r} leaves a parenthesis open.", fix=fix)
    return text




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


def validate_where(conn: psycopg.Connection, table: TableInfo, expr: str) -> str:
    """Check the filter's shape (:func:`check_where`), then in PostgreSQL: it must be a boolean
    condition over the table's columns.

    Planned with LIMIT 0 (no row is read) inside the caller's READ ONLY transaction, under a
    savepoint so that a rejected filter leaves the transaction usable.
    """
    text = check_where(expr)
    query = sql.SQL("SELECT 1 FROM {t} WHERE ({w}) LIMIT 0").format(t=ident(table), w=sql.SQL(text))
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
