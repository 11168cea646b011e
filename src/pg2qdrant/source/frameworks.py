"""The catalog look-ups that recognise a framework's tables (see :mod:`pg2qdrant.core.layouts`)."""

from __future__ import annotations

import psycopg
from psycopg import sql


def has_relation(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, name).as_string(conn),)).fetchone()[0]


def relation_columns(conn: psycopg.Connection, schema: str, name: str) -> list[str]:
    """The column names of ``schema.name`` (none when it does not exist)."""
    return conn.execute(
        "SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped", (sql.Identifier(schema, name).as_string(conn),)).fetchone()[0] or []


def relation_leaves(conn: psycopg.Connection, schema: str, name: str):
    """The relations holding the rows of ``schema.name`` (catalog.leaves; none when it does not exist)."""
    from pg2qdrant.source import catalog
    row = conn.execute("SELECT c.oid, c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
                       (sql.Identifier(schema, name).as_string(conn),)).fetchone()
    return () if row is None else catalog.leaves(conn, row[0], row[1])


def langchain_collections(conn: psycopg.Connection, schema: str) -> list[tuple[str, str]]:
    """(name, row filter) of every LangChain collection in ``schema.langchain_pg_collection``,
    by name; the filter selects the collection's rows of langchain_pg_embedding."""
    rows = conn.execute(sql.SQL("SELECT uuid::text, name FROM {} ORDER BY name").format(
        sql.Identifier(schema, "langchain_pg_collection"))).fetchall()
    return [(name, "collection_id = " + sql.Literal(uuid).as_string(conn)) for uuid, name in rows]

