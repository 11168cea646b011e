"""The pre-write checks' questions to PostgreSQL: NULL and duplicate keys, key texts read as
one UUID, the exact row count. Each returns plain values; the caller decides what they mean."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError
from pg2qdrant.source.catalog import ident
from pg2qdrant.source.where import where_clause


def null_key_rows(conn: psycopg.Connection, plan) -> int:
    """Rows where a key column is NULL."""
    any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(c)) for c in plan.key.columns)
    return conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {n}").format(t=ident(plan.table), n=any_null)
                        ).fetchone()[0]


def duplicate_keys(conn: psycopg.Connection, plan, limit: int = 5) -> list[tuple[Any, ...]]:
    """Up to ``limit`` key values held by several rows, most repeated first: (*key values, rows)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in plan.key.columns)
    return conn.execute(sql.SQL(
        "SELECT {cols}, count(*) FROM {t} GROUP BY {cols} HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT {n}"
    ).format(cols=cols, t=ident(plan.table), n=sql.Literal(limit))).fetchall()


_UUID36 = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# mapping.go_uuid_parse in SQL: the UUID a key's text is read as, else NULL. A text that Go
# parses is all ASCII (a valid UTF-8 text of 38 bytes with 36 ASCII inside starts and ends
# with ASCII), so characters count as bytes here.
GO_UUID_SQL = (
    "CASE WHEN length(k) NOT IN (32, 36, 38, 45) THEN NULL "
    "WHEN k ~ {plain} THEN k::uuid "
    "WHEN k ~ {wrapped} THEN substr(k, 2, 36)::uuid "
    "WHEN k ~* {urn} THEN substr(k, 10)::uuid END")
GO_UUID_PATTERNS = {"plain": f"^([0-9a-fA-F]{{32}}|{_UUID36})$",
                    "wrapped": f"^[\\x01-\\x7f]{_UUID36}[\\x01-\\x7f]$",
                    "urn": f"^urn:uuid:{_UUID36}$"}


def go_uuid_expression() -> sql.Composable:
    """:data:`GO_UUID_SQL` with its patterns: the UUID of the text ``k``, or NULL."""
    return sql.SQL(GO_UUID_SQL).format(**{n: sql.Literal(p) for n, p in GO_UUID_PATTERNS.items()})


def go_uuid_of(conn: psycopg.Connection, text: str) -> str | None:
    """What :func:`go_uuid_expression` reads ``text`` as (the UUID's text, or None)."""
    return conn.execute(sql.SQL("SELECT {}::text FROM (SELECT %s::text AS k) s").format(go_uuid_expression()),
                        (text,)).fetchone()[0]


def shared_id_groups(conn: psycopg.Connection, plan, limit: int = 5) -> list[tuple[str, list[str]]]:
    """Distinct key texts read as the same UUID, found in SQL (server memory bounded by work_mem):
    up to ``limit`` (UUID, [key texts]). Two can only meet when one is not the canonical spelling,
    so only the UUIDs of such spellings are grouped (usually none: the group scan then ends at once)."""
    keys = sql.SQL("SELECT k, {u} AS u FROM (SELECT ({e}) COLLATE \"C\" AS k FROM {t}) s").format(
        u=go_uuid_expression(), e=sql.SQL(plan.reads[plan.key.read_indexes[0]].sql), t=ident(plan.table))
    return conn.execute(sql.SQL(
        "SELECT u::text, array_agg(DISTINCT k ORDER BY k) FROM ({keys}) p "
        "WHERE u IN (SELECT u FROM ({keys}) q WHERE u IS NOT NULL AND k <> u::text) "
        "GROUP BY u HAVING count(DISTINCT k) > 1 ORDER BY u LIMIT {n}").format(keys=keys, n=sql.Literal(limit))
    ).fetchall()


def count_rows(conn: psycopg.Connection, plan) -> int:
    """Exact row count in the snapshot (not n_live_tup, which is an estimate), --pg.where applied."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {}{}").format(ident(plan.table), where_clause(plan))
                        ).fetchone()[0]


def refused_read(exc: BaseException) -> InputError | None:
    """PostgreSQL's "permission denied" on a read as an InputError that says what to grant (else None)."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return InputError(f"PostgreSQL refused a read: {redaction.redact(exc)}",
                          fix="grant this role SELECT on the table (and USAGE on its schema).")
    return None
