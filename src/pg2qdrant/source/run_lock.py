"""A lock that runs of one job take in the source database, so that two of them cannot interleave.

Qdrant has no lock a client can hold; every run of a job connects to the same PostgreSQL
database, and a session advisory lock there lives exactly as long as the run's connection
(a killed run's lock goes with its connection: nothing to clean up).
"""

from __future__ import annotations

import hashlib

import psycopg

from pg2qdrant.source.connect import connect


class RunLock:
    """A held lock; :meth:`release` (or the end of the process) lets the next run take it."""

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def release(self) -> None:
        self._conn.close()  # closing the session releases its advisory locks


def _key(name: str) -> int:
    """The lock's bigint key: the first 8 bytes of a hash of ``name`` (signed, as PostgreSQL's bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def try_lock(url: str, name: str) -> tuple[RunLock | None, int | None]:
    """Take the lock ``name`` without waiting: (the lock, None), or (None, the holder's backend pid)."""
    key = _key(name)
    conn = connect(url, autocommit=True)
    try:
        if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            return RunLock(conn), None
        # a bigint key is held as classid = its high 32 bits, objid = its low 32 bits, objsubid = 1
        unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
        row = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                           "AND classid::bigint = %s AND objid::bigint = %s AND database = "
                           "(SELECT oid FROM pg_database WHERE datname = current_database())",
                           (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
        conn.close()
        return None, row[0] if row else None
    except BaseException:
        conn.close()
        raise
