"""The replication connection: slot creation, then the COPY_BOTH stream of changes and its feedback.

`sync` keeps a collection current by reading PostgreSQL's own change stream
(logical replication with the built-in ``pgoutput`` plugin), so every change is
seen, direct SQL edits, deletes and TRUNCATE included, in commit order, and the
slot remembers how far we got (its ``confirmed_flush_lsn`` is our checkpoint).

Why the psycopg 3 low-level API: psycopg 3 has no replication API; 3.3 lets a
replication connection run ``START_REPLICATION`` and return the COPY_BOTH stream,
which we then drive with ``pgconn.get_copy_data`` / ``put_copy_data`` (measured
against psycopg2's ``LogicalReplicationConnection`` and pg_recvlogical: the
server is the limit, not the client). Adding psycopg2 would mean a second driver
with other type adapters, while sync must decode values exactly like the copy
does (same loaders, see :class:`~pg2qdrant.source.pgoutput_rows.RowDecoder`).

Frames inside the stream (CopyData messages; big-endian; times in µs since 2000)::

    w  XLogData   Int64 start LSN, Int64 server WAL end, Int64 send time, payload
                  (one pgoutput message: see :mod:`.pgoutput`)
    k  Keepalive  Int64 server WAL end, Int64 send time, Byte reply requested
    r  feedback   (ours) Int64 written, Int64 flushed, Int64 applied, Int64 clock,
                  Byte reply requested: ``flushed`` becomes the slot's confirmed_flush_lsn

Nothing here knows Qdrant.
"""

from __future__ import annotations

import select
import struct
import time
from dataclasses import dataclass

import psycopg
from psycopg import pq

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError, SourceError
from pg2qdrant.source import connect
from pg2qdrant.source.lsn import format_lsn, parse_lsn, unix_to_pg_time
from pg2qdrant.source.slots import check_name


class ConnectionLost(SourceError):
    """The replication stream ended (server restart, killed walsender, network): reconnect."""


@dataclass(frozen=True)
class XLogData:
    start: int
    wal_end: int
    send_time: int
    payload: bytes


@dataclass(frozen=True)
class Keepalive:
    wal_end: int
    send_time: int
    reply_requested: bool


_FEEDBACK = struct.Struct(">cQQQqB")
_XLOG_HEAD = struct.Struct(">QQq")
_KEEPALIVE = struct.Struct(">Qq?")


def _classify_replication_error(exc: Exception, url: str) -> Exception:
    text = redaction.redact(str(exc)).strip()
    low = text.lower()
    if "wal_level" in low:
        return InputError(
            f"PostgreSQL cannot stream changes: {text}",
            fix="set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and "
                "restart PostgreSQL; on a managed service enable logical replication in its settings. "
                "Without it, use --sync.mode poll --sync.updated-column COLUMN.")
    if "permission denied" in low or "must be superuser or replication role" in low or \
            "replication" in low and ("not allowed" in low or "privilege" in low):
        return InputError(
            f"PostgreSQL refused a replication connection: {text}",
            fix="grant it with ALTER ROLE <user> REPLICATION (managed services: their replication role), "
                "or use --sync.mode poll --sync.updated-column COLUMN.")
    if "no pg_hba.conf entry for replication" in low:
        return InputError(
            f"PostgreSQL refused a replication connection: {text}",
            fix="allow it in pg_hba.conf (a line for database 'replication' or the database name with "
                "the user), then reload PostgreSQL.")
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, SourceError):  # unreachable (a restart, the network): worth retrying
        return ConnectionLost(exc.message, fix=exc.fix)
    return ConnectionLost(f"Replication connection to PostgreSQL failed: {text}",
                          fix="check that PostgreSQL is running and reachable; sync retries on its own.")


class ReplicationConnection:
    """A ``replication=database`` connection: slot commands, then the COPY_BOTH stream."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.conn = connect.connect(url, autocommit=True, replication="database")
        except (InputError, SourceError) as exc:
            raise _classify_replication_error(exc, url) from None
        except psycopg.Error as exc:
            raise _classify_replication_error(exc, url) from None
        self.streaming = False

    def create_slot(self, slot: str, *, export_snapshot: bool, temporary: bool = False) -> tuple[int, str | None]:
        """Create a pgoutput slot: (consistent LSN, exported snapshot name or None).

        With the snapshot exported, the connection must stay idle until every
        reader has imported it (the next command here releases it). A ``temporary``
        slot is dropped by the server when this connection ends.
        """
        mode = "export" if export_snapshot else "nothing"
        try:
            row = self.conn.execute(
                f"CREATE_REPLICATION_SLOT {check_name('--sync.slot', slot)}{' TEMPORARY' if temporary else ''} "
                "LOGICAL pgoutput "
                f"(SNAPSHOT '{mode}')").fetchone()
        except psycopg.Error as exc:
            raise _classify_replication_error(exc, self.url) from None
        return parse_lsn(row[1]), (row[2] if export_snapshot else None)

    def start(self, slot: str, publication: str, start_lsn: int = 0) -> None:
        """START_REPLICATION from ``start_lsn`` (0: where the slot's confirmed position is)."""
        command = (f"START_REPLICATION SLOT {check_name('--sync.slot', slot)} LOGICAL {format_lsn(start_lsn)} "
                   f"(proto_version '1', publication_names '{check_name('--sync.publication', publication)}', "
                   "binary 'true')")
        try:
            # conn.execute() leaves the connection in COPY_BOTH; psycopg's cursor.copy() would
            # reject that mode, so the stream is read with the libpq-level calls below.
            self.conn.execute(command)
        except psycopg.errors.ObjectInUse as exc:
            raise SlotBusy(redaction.redact(str(exc)).strip()) from None
        except psycopg.Error as exc:
            raise _classify_replication_error(exc, self.url) from None
        self.streaming = True

    def read(self, timeout: float) -> XLogData | Keepalive | None:
        """The next frame, waiting at most ``timeout`` seconds; None when nothing arrived."""
        pg = self.conn.pgconn
        try:
            n, data = pg.get_copy_data(1)
            if n == 0:
                ready, _, _ = select.select([pg.socket], [], [], timeout)
                if not ready:
                    return None
                pg.consume_input()
                n, data = pg.get_copy_data(1)
                if n == 0:
                    return None
        except (psycopg.Error, OSError, ValueError) as exc:
            raise ConnectionLost(f"The replication stream broke: {redaction.redact(exc)}") from None
        if n == -1:
            # The server ended the stream (the walsender was terminated, or shutdown); the
            # connection may still report closed=False: the caller reconnects.
            result = pg.get_result()
            reason = ""
            if result is not None:
                reason = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(
                    "utf-8", "replace")
            raise ConnectionLost(f"PostgreSQL ended the replication stream{': ' + reason if reason else ''}.")
        frame = bytes(data)
        if frame[:1] == b"w":
            start, wal_end, send_time = _XLOG_HEAD.unpack_from(frame, 1)
            return XLogData(start, wal_end, send_time, frame[25:])
        if frame[:1] == b"k":
            wal_end, send_time, reply = _KEEPALIVE.unpack_from(frame, 1)
            return Keepalive(wal_end, send_time, reply)
        return None

    def send_feedback(self, written: int, flushed: int, *, reply: bool = False) -> None:
        """Standby status update: ``flushed`` is what the slot may forget (confirmed_flush_lsn)."""
        message = _FEEDBACK.pack(b"r", written, flushed, flushed, unix_to_pg_time(time.time()), 1 if reply else 0)
        pg = self.conn.pgconn
        try:
            pg.put_copy_data(message)
            pg.flush()
        except (psycopg.Error, OSError) as exc:
            raise ConnectionLost(f"Could not send progress to PostgreSQL: {redaction.redact(exc)}") from None

    def close(self) -> None:
        try:
            if self.streaming and not self.conn.closed:
                self.conn.pgconn.put_copy_end(None)
                self.conn.pgconn.flush()
        except Exception:
            pass
        try:
            self.conn.close()
        except Exception:
            pass


class SlotBusy(SourceError):
    """Another connection is streaming from the slot (maybe our previous, just-killed process)."""

