"""Slots, publications, replica identity and WAL settings, on an ordinary SQL connection.

Also the names sync derives for its slot and publication. The replication
connection itself (slot creation, the stream) is :mod:`.replication`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError
from pg2qdrant.core.plan import Plan
from pg2qdrant.source.catalog import ident
from pg2qdrant.source.lsn import parse_lsn

_IDENT_RE = re.compile(r"^[a-z0-9_]{1,63}$")


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
            fix=f"stop that sync first (SIGTERM / Ctrl-C); to force it: "
                f"SELECT pg_terminate_backend({info.active_pid}).")
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return True


PUBLICATION_COMMENT = "created by pg2qdrant sync for collection "


def publication_state(conn: psycopg.Connection, publication: str, plan: Plan) -> dict | None:
    row = conn.execute(
        """
        SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.puballtables, p.pubviaroot,
               obj_description(p.oid, 'pg_publication'),
               EXISTS (SELECT 1 FROM pg_publication_tables t
                       WHERE t.pubname = p.pubname AND t.schemaname = %s AND t.tablename = %s)
               -- a partitioned table is listed by its partitions there: with none left, by itself here
               OR EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = %s),
               EXISTS (SELECT 1 FROM pg_publication_tables t JOIN pg_class c ON c.relname = t.tablename
                       JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = t.schemaname
                       WHERE t.pubname = p.pubname AND c.oid = ANY(%s))
        FROM pg_publication p WHERE p.pubname = %s
        """, (plan.table.schema, plan.table.name, plan.table.oid,
              [leaf.oid for leaf in plan.table.change_tables or plan.table.leaves], publication)).fetchone()
    if row is None:
        return None
    keys = ("insert", "update", "delete", "truncate", "all_tables", "via_root", "comment", "has_table", "has_leaf")
    return dict(zip(keys, row))


# complexity: creates, reuses or switches over a publication: ours or the user's, via the partition root or not, with
# the table or missing it.
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
    published = sql.SQL(", ").join(ident(t) for t in table.change_tables) if table.change_tables else ident(table)
    if state is None:
        if table.relkind not in ("r", "p") and not table.change_tables:
            raise InputError(
                f"{table.display} is a {'view' if table.relkind == 'v' else 'materialized view or foreign table'}; "
                "PostgreSQL publishes changes of tables only.",
                fix="sync the underlying table, or use --sync.mode poll --sync.updated-column COLUMN.")
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(publication), published))
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


def published_tables(conn: psycopg.Connection, publication: str) -> dict[int, str] | None:
    """{oid: name} of the tables named in the publication (as added, not their partitions); None when
    it does not exist."""
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() is None:
        return None
    rows = conn.execute("SELECT r.prrelid::int8, r.prrelid::regclass::text FROM pg_publication_rel r "
                        "JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = %s", (publication,)).fetchall()
    return dict(rows)


def publication_is_ours(conn: psycopg.Connection, publication: str) -> bool:
    row = conn.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                       (publication,)).fetchone()
    return row is not None and (row[0] or "").startswith(PUBLICATION_COMMENT)


def alter_publication(conn: psycopg.Connection, publication: str, action: str, table: sql.Composable | str) -> None:
    """ALTER PUBLICATION ... ADD TABLE / DROP TABLE ``table`` (``action``: 'ADD' or 'DROP'; a str is a name
    as published_tables gives it: regclass text, quoted as needed)."""
    assert action in ("ADD", "DROP")
    table = sql.SQL(table) if isinstance(table, str) else table
    try:
        conn.execute(sql.SQL("ALTER PUBLICATION {} " + action + " TABLE {}").format(sql.Identifier(publication),
                                                                                   table))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise InputError(f"PostgreSQL refused to change publication {publication!r}: {redaction.redact(exc)}",
                         fix=f"have the owner run: ALTER PUBLICATION {publication} {action} TABLE "
                             f"{table.as_string(conn)}; then rerun.") from None


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
    oids = ([leaf.oid for leaf in plan.table.change_tables]
            or [leaf.oid for leaf in plan.table.leaves if leaf.relkind == "r"] or [plan.table.oid])
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
