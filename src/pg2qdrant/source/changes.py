"""Change data capture from PostgreSQL: publication, logical slot, and the pgoutput stream.

`sync` keeps a collection current by reading PostgreSQL's own change stream
(logical replication with the built-in ``pgoutput`` plugin), so every change is
seen, direct SQL edits, deletes and TRUNCATE included, in commit order, and the
slot remembers how far we got (its ``confirmed_flush_lsn`` is our checkpoint).

Why the psycopg 3 low-level API: no library decodes ``pgoutput`` for psycopg 3,
and psycopg 3 has no replication API; 3.3 lets a replication connection run
``START_REPLICATION`` and return the COPY_BOTH stream, which we then drive with
``pgconn.get_copy_data`` / ``put_copy_data`` (notes/04 measured this against
psycopg2's ``LogicalReplicationConnection`` and pg_recvlogical: the server is the
limit, not the client). Adding psycopg2 would mean a second driver with other
type adapters, while this module must decode values exactly like the copy does
(same loaders, see :class:`RowDecoder`).

Nothing here knows Qdrant: this module yields decoded rows in the plan's read
order; :mod:`pg2qdrant.sync` decides what they mean for the collection.
"""

from __future__ import annotations

import hashlib
import re
import select
import struct
import time
from dataclasses import dataclass
from typing import Any, Iterable

import psycopg
from psycopg import pq, sql
from psycopg.adapt import Transformer

from pg2qdrant import redaction
from pg2qdrant.errors import InputError, SourceError
from pg2qdrant.layouts import and_where
from pg2qdrant.plan import Plan
from pg2qdrant.source import connect, reader

PG_EPOCH_UNIX = 946_684_800  # 2000-01-01T00:00:00Z, the epoch of replication timestamps
_IDENT_RE = re.compile(r"^[a-z0-9_]{1,63}$")


# ---------------------------------------------------------------------------------------
# LSNs
# ---------------------------------------------------------------------------------------

def parse_lsn(text: str | None) -> int:
    if not text:
        return 0
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def pg_time_to_unix(usecs: int) -> float:
    return PG_EPOCH_UNIX + usecs / 1_000_000


def unix_to_pg_time(t: float) -> int:
    return int((t - PG_EPOCH_UNIX) * 1_000_000)


# ---------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------

def derived_name(prefix: str, collection: str) -> str:
    """A valid slot/publication name from the collection: lower case, [a-z0-9_], <= 63 chars.

    Replication slot names allow only these characters, and the same rule keeps the
    publication name usable unquoted in psql. A hash suffix keeps names distinct when
    cleaning or truncating had to change the collection name.
    """
    clean = re.sub(r"[^a-z0-9_]", "_", collection.lower())
    name = f"{prefix}_{clean}"
    if clean != collection or len(name) > 63:
        digest = hashlib.sha1(collection.encode()).hexdigest()[:8]
        name = f"{name[:54]}_{digest}"
    return name


def check_name(flag: str, name: str) -> str:
    if not _IDENT_RE.match(name):
        raise InputError(f"{flag} {name!r} is not a valid name.",
                         fix="use 1-63 characters: lower-case letters, digits and underscores.")
    return name


# ---------------------------------------------------------------------------------------
# pgoutput messages (protocol version 1)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RelColumn:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d default, f full, i index, n nothing
    columns: tuple[RelColumn, ...]


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: int  # µs since 2000-01-01
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str


# A tuple: one (kind, data) per relation column; kind is n (NULL), u (unchanged TOAST),
# t (text) or b (binary); data is the value's bytes for t and b.
TupleData = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Insert:
    relation: int
    new: TupleData


@dataclass(frozen=True)
class Update:
    relation: int
    old_kind: str | None  # K: old key columns only, O: whole old row, None: key unchanged
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True)
class Delete:
    relation: int
    old_kind: str
    old: TupleData


@dataclass(frozen=True)
class Truncate:
    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Other:
    tag: str  # Origin, logical decoding Message: not ours to act on


_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U16 = struct.Struct(">H")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8", "replace"), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    out: TupleData = []
    for _ in range(n):
        kind = chr(buf[pos])
        pos += 1
        if kind in "tb":
            (length,) = _I32.unpack_from(buf, pos)
            pos += 4
            out.append((kind, buf[pos:pos + length]))
            pos += length
        else:
            out.append((kind, None))
    return out, pos


def decode_message(buf: bytes) -> Any:
    """One pgoutput message (the payload of an XLogData frame)."""
    tag = chr(buf[0])
    if tag == "B":
        final_lsn, ts, xid = struct.unpack_from(">QqI", buf, 1)
        return Begin(final_lsn, ts, xid)
    if tag == "C":
        _flags, commit_lsn, end_lsn, ts = struct.unpack_from(">BQQq", buf, 1)
        return Commit(commit_lsn, end_lsn, ts)
    if tag == "R":
        (oid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        identity = chr(buf[pos])
        (ncols,) = _U16.unpack_from(buf, pos + 1)
        pos += 3
        cols = []
        for _ in range(ncols):
            flags = buf[pos]
            colname, pos = _cstring(buf, pos + 1)
            type_oid, typmod = struct.unpack_from(">Ii", buf, pos)
            pos += 8
            cols.append(RelColumn(colname, type_oid, typmod, bool(flags & 1)))
        return Relation(oid, namespace, name, identity, tuple(cols))
    if tag == "Y":
        (oid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, _ = _cstring(buf, pos)
        return TypeInfo(oid, namespace, name)
    if tag == "I":
        (rel,) = _U32.unpack_from(buf, 1)
        new, _ = _tuple(buf, 6)  # buf[5] == 'N'
        return Insert(rel, new)
    if tag == "U":
        (rel,) = _U32.unpack_from(buf, 1)
        pos = 5
        old_kind, old = None, None
        if chr(buf[pos]) in "KO":
            old_kind = chr(buf[pos])
            old, pos = _tuple(buf, pos + 1)
        new, _ = _tuple(buf, pos + 1)  # buf[pos] == 'N'
        return Update(rel, old_kind, old, new)
    if tag == "D":
        (rel,) = _U32.unpack_from(buf, 1)
        old_kind = chr(buf[5])
        old, _ = _tuple(buf, 6)
        return Delete(rel, old_kind, old)
    if tag == "T":
        n, options = struct.unpack_from(">IB", buf, 1)
        rels = struct.unpack_from(f">{n}I", buf, 6)
        return Truncate(tuple(rels), bool(options & 1), bool(options & 2))
    return Other(tag)


# ---------------------------------------------------------------------------------------
# Rows: pgoutput columns -> values in plan.reads order, decoded like the copy decodes them
# ---------------------------------------------------------------------------------------

class _Unchanged:
    """Marker for a value the stream did not send (unchanged TOAST, or a column not published)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self):
        return (_Unchanged, ())


UNCHANGED = _Unchanged()

# Base types whose binary wire form is their text, so a `col::text` read can use it as is.
_TEXT_LIKE = {"text", "varchar", "name"}


@dataclass
class _Pending:
    """A value PostgreSQL must convert with the plan's own SQL expression (see RowDecoder)."""

    row: list
    index: int
    expression: str  # the read's SQL after the column name (applied to a parameter instead)
    type_oid: int
    fmt: int  # 1 binary, 0 text
    data: bytes


@dataclass
class _ReadRule:
    read_index: int
    column: str
    direct: bool  # decode the wire bytes with the read's loader
    loader: Any  # binary loader of the read's load type
    expression: str  # the read's SQL after the column name (for conversions by PostgreSQL)


class RowDecoder:
    """Turns pgoutput tuples into rows in ``plan.reads`` order, decoded exactly like COPY.

    With ``binary 'true'`` pgoutput sends each column in its type's binary send
    format, the same bytes a binary COPY of the bare column yields, so those are
    decoded with the very loaders the copy uses (source.adapters). A read that
    is an expression rather than the bare column (``col::text`` for text-form
    types, ``"char"`` and non-integer keys; casts of domains, arrays of domains
    and domains over arrays to their base type; arrays of enums...) needs
    PostgreSQL's conversion: the wire value (of the column's own type) is sent
    back as a parameter of that same expression on ``conn`` (one statement per
    batch), so the result cannot differ from what the copy read. Columns the stream did not
    send (``u``: unchanged TOAST, or missing from the publication) become
    :data:`UNCHANGED`.
    """

    MAX_PARAMS = 1_000  # values per conversion statement (a SELECT list holds at most 1,664)

    def __init__(self, plan: Plan, conn: psycopg.Connection):
        self.plan = plan
        self.conn = conn
        self.load_oids = reader.prepare_connection(conn, plan)
        self.tx = Transformer(conn)
        self.relations: dict[int, Relation] = {}
        self._rules: dict[int, list[tuple[int | None, _ReadRule]]] = {}
        self._pending: list[_Pending] = []
        self.missing_columns: dict[int, list[str]] = {}

    def add_relation(self, rel: Relation) -> None:
        self.relations[rel.oid] = rel
        self._rules[rel.oid] = self._rules_for(rel)

    def _rules_for(self, rel: Relation) -> list[tuple[int | None, _ReadRule]]:
        by_name = {c.name: (i, c) for i, c in enumerate(rel.columns)}
        rules: list[tuple[int | None, _ReadRule]] = []
        missing = []
        for i, read in enumerate(self.plan.reads):
            col = self.plan.table.column(read.column)
            assert col is not None
            expression = f"::{read.cast}" if read.cast else ""  # what follows the column
            found = by_name.get(read.column)
            if found is None:
                missing.append(read.column)
                rules.append((None, _ReadRule(i, read.column, False, None, expression)))
                continue
            pos, rc = found
            if rc.type_oid != col.declared_oid:
                raise InputError(
                    f"Column {read.column} of {self.plan.table.display} changed type while syncing "
                    f"(type OID {col.declared_oid} when sync started, {rc.type_oid} now).",
                    fix="restart `pg2qdrant sync` so the plan is made again from the table; if the vector "
                        "configuration changed, copy into a new collection (--sync.initial-copy).",
                )
            loader = self.tx.get_loader(self.load_oids[i], pq.Format.BINARY)
            base = col.type
            direct = (
                read.raw_oid is not None  # vectors (a vector domain's bytes are the vector's)
                or read.cast is None  # the bare column, decoded by its own type's loader
                # a domain cast to its scalar base type: the wire bytes are the base type's (not
                # so for arrays: their bytes name the element type, a domain in posint[])
                or (col.declared_oid != base.oid and base.category != "A"
                    and self.load_oids[i] == base.oid)
                # col::text of a type whose binary form is its text
                or (read.load_type == "text" and base.category != "A" and (
                    (base.schema == "pg_catalog" and base.name in _TEXT_LIKE)
                    or base.typtype == "e" or (base.extension == "citext" and base.name == "citext")))
            )
            rules.append((pos, _ReadRule(i, read.column, direct, loader, expression)))
        if missing:
            self.missing_columns[rel.oid] = missing
        return rules

    def knows(self, relation: int) -> bool:
        return relation in self._rules

    def decode(self, relation: int, data: TupleData) -> list:
        """A row (list in plan.reads order); conversions by PostgreSQL wait for :meth:`resolve`."""
        rel = self.relations[relation]
        row: list = [None] * len(self.plan.reads)
        for pos, rule in self._rules[relation]:
            if pos is None:
                row[rule.read_index] = UNCHANGED
                continue
            kind, value = data[pos]
            if kind == "n":
                continue
            if kind == "u":
                row[rule.read_index] = UNCHANGED
            elif kind == "b" and rule.direct:
                row[rule.read_index] = rule.loader.load(value)
            else:
                fmt = 1 if kind == "b" else 0
                self._pending.append(_Pending(row, rule.read_index, rule.expression,
                                              rel.columns[pos].type_oid, fmt, bytes(value)))
                row[rule.read_index] = self._pending[-1]
        return row

    def resolve(self) -> None:
        """Convert every pending value with PostgreSQL, in as few statements as possible."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.MAX_PARAMS):
            chunk = pending[start:start + self.MAX_PARAMS]
            select_list = ", ".join(f"${n + 1}{p.expression}" for n, p in enumerate(chunk))
            query = f"SELECT {select_list}".encode()
            with self.conn.lock:
                result = self.conn.pgconn.exec_params(
                    query, [p.data for p in chunk], [p.type_oid for p in chunk], [p.fmt for p in chunk],
                    result_format=1)
            if result.status != pq.ExecStatus.TUPLES_OK and self.conn.pgconn.status != pq.ConnStatus.OK:
                raise ConnectionLost("The connection to PostgreSQL broke while converting values.")
            if result.status != pq.ExecStatus.TUPLES_OK:
                message = redaction.redact((result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
                                            or result.error_message or b"").decode("utf-8", "replace"))
                raise SourceError(f"PostgreSQL could not convert changed values for the plan: {message}",
                                  fix="rerun with --debug and report it (the column types are shown).")
            for n, p in enumerate(chunk):
                value = result.get_value(0, n)
                loader = self.tx.get_loader(self.load_oids[p.index], pq.Format.BINARY)
                p.row[p.index] = None if value is None else loader.load(value)


# ---------------------------------------------------------------------------------------
# The replication connection
# ---------------------------------------------------------------------------------------

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

    def identify_system(self) -> tuple[str, int, int, str]:
        system_id, timeline, xlogpos, dbname = self.conn.execute("IDENTIFY_SYSTEM").fetchone()
        return system_id, int(timeline), parse_lsn(xlogpos), dbname

    def create_slot(self, slot: str, *, export_snapshot: bool) -> tuple[int, str | None]:
        """Create a pgoutput slot: (consistent LSN, exported snapshot name or None).

        With the snapshot exported, the connection must stay idle until every
        reader has imported it (the next command here releases it).
        """
        mode = "export" if export_snapshot else "nothing"
        try:
            row = self.conn.execute(
                f"CREATE_REPLICATION_SLOT {check_name('--sync.slot', slot)} LOGICAL pgoutput "
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


# ---------------------------------------------------------------------------------------
# Slot, publication and replica identity (on an ordinary SQL connection)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    active_pid: int | None
    confirmed_flush: int
    restart: int
    current_wal: int
    wal_status: str | None
    safe_wal_size: int | None

    @property
    def lag_bytes(self) -> int:
        return max(0, self.current_wal - self.confirmed_flush)

    @property
    def retained_bytes(self) -> int:
        return max(0, self.current_wal - self.restart)


def slot_info(conn: psycopg.Connection, slot: str) -> SlotInfo | None:
    row = conn.execute(
        """
        SELECT slot_name, plugin, slot_type, database, active, active_pid,
               confirmed_flush_lsn::text, restart_lsn::text, pg_current_wal_lsn()::text,
               wal_status, safe_wal_size
        FROM pg_replication_slots WHERE slot_name = %s
        """, (slot,)).fetchone()
    if row is None:
        return None
    return SlotInfo(row[0], row[1], row[2], row[3], row[4], row[5], parse_lsn(row[6]), parse_lsn(row[7]),
                    parse_lsn(row[8]), row[9], row[10])


def check_slot(info: SlotInfo, database: str) -> None:
    """An existing slot must be a pgoutput slot of this database to be reused."""
    if info.slot_type != "logical" or info.plugin != "pgoutput" or info.database != database:
        raise InputError(
            f"Replication slot {info.name!r} already exists but is not a pgoutput slot of database "
            f"{database!r} (type {info.slot_type}, plugin {info.plugin}, database {info.database}).",
            fix="choose another name with --sync.slot (slot names are shared by the whole server).")


def drop_slot(conn: psycopg.Connection, slot: str) -> bool:
    info = slot_info(conn, slot)
    if info is None:
        return False
    if info.active:
        raise InputError(
            f"Replication slot {slot!r} is in use by server process {info.active_pid} (a running sync?).",
            fix=f"stop that sync first (SIGTERM / Ctrl-C); to force it: SELECT pg_terminate_backend({info.active_pid}).")
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return True


PUBLICATION_COMMENT = "created by pg2qdrant sync for collection "


def publication_state(conn: psycopg.Connection, publication: str, plan: Plan) -> dict | None:
    row = conn.execute(
        """
        SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.puballtables, p.pubviaroot,
               obj_description(p.oid, 'pg_publication'),
               EXISTS (SELECT 1 FROM pg_publication_tables t
                       WHERE t.pubname = p.pubname AND t.schemaname = %s AND t.tablename = %s),
               EXISTS (SELECT 1 FROM pg_publication_tables t JOIN pg_class c ON c.relname = t.tablename
                       JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = t.schemaname
                       WHERE t.pubname = p.pubname AND c.oid = ANY(%s))
        FROM pg_publication p WHERE p.pubname = %s
        """, (plan.table.schema, plan.table.name, [leaf.oid for leaf in plan.table.leaves], publication)).fetchone()
    if row is None:
        return None
    keys = ("insert", "update", "delete", "truncate", "all_tables", "via_root", "comment", "has_table", "has_leaf")
    return dict(zip(keys, row))


def ensure_publication(conn: psycopg.Connection, publication: str, plan: Plan, collection: str) -> str:
    """Create the publication for the table, or check an existing one covers it.

    Returns ``created``, ``exists``, ``altered`` (ours, switched off publishing via the
    partition root) or ``via_root`` (someone else's publication that publishes via the
    partition root: a TRUNCATE of single partitions cannot reach sync, the caller warns).

    Partitioned tables are published **without** ``publish_via_partition_root``: with it,
    pgoutput drops the Truncate message of a partition truncated on its own (it only
    sends a TRUNCATE of the root), and naming the partitions in the same or another
    publication does not bring it back (measured on PostgreSQL 15 and 18). Without it,
    changes arrive under each partition's own relation, and a Truncate names exactly the
    partitions emptied (``TRUNCATE root`` names every partition, not the root).
    """
    state = publication_state(conn, publication, plan)
    table = plan.table
    if state is None:
        if table.relkind not in ("r", "p"):
            raise InputError(
                f"{table.display} is a {'view' if table.relkind == 'v' else 'materialized view or foreign table'}; "
                "PostgreSQL publishes changes of tables only.",
                fix="sync the underlying table, or use --sync.mode poll --sync.updated-column COLUMN.")
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(publication), table.ident))
                conn.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
                    sql.Identifier(publication), sql.Literal(PUBLICATION_COMMENT + collection)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise InputError(
                f"PostgreSQL refused to create publication {publication!r}: {redaction.redact(exc)}",
                fix=f"have the table owner run: CREATE PUBLICATION {publication} FOR TABLE {table.display}; "
                    "then rerun (sync reuses it).") from None
        except psycopg.errors.DuplicateObject:
            return "exists"  # created concurrently by another sync: fine
        return "created"
    missing = [k for k in ("insert", "update", "delete", "truncate") if not state[k]]
    if not (state["has_table"] or state["has_leaf"] or state["all_tables"]):
        raise InputError(
            f"Publication {publication!r} exists but does not publish {table.display}.",
            fix=f"ALTER PUBLICATION {publication} ADD TABLE {table.display}, or choose another name with "
                "--sync.publication.")
    if missing:
        raise InputError(
            f"Publication {publication!r} does not publish {', '.join(missing)}; those changes would be lost.",
            fix=f"ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate').")
    if state["via_root"] and table.relkind == "p":
        if not (state["comment"] or "").startswith(PUBLICATION_COMMENT):
            return "via_root"
        try:  # created by an earlier pg2qdrant with the option: ours to change
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = false)").format(
                sql.Identifier(publication)))
        except psycopg.errors.InsufficientPrivilege:
            return "via_root"
        return "altered"
    return "exists"


def drop_publication(conn: psycopg.Connection, publication: str) -> str:
    """Drop the publication if pg2qdrant created it: 'dropped', 'absent' or 'kept' (someone else's)."""
    row = conn.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                       (publication,)).fetchone()
    if row is None:
        return "absent"
    if not (row[0] or "").startswith(PUBLICATION_COMMENT):
        return "kept"
    conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
    return "dropped"


@dataclass(frozen=True)
class IdentityProblem:
    relation: str
    identity: str
    columns: tuple[str, ...]


def check_replica_identity(conn: psycopg.Connection, plan: Plan) -> None:
    """Deletes and key changes carry only the replica identity columns: they must include the key.

    Checked before the table joins a publication: once published, a table
    without a usable replica identity makes the application's UPDATE and DELETE
    statements fail.
    """
    oids = [leaf.oid for leaf in plan.table.leaves if leaf.relkind == "r"] or [plan.table.oid]
    rows = conn.execute(
        """
        SELECT format('%%I.%%I', n.nspname, c.relname), c.relreplident,
               coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                         FROM pg_index i JOIN pg_attribute a
                           ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])
                         WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary)
                                                       OR (c.relreplident = 'i' AND i.indisreplident))),
                        '{}')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s)
        """, (oids,)).fetchall()
    key = set(plan.key.columns)
    problems = [IdentityProblem(name, ident, tuple(cols)) for name, ident, cols in rows
                if ident != "f" and not key <= set(cols)]
    if not problems:
        return
    p = problems[0]
    table = plan.table.display
    keys = ", ".join(plan.key.columns)
    what = {"d": "the default replica identity (the primary key)", "i": "a replica identity index",
            "n": "REPLICA IDENTITY NOTHING"}[p.identity]
    if p.identity == "d" and not p.columns:
        situation = (f"{p.relation} has no primary key, so PostgreSQL cannot say which row an UPDATE or "
                     "DELETE changed (and rejects those statements once the table is published)")
    elif p.identity == "n":
        situation = f"{p.relation} has REPLICA IDENTITY NOTHING, so deletes would arrive without any key"
    else:
        situation = (f"{p.relation} uses {what} on ({', '.join(p.columns)}), but point IDs come from "
                     f"({keys}): deletes and key changes would arrive without the key")
    candidates = conn.execute(
        """
        SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
          AND i.indimmediate
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
               WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) = %s
        """, (plan.table.oid, sorted(plan.key.columns))).fetchall()
    using = (f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX {candidates[0][0]}" if candidates else
             f"create a unique index on ({keys}) (columns NOT NULL) and ALTER TABLE {table} REPLICA IDENTITY "
             "USING INDEX <that index>")
    raise InputError(
        f"Table {table} cannot be synced with logical replication as it is: {situation}.",
        fix=f"{using}; or ALTER TABLE {table} REPLICA IDENTITY FULL (simplest, but every UPDATE/DELETE "
            "then logs the whole old row); for partitioned tables do it on each partition. Or use "
            "--sync.mode poll --sync.updated-column COLUMN, which needs no replica identity.")


def wal_settings(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)",
                        (["wal_level", "max_slot_wal_keep_size", "wal_sender_timeout", "max_replication_slots"],)
                        ).fetchall()
    return {name: setting + (unit or "") if unit and setting != "-1" else setting for name, setting, unit in rows}


def current_wal_lsn(conn: psycopg.Connection) -> int:
    """The WAL insert position: past every committed transaction, also one committed with
    synchronous_commit=off whose WAL is not written yet (pg_current_wal_lsn() is the write
    position and can be behind such commits)."""
    return parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])


def key_ids_query(plan: Plan, where: sql.Composable | None = None,
                  relation: sql.Composable | None = None) -> sql.Composed:
    """COPY of the key reads only (for ID sets), of the table or of ``relation`` (e.g. ``ONLY leaf``)."""
    columns = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
    where = and_where(plan, where)  # rows outside --pg.where have no point
    return sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT BINARY)").format(
        columns, plan.table.ident if relation is None else relation,
        (sql.SQL(" WHERE ") + where) if where is not None else sql.SQL(""))


def key_match(plan: Plan, keys: list[tuple]) -> tuple[sql.Composable, list]:
    """A WHERE clause matching rows by key values (as the key reads decode them) and its params."""
    types = {"int": "int8", "uuid": "uuid", "text": "text"}
    exprs = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
    arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(types[k])) for k in plan.key.kinds)
    columns = [[k[n] for k in keys] for n in range(len(plan.key.columns))]
    return sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(exprs, arrays), columns


def fetch_rows_by_key(conn: psycopg.Connection, plan: Plan, oids: list[int], keys: list[tuple],
                      chunk: int = 500) -> list[tuple]:
    """Current rows with these key values, read with the plan's own SELECT and loaders (as the copy)."""
    out: list[tuple] = []
    for start in range(0, len(keys), chunk):
        where, params = key_match(plan, keys[start:start + chunk])
        query = reader.copy_query(conn, plan, where, params)
        for rows in reader.copy_rows(conn, query, oids, chunk):
            out.extend(rows)
    return out


def iter_key_rows(conn: psycopg.Connection, plan: Plan, oids: list[int],
                  relation: sql.Composable | None = None) -> Iterable[tuple]:
    """Every row's key values (in plan.key order), decoded like the copy decodes them; of the
    table, or of ``relation`` only."""
    with conn.cursor() as cur:
        with cur.copy(key_ids_query(plan, relation=relation)) as copy:
            copy.set_types([oids[i] for i in plan.key.read_indexes])
            yield from copy.rows()


__all__ = ["UNCHANGED", "RowDecoder", "ReplicationConnection", "ConnectionLost", "SlotBusy", "decode_message",
           "parse_lsn", "format_lsn"]
