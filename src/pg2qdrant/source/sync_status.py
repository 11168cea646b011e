"""What `pg2qdrant sync status` reads about a publication (the slot itself: :mod:`.slots`)."""

from __future__ import annotations

import psycopg


def publication_tables(conn: psycopg.Connection, publication: str) -> tuple[bool, str | None]:
    """(the publication exists, its tables as ``schema.name, ...`` quoted where needed, or None)."""
    tables = conn.execute(
        "SELECT string_agg(format('%%I.%%I', schemaname, tablename), ', ') FROM pg_publication_tables "
        "WHERE pubname = %s", (publication,)).fetchone()[0]
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    return exists is not None, tables
