"""What PostgreSQL knows about the source table: columns, types, keys, indexes, partitions.

Only catalog reads happen here (no table data), so introspection is cheap and
works for a role that has nothing but SELECT on the table. Everything is
returned as the plain dataclasses of :mod:`pg2qdrant.core.table` for :mod:`pg2qdrant.core.plan`
to decide on.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.table import BIT_OID, PGVECTOR_TYPES, Column, Leaf, PgType, ServerInfo, TableInfo, VectorIndex  # noqa: F401 - the table model, re-exported for catalog's callers


def server_info(conn: psycopg.Connection) -> ServerInfo:
    row = conn.execute(
        """
        SELECT current_setting('server_version_num')::int, current_setting('server_version'),
               current_database(), pg_encoding_to_char(d.encoding),
               (SELECT extversion FROM pg_extension WHERE extname = 'vector')
        FROM pg_database d WHERE d.datname = current_database()
        """
    ).fetchone()
    assert row is not None
    try:  # needs pg_read_all_settings or superuser on some servers: optional
        sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    except psycopg.Error:
        conn.rollback() if not conn.autocommit else None
        sysid = None
    return ServerInfo(row[0], row[1], row[2], row[3], row[4], sysid)


# ---------------------------------------------------------------------------------------
# Table name resolution
# ---------------------------------------------------------------------------------------

def split_qualified_name(text: str) -> list[tuple[str, bool]]:
    """Split ``schema.table`` honouring double quotes: [(part, was_quoted), ...].

    Raises InputError on unbalanced quotes or empty parts.
    """
    parts: list[tuple[str, bool]] = []
    buf: list[str] = []
    quoted = False
    in_quotes = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quotes:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    buf.append('"')
                    i += 1
                else:
                    in_quotes = False
            else:
                buf.append(ch)
        elif ch == '"':
            in_quotes = True
            quoted = True
        elif ch == ".":
            parts.append(("".join(buf), quoted))
            buf, quoted = [], False
        else:
            buf.append(ch)
        i += 1
    if in_quotes:
        raise InputError(f"--pg.table {text!r} has an unbalanced double quote.",
                         fix='quote each part separately, e.g. \'"My Schema"."My Table"\'.')
    parts.append(("".join(buf), quoted))
    if any(not p.strip() and not q for p, q in parts) or len(parts) > 3:
        raise InputError(f"--pg.table {text!r} is not a table name.",
                         fix="give 'table', 'schema.table' or '\"Schema\".\"Table\"'.")
    return parts


_FIND_RELATION = """
SELECT c.oid, n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(rel)s
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (%(schema)s::text IS NULL AND n.nspname = ANY (current_schemas(false))
       OR n.nspname = %(schema)s)
ORDER BY array_position(current_schemas(false), n.nspname::text) NULLS LAST
LIMIT 1
"""


def _candidates(text: str) -> list[tuple[str | None, str]]:
    """Interpretations of --pg.table, most literal first.

    Unquoted parts are tried verbatim (the reference tool quotes the whole name,
    so 'MyTable' must keep its case) and then folded to lower case as SQL would.
    A name with a dot that is not a qualified name is also tried as one identifier.
    """
    try:
        parts = split_qualified_name(text)
    except InputError:
        # Not a valid qualified name: the reference tool quotes the whole string as one
        # identifier, so look for a table with exactly this name.
        return [(None, text)]
    out: list[tuple[str | None, str]] = []
    if len(parts) >= 2:
        (schema, sq), (rel, rq) = parts[-2], parts[-1]
        out.append((schema, rel))
        out.append((schema if sq else schema.lower(), rel if rq else rel.lower()))
    else:
        rel, rq = parts[0]
        out.append((None, rel))
        if not rq:
            out.append((None, rel.lower()))
    if '"' not in text and "." in text:
        out.append((None, text))
    seen, unique = set(), []
    for cand in out:
        if cand not in seen:
            seen.add(cand)
            unique.append(cand)
    return unique


def vector_tables(conn: psycopg.Connection) -> list[str]:
    """schema.table of every table that has a pgvector column (for 'did you mean' hints)."""
    rows = conn.execute(
        """
        SELECT DISTINCT format('%%I.%%I', n.nspname, c.relname)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attnum > 0 AND NOT a.attisdropped AND t.typname = ANY(%s)
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT c.relispartition
        ORDER BY 1 LIMIT 20
        """,
        (list(PGVECTOR_TYPES),),
    ).fetchall()
    return [r[0] for r in rows]


def schema_vector_tables(conn: psycopg.Connection, schemas: list[str]) -> list[tuple[str, str]]:
    """(schema, table) of every table of the first of ``schemas`` that has one, with a pgvector
    column (a domain over one too), for ``--pg.table 'schema.*'``. Partitions and inheritance
    children of such a table are left out: migrating their parent reads them."""
    for schema in schemas:
        rows = conn.execute(
            """
            WITH vec AS (
                SELECT DISTINCT a.attrelid AS oid
                FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
                WHERE a.attnum > 0 AND NOT a.attisdropped AND coalesce(b.typname, t.typname) = ANY(%(types)s)
            )
            SELECT n.nspname, c.relname
            FROM vec JOIN pg_class c ON c.oid = vec.oid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'f')
              AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN vec p ON p.oid = i.inhparent
                              WHERE i.inhrelid = c.oid)
            ORDER BY c.relname
            """,
            {"types": list(PGVECTOR_TYPES), "schema": schema},
        ).fetchall()
        if rows:
            return [(r[0], r[1]) for r in rows]
    return []


def resolve_table(conn: psycopg.Connection, text: str) -> tuple[int, str, str, str]:
    """Find --pg.table: (oid, schema, name, relkind) or an InputError with suggestions."""
    if not text or not text.strip():
        raise InputError("--pg.table is empty.", fix="name the table to migrate, e.g. --pg.table public.items.")
    for schema, rel in _candidates(text):
        row = conn.execute(_FIND_RELATION, {"rel": rel, "schema": schema}).fetchone()
        if row:
            return row[0], row[1], row[2], row[3]
    suggestions = vector_tables(conn)
    db = conn.info.dbname
    hint = (f"tables with vector columns in database {db!r}: {', '.join(suggestions)}"
            if suggestions else f"database {db!r} has no table with a pgvector column that this role can see")
    raise InputError(
        f"Table {text!r} was not found in database {db!r} (search_path schemas were tried for an "
        f"unqualified name).",
        fix=f"check the name and schema; {hint}.",
    )


# ---------------------------------------------------------------------------------------
# Columns and types
# ---------------------------------------------------------------------------------------

_TYPES = """
WITH RECURSIVE dom(oid, base, typmod) AS (
    SELECT t.oid, t.oid, -1 FROM pg_type t WHERE t.oid = ANY(%(oids)s)
  UNION ALL
    SELECT dom.oid, t.typbasetype, CASE WHEN dom.typmod = -1 THEN t.typtypmod ELSE dom.typmod END
    FROM dom JOIN pg_type t ON t.oid = dom.base WHERE t.typtype = 'd'
)
SELECT dom.oid, dom.base, dom.typmod, b.typname, bn.nspname, b.typtype, b.typcategory, b.typelem,
       b.typarray,
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_type'::regclass AND d.objid = b.oid AND d.deptype = 'e' LIMIT 1)
FROM dom JOIN pg_type b ON b.oid = dom.base JOIN pg_namespace bn ON bn.oid = b.typnamespace
WHERE b.typtype <> 'd'
"""


@dataclass(frozen=True)
class _TypeRow:
    """One row of _TYPES: a type OID and what it resolves to once domains are peeled off."""

    base: int
    typmod: int
    name: str
    schema: str
    typtype: str
    category: str
    elem: int
    array: int  # typarray of the base type (0: it has none)
    extension: str | None


def _load_types(conn: psycopg.Connection, oids: set[int]) -> dict[int, tuple[PgType, int]]:
    """Resolve type OIDs to base types, at any depth -> (type, domain typmod).

    A domain becomes its base type; a domain over an array, that array type; an
    array of a domain, the array of the domain's base type (int4[] for posint[]),
    so that every column is read as a type psycopg knows. Only an array of a
    domain over an array has no such array type (PostgreSQL has no arrays of
    arrays): it stays an array whose element is an array type.
    """
    raw: dict[int, _TypeRow] = {}
    pending = set(oids)
    while pending:
        for oid, *rest in conn.execute(_TYPES, {"oids": list(pending)}).fetchall():
            raw[oid] = _TypeRow(*rest)
        pending = set()
        for row in list(raw.values()):
            if row.category != "A" or not row.elem:
                continue
            if row.elem not in raw:
                pending.add(row.elem)
            elif _is_domain(raw, row.elem) and raw[row.elem].array:
                pending.add(raw[row.elem].array)
        pending -= set(raw)

    def build(oid: int) -> PgType:
        row = raw[oid]
        elem_type = None
        if row.category == "A" and row.elem in raw:
            elem = raw[row.elem]
            if _is_domain(raw, row.elem) and elem.array in raw:
                return build(elem.array)  # an array of a domain: the array of its base type
            elem_type = build(row.elem)
        return PgType(row.base, row.name, row.schema, row.typtype, row.category, row.extension, elem_type)

    return {oid: (build(oid), raw[oid].typmod) for oid in oids if oid in raw}


def _is_domain(raw: dict[int, _TypeRow], oid: int) -> bool:
    return raw[oid].base != oid


def _columns(conn: psycopg.Connection, oid: int) -> tuple[Column, ...]:
    rows = conn.execute(
        """
        SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.atttypid,
               a.atttypmod, a.attnotnull
        FROM pg_attribute a
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (oid,),
    ).fetchall()
    types = _load_types(conn, {r[3] for r in rows})
    cols = []
    for name, attnum, declared, typoid, typmod, notnull in rows:
        pgtype, domain_typmod = types[typoid]
        cols.append(Column(name, attnum, declared, typoid, pgtype, typmod if typmod != -1 else domain_typmod, notnull))
    return tuple(cols)


def _keys(conn: psycopg.Connection, oid: int) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    rows = conn.execute(
        """
        SELECT i.indisprimary,
               array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     ORDER BY k.ord),
               bool_and(a2.attnotnull) FILTER (WHERE a2.attnum IS NOT NULL),
               0 = ALL(i.indkey::int2[]) OR i.indexprs IS NOT NULL
        FROM pg_index i
        LEFT JOIN pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = ANY(i.indkey::int2[])
        WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indisvalid
        GROUP BY i.indexrelid, i.indisprimary, i.indkey, i.indrelid, i.indexprs
        ORDER BY i.indisprimary DESC, array_length(i.indkey::int2[], 1), i.indexrelid
        """,
        (oid,),
    ).fetchall()
    primary: tuple[str, ...] = ()
    uniques: list[tuple[str, ...]] = []
    for is_primary, cols, all_not_null, has_expr in rows:
        if has_expr:
            continue
        if is_primary and not primary:
            primary = tuple(cols)
        if all_not_null:
            uniques.append(tuple(cols))
    return primary, tuple(uniques)


def _vector_indexes(conn: psycopg.Connection, oid: int) -> tuple[VectorIndex, ...]:
    """HNSW/IVFFlat indexes with the column they cover (through expressions too: the expression,
    e.g. ``binary_quantize(embedding)::bit(3)``, is kept), their operator class and their
    reloptions (``m``, ``ef_construction``, ``lists``: only those given in ``WITH (...)``)."""
    rows = conn.execute(
        """
        SELECT ic.relname, am.amname, opc.opcname,
               coalesce(a.attname,
                        (SELECT a2.attname FROM pg_depend d
                         JOIN pg_attribute a2 ON a2.attrelid = d.refobjid AND a2.attnum = d.refobjsubid
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                           AND d.refobjid = i.indrelid AND d.refobjsubid > 0 LIMIT 1)),
               CASE WHEN i.indkey[0] = 0 THEN pg_get_indexdef(i.indexrelid, 1, true) END,
               coalesce(ic.reloptions, '{}')
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_opclass opc ON opc.oid = i.indclass[0]
        LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] AND i.indkey[0] > 0
        WHERE i.indrelid = %s AND am.amname IN ('hnsw', 'ivfflat')
        ORDER BY (am.amname = 'hnsw') DESC, ic.relname
        """,
        (oid,),
    ).fetchall()
    return tuple(
        VectorIndex(name, col, method, opclass, expression,
                    tuple(tuple(o.split("=", 1)) for o in reloptions if "=" in o))
        for name, method, opclass, col, expression, reloptions in rows if col)


def _btree_columns(conn: psycopg.Connection, oid: int) -> tuple[str, ...]:
    rows = conn.execute(
        """
        SELECT DISTINCT a.attname
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = %s AND am.amname = 'btree' AND i.indkey[0] > 0
        ORDER BY 1
        """,
        (oid,),
    ).fetchall()
    return tuple(r[0] for r in rows)


def leaves(conn: psycopg.Connection, oid: int, relkind: str) -> tuple[Leaf, ...]:
    """Every relation holding rows: partitions (all levels) and inheritance children (also read
    again by sync when a TRUNCATE names some of them: partitions come and go)."""
    rows = conn.execute(
        """
        WITH RECURSIVE tree(relid) AS (
            SELECT %(oid)s::oid
          UNION
            SELECT inh.inhrelid FROM pg_inherits inh JOIN tree ON inh.inhparent = tree.relid
        )
        SELECT c.oid, n.nspname, c.relname, c.relkind,
               CASE WHEN c.relkind IN ('r', 'm') THEN
                    pg_relation_size(c.oid) / current_setting('block_size')::int ELSE 0 END,
               c.reltuples::bigint
        FROM tree JOIN pg_class c ON c.oid = tree.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm', 'f', 'v')
        ORDER BY c.oid = %(oid)s DESC, n.nspname, c.relname
        """,
        {"oid": oid},
    ).fetchall()
    return tuple(Leaf(*r) for r in rows)


def shape_fingerprint(conn: psycopg.Connection, oid: int) -> tuple[tuple, tuple[int, ...]]:
    """(columns as (name, type OID, declared type), leaf OIDs sorted): what sync compares with its
    plan every few seconds, as pgoutput carries no DDL (columns added, dropped, renamed or
    retyped; partitions attached, detached or dropped). Two catalog reads, no table data."""
    columns = conn.execute(
        """
        SELECT a.attname, a.atttypid::int, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (oid,),
    ).fetchall()
    leaf_oids = conn.execute(
        """
        WITH RECURSIVE tree(relid) AS (
            SELECT %(oid)s::oid
          UNION
            SELECT inh.inhrelid FROM pg_inherits inh JOIN tree ON inh.inhparent = tree.relid
        )
        SELECT c.oid::int FROM tree JOIN pg_class c ON c.oid = tree.relid
        WHERE c.relkind IN ('r', 'm', 'f', 'v') ORDER BY 1
        """,
        {"oid": oid},
    ).fetchall()
    return tuple(tuple(r) for r in columns), tuple(r[0] for r in leaf_oids)


def describe_table(conn: psycopg.Connection, text: str) -> TableInfo:
    """Resolve ``--pg.table`` and read everything the plan needs about it."""
    oid, schema, name, relkind = resolve_table(conn, text)
    columns = _columns(conn, oid)
    primary, uniques = _keys(conn, oid)
    return TableInfo(
        oid=oid, schema=schema, name=name, relkind=relkind, columns=columns,
        primary_key=primary, unique_keys=uniques,
        vector_indexes=_vector_indexes(conn, oid),
        btree_columns=_btree_columns(conn, oid),
        leaves=leaves(conn, oid, relkind),
    )


def first_vector_dimension(conn: psycopg.Connection, table: TableInfo, column: str) -> int | None:
    """Dimension of the first non-NULL value of a vector column declared without one."""
    row = conn.execute(
        sql.SQL("SELECT vector_dims({col}) FROM {tbl} WHERE {col} IS NOT NULL LIMIT 1").format(
            col=sql.Identifier(column), tbl=ident(table))
    ).fetchone()
    return row[0] if row else None


def vector_dimensions(conn: psycopg.Connection, table: TableInfo, column: str, type_name: str) -> list[int]:
    """Distinct dimensions present in a column (a full read of the column: used when affordable)."""
    fn = "vector_dims" if type_name != "bit" else "length"
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT {fn}({col}) FROM {tbl} WHERE {col} IS NOT NULL ORDER BY 1 LIMIT 10").format(
            fn=sql.SQL(fn), col=sql.Identifier(column), tbl=ident(table))
    ).fetchall()
    return [r[0] for r in rows]


def schema_relations(conn: psycopg.Connection, schema: str) -> list[tuple]:
    """Every table, view and foreign table of ``schema``: (name, quoted schema.name, relkind, is a
    partition, has a pgvector column, its parent quoted or None), by name."""
    return conn.execute(
        """
        SELECT c.relname, format('%%I.%%I', n.nspname, c.relname), c.relkind, c.relispartition,
               EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                       LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                         AND coalesce(b.typname, t.typname) = ANY(%(types)s)),
               (SELECT format('%%I.%%I', pn.nspname, p.relname) FROM pg_inherits i
                JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
                WHERE i.inhrelid = c.oid LIMIT 1)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
        ORDER BY c.relname
        """, {"types": list(PGVECTOR_TYPES), "schema": schema}).fetchall()


def ident(relation) -> sql.Identifier:
    """A relation's schema-qualified name, quoted for SQL (a TableInfo or Leaf)."""
    return sql.Identifier(relation.schema, relation.name)
