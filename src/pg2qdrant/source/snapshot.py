"""One consistent view of the table for every reader.

A coordinator transaction exports its snapshot; each worker imports it, so
all ranges are read as of the same instant even while the application writes
(``pg_export_snapshot()`` / ``SET TRANSACTION SNAPSHOT``). The coordinator's transaction must stay open until every worker
has attached, so it lives for the whole copy. Transactions are READ ONLY: the
source is never written.
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def begin_read_only(conn: psycopg.Connection) -> None:
    """Start a REPEATABLE READ READ ONLY transaction: every statement until :func:`end` sees one snapshot."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def begin_snapshot(conn: psycopg.Connection) -> str:
    """Start the coordinator's REPEATABLE READ READ ONLY transaction; return its snapshot id."""
    begin_read_only(conn)
    return conn.execute("SELECT pg_export_snapshot()").fetchone()[0]


# How long a session that imported a snapshot waits for a table lock. The session that exported it
# (or counted in it) holds ACCESS SHARE on the table until the copy ends; a TRUNCATE or ALTER TABLE
# that queues for ACCESS EXCLUSIVE after it makes every later share request wait behind it, and it
# waits for the copy: a wait that cannot end, and that PostgreSQL cannot see as a deadlock (one side
# waits in the client). So a reader stops waiting (lock_conflict names who is in the way), as
# pg_dump's parallel workers do.
LOCK_WAIT_S = 5


def attach_snapshot(conn: psycopg.Connection, snapshot_id: str) -> None:
    """Make ``conn`` (autocommit) see exactly the coordinator's snapshot (waiting at most
    LOCK_WAIT_S for a table lock)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute(f"SET TRANSACTION SNAPSHOT {sql.quote(snapshot_id)}")
    conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")


def end(conn: psycopg.Connection) -> None:
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


def attach_or_fresh(conn: psycopg.Connection, snapshot_id: str) -> bool:
    """Import ``snapshot_id``, or start a newer snapshot when it is gone (the exporting
    transaction ended, e.g. the server restarted). True when the snapshot was imported."""
    try:
        attach_snapshot(conn, snapshot_id)
        return True
    except psycopg.Error:
        conn.rollback() if not conn.autocommit else conn.execute("ROLLBACK")
        begin_read_only(conn)
        return False


def release(conn: psycopg.Connection) -> None:
    """End the snapshot's transaction and close; a connection the server dropped just closes."""
    try:
        end(conn)
    except psycopg.Error:  # the server may have restarted under us: nothing left to end
        pass
    finally:
        conn.close()
