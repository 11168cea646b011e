"""Framework layouts, and the generic options they are built from.

Most pgvector tables were written by a framework (LangChain, LlamaIndex, Supabase vecs,
pgai), and their owners want the framework's own Qdrant store to open the copy with its
defaults (vecs and pgai have none: their copies are shaped for qdrant-client, see
:data:`READ_BY`). A layout is one :class:`Layout` entry in :data:`LAYOUTS`: the table shape it
recognises, and how that shape maps onto the generic options

- ``--pg.where SQL``: only rows matching the condition (:func:`check_where`, :func:`validate_where`);
- ``--qdrant.vector-name column=name`` (``""``: Qdrant's unnamed default vector);
- ``--qdrant.payload-key column=key``: rename; ``a.b`` nests, ``*`` spreads a JSON object's keys
  at the top level, an empty key leaves the column out of the payload;
- ``--qdrant.tenant-column column``: a keyword payload index with ``is_tenant=true``;

plus, where a framework needs more than renaming, a named payload shaper
(:data:`SHAPERS`, applied by :func:`shape_payloads` after the generic keys). A new
framework is one new entry; nothing else in the code branches on frameworks.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pg2qdrant.errors import DataError, InputError
from pg2qdrant.plan import TENANT_INDEX, PayloadIndexSpec, PayloadKind
from pg2qdrant.source import frameworks
from pg2qdrant.source import where as source_where
from pg2qdrant.source.connect import Connection
from pg2qdrant.source.model import TableInfo
from pg2qdrant.source.where import and_where, where_sql  # noqa: F401  (the filter in SQL, re-exported)

LAYOUT_NAMES = ("auto", "plain", "langchain", "langchain-v2", "llamaindex", "vecs", "pgai")
SPREAD = "*"  # payload key: spread a JSON object's keys at the top level of the payload

# --------------------------------------------------------------------------------------
# Generic options
# --------------------------------------------------------------------------------------


def parse_pairs(values: Iterable[str] | None, flag: str, *, example: str) -> dict[str, str]:
    """``column=name`` items (repeatable or comma-separated); the name may be empty."""
    out: dict[str, str] = {}
    for raw in values or ():
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise InputError(f"{flag} {item!r} is not in the form column=name.", fix=f"write e.g. {flag} {example}.")
            column, name = item.split("=", 1)
            out[column.strip()] = name.strip()
    return out


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


def validate_where(conn: Connection, table: TableInfo, expr: str) -> str:
    """Check the filter's shape here, then in PostgreSQL (a boolean condition over the table's columns)."""
    return source_where.validate_where(conn, table, check_where(expr))


# complexity: applies each generic option (where, vector names, payload keys, tenant, shape, indexes) in the one order
# they depend on each other.
def apply_options(plan, *, where: str | None = None, vector_names: dict[str, str] | None = None,
                  payload_keys: dict[str, str] | None = None, tenant_column: str | None = None,
                  payload_shape: str | None = None, extra_indexes: Iterable[tuple[str, str]] = (),
                  notes: Iterable[str] = ()):
    """The plan with the generic options (and a layout's extras) applied; raises InputError.

    ``where`` must already be validated (validate_where) on the same table.
    """
    vector_names = dict(vector_names or {})
    payload_keys = dict(payload_keys or {})
    payload_by_column = {p.column: p for p in plan.payload}
    for flag, names, known in (("--qdrant.vector-name", vector_names, {v.column for v in plan.vectors}),
                               ("--qdrant.payload-key", payload_keys, payload_by_column)):
        unknown = [c for c in names if c not in known]
        if unknown:
            raise InputError(f"{flag} names {', '.join(map(repr, unknown))}, which is not a migrated "
                             f"{'vector' if 'vector' in flag else 'payload'} column.",
                             fix=f"such columns are: {', '.join(known) or 'none'}.")
    vectors = _named_vectors(plan.vectors, vector_names)
    _check_payload_keys(payload_keys, payload_by_column)
    indexes = list(plan.payload_indexes)
    if tenant_column:
        indexes = [i for i in indexes if i.field != tenant_column]
        indexes.insert(0, _tenant_index(tenant_column, payload_keys, payload_by_column))
    indexes = _indexes_by_key(indexes, payload_keys, payload_by_column)
    for field_name, typ in extra_indexes:
        if all(i.field != field_name for i in indexes):
            indexes.append(PayloadIndexSpec(field_name, typ, "framework layout"))
    keys = tuple((c, k) for c, k in payload_keys.items() if k != c)
    return dataclasses.replace(plan, vectors=vectors, where=where or None, payload_keys=keys,
                               payload_shape=payload_shape, payload_indexes=tuple(indexes),
                               warnings=plan.warnings + tuple(notes))


def _named_vectors(vectors, vector_names: dict[str, str]) -> tuple:
    """The vectors renamed by --qdrant.vector-name (distinct names; "" only for a dense one)."""
    renamed = tuple(dataclasses.replace(v, name=vector_names.get(v.column, v.name)) for v in vectors)
    names = [v.name for v in renamed]
    if len(set(names)) != len(names):
        raise InputError(f"--qdrant.vector-name gives two vectors the same name ({', '.join(map(repr, names))}).",
                         fix="give each vector column its own name (only one may be the unnamed vector \"\").")
    if any(v.is_sparse and v.name == "" for v in renamed):
        raise InputError("--qdrant.vector-name: a sparse vector cannot be Qdrant's unnamed vector.",
                         fix="give the sparsevec column a name.")
    return renamed


def _check_payload_keys(payload_keys: dict[str, str], payload_by_column: dict) -> None:
    for column, key in payload_keys.items():
        if key not in ("", SPREAD) and any(not part for part in key.split(".")):
            raise InputError(f"--qdrant.payload-key {column}={key!r}: empty part in the dotted path.",
                             fix=f"write e.g. --qdrant.payload-key {column}=metadata.{column}.")
        if key == SPREAD and not payload_by_column[column].is_scalar(PayloadKind.JSON):
            raise InputError(f"--qdrant.payload-key {column}=*: only a json/jsonb column can be spread.",
                             fix=f"{column} is {payload_by_column[column].declared}; give it a key instead.")


def _tenant_index(tenant_column: str, payload_keys: dict[str, str], payload_by_column: dict) -> PayloadIndexSpec:
    """--qdrant.tenant-column: a keyword index marked is_tenant on the column's payload key."""
    if tenant_column not in payload_by_column:
        raise InputError(f"--qdrant.tenant-column {tenant_column!r} is not a migrated payload column.",
                         fix=f"payload columns are: {', '.join(payload_by_column) or 'none'}.")
    key = payload_keys.get(tenant_column, tenant_column)
    if not payload_by_column[tenant_column].is_scalar(PayloadKind.TEXT, PayloadKind.UUID):
        raise InputError(f"--qdrant.tenant-column {tenant_column} is {payload_by_column[tenant_column].declared}; "
                         "the tenant index is a keyword index.",
                         fix="choose a text or uuid column that names the tenant.")
    if key in ("", SPREAD):
        raise InputError(f"--qdrant.tenant-column {tenant_column}: the column must be a payload field.",
                         fix=f"drop --qdrant.payload-key {tenant_column}={key}.")
    return PayloadIndexSpec(key, TENANT_INDEX, "--qdrant.tenant-column")


def _indexes_by_key(indexes: list[PayloadIndexSpec], payload_keys: dict[str, str],
                    payload_by_column: dict) -> list[PayloadIndexSpec]:
    """Indexes mirrored from column names follow the columns' payload keys (none without a field)."""
    out = []
    for spec in indexes:
        if spec.source != "--qdrant.tenant-column" and spec.field in payload_by_column:
            key = payload_keys.get(spec.field, spec.field)
            if key in ("", SPREAD):
                continue
            spec = dataclasses.replace(spec, field=key)
        out.append(spec)
    return out


# --------------------------------------------------------------------------------------
# Payload shaping (applied by mapping.RowMapper to every batch, so migrate, verify and sync agree)
# --------------------------------------------------------------------------------------

def _llamaindex_text(payload: dict, row: dict) -> dict:
    """LlamaIndex keeps a node's text in the ``text`` column and an empty text inside
    ``_node_content``; its Qdrant store reads the text from ``_node_content``."""
    text = payload.pop("text", None)
    content = payload.get("_node_content")
    if isinstance(content, str):
        node = json.loads(content)
        node["text"] = text if text is not None else ""
        payload["_node_content"] = json.dumps(node, ensure_ascii=False)
    return payload


def _vecs_metadata(payload: dict, row: dict) -> dict:
    """vecs spreads a record's metadata beside its ``id``: a metadata key that a column's field took
    (``id``, the record's id) is kept unaltered under ``metadata.<key>``, its path in the row, not lost."""
    metadata = row.get("metadata") or {}
    lost = {k: v for k, v in metadata.items() if k != "metadata" and k in row and payload.get(k) is row[k]}
    if lost:
        if "metadata" in payload:
            raise DataError(f"A vecs record's metadata has keys named like its own fields ({', '.join(lost)}) and "
                            "a 'metadata' key, so their values have no free place in the payload.",
                            fix="give the record id another payload key, e.g. --qdrant.payload-key id=record_id.")
        payload["metadata"] = lost
    return payload


# A shaper gets the payload the keys made and the row's payload columns (by column name).
SHAPERS: dict[str, Callable[[dict, dict], dict]] = {"llamaindex": _llamaindex_text, "vecs": _vecs_metadata}


# complexity: the per-row payload shaping (renames, nesting, spreading, a layout's shaper) runs once per row: kept in
# one loop for speed.
def shape_payloads(plan, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the plan's payload keys (spread, then renames, then dotted paths) and shaper."""
    keys = dict(plan.payload_keys)
    spread = [c for c, k in keys.items() if k == SPREAD]
    nested = [(c, k.split(".")) for c, k in keys.items() if k not in ("", SPREAD) and "." in k]
    renames = [(c, k) for c, k in keys.items() if k not in ("", SPREAD) and "." not in k]
    dropped = [c for c, k in keys.items() if k == ""]
    shaper = SHAPERS[plan.payload_shape] if plan.payload_shape else None
    out = []
    for flat in payloads:
        payload: dict[str, Any] = {}
        for column in spread:
            value = flat.get(column)
            if value is not None and not isinstance(value, dict):
                raise DataError(f"--qdrant.payload-key {column}=*: a row's {column} is {type(value).__name__}, "
                                "not a JSON object, so its keys cannot be spread into the payload.",
                                fix=f"give {column} a key instead (--qdrant.payload-key {column}=NAME).")
            payload.update(value or {})
        moved = set(spread) | set(dropped) | {c for c, _ in nested} | {c for c, _ in renames}
        payload.update((c, v) for c, v in flat.items() if c not in moved)
        payload.update((k, flat.get(c)) for c, k in renames)
        for column, path in nested:
            node = payload
            for part in path[:-1]:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif not isinstance(child, dict):
                    raise DataError(f"--qdrant.payload-key {column}={'.'.join(path)}: {part!r} holds a "
                                    f"{type(child).__name__}, not an object, in a row.",
                                    fix="choose a path whose parents are JSON objects (or absent).")
                node = child
            node[path[-1]] = flat.get(column)
        out.append(shaper(payload, flat) if shaper else payload)
    return out


# --------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------

def _type(table: TableInfo, column: str) -> str | None:
    col = table.column(column)
    return None if col is None else col.type.name


def _differences(table: TableInfo, wanted: dict[str, tuple[str, ...]], *, exact: bool = True,
                 optional: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """How the table differs from these columns with one of these type names (and, when exact, no others)."""
    optional = optional or {}
    names = [c.name for c in table.columns]
    out = [f"no column {c} ({' or '.join(types)})" for c, types in wanted.items() if c not in names]
    out += [f"column {c} is {table.column(c).declared}, not {' or '.join(types)}"
            for c, types in {**wanted, **optional}.items() if c in names and _type(table, c) not in types]
    others = [n for n in names if n not in wanted and n not in optional]
    if exact and others:
        out.append(f"other columns: {', '.join(others)}")
    return out


def _shape(table: TableInfo, wanted: dict[str, tuple[str, ...]], *, exact: bool = True,
           optional: dict[str, tuple[str, ...]] | None = None) -> bool:
    """The table has these columns with one of these type names (and, when exact, no others)."""
    return not _differences(table, wanted, exact=exact, optional=optional)


VECTOR = ("vector", "halfvec")
TEXT = ("varchar", "text")
JSON = ("json", "jsonb")


@dataclass(frozen=True)
class Target:
    """One collection a layout produces from the table, and the options that produce it."""

    collection: str
    where: str | None = None


@dataclass(frozen=True)
class Layout:
    """One framework's table shape and its mapping onto the generic options (see module docstring)."""

    name: str
    framework: str
    detect: Callable[[Connection, TableInfo], bool]
    columns: Callable[[TableInfo], list[str]]
    key_column: str | Callable[[TableInfo], str]  # a function where the framework lets the user name it
    vector_names: Callable[[TableInfo], dict[str, str]]
    payload_keys: Callable[[TableInfo], dict[str, str]]
    targets: Callable[[Connection, TableInfo, str | None], list[Target]]
    payload_indexes: tuple[tuple[str, str], ...] = ()
    payload_shape: str | None = None
    notes: Callable[[TableInfo], list[str]] = lambda table: []
    payload_text: str = ""  # the payload shape, for inspect
    auto_payload_index: bool = True
    change_table: Callable[[TableInfo], str] | None = None  # a view's: the table whose changes CDC follows
    # What differs from the shape ("" when it fits), for a forced --layout; without it the
    # refusal names no difference. A forced layout runs on a table this accepts.
    explain: Callable[[Connection, TableInfo], str] | None = None


def _one_target(name: Callable[[TableInfo], str]):
    def targets(conn, table: TableInfo, chosen: str | None) -> list[Target]:
        return [Target(chosen or name(table))]
    return targets


def _langchain_targets(conn: Connection, table: TableInfo, chosen: str | None) -> list[Target]:
    """One Qdrant collection per LangChain collection (langchain_pg_collection, same schema)."""
    rows = frameworks.langchain_collections(conn, table.schema)
    known = ", ".join(name for name, _ in rows) or "none"
    if chosen:
        rows = [r for r in rows if r[0] == chosen]
        if not rows:
            raise InputError(f"LangChain collection {chosen!r} is not in {table.schema}.langchain_pg_collection "
                             f"(collections: {known}).",
                             fix="name one of them with --qdrant.collection, or leave the flag out to migrate all.")
    return [Target(name, where) for name, where in rows]


_LANGCHAIN = {"id": TEXT, "collection_id": ("uuid",), "embedding": VECTOR, "document": TEXT, "cmetadata": JSON}


def _langchain_differences(conn, table: TableInfo) -> str:
    diffs = [] if table.name == "langchain_pg_embedding" else [f"it is named {table.name}, not langchain_pg_embedding"]
    diffs += _differences(table, _LANGCHAIN)
    if not frameworks.has_relation(conn, table.schema, "langchain_pg_collection"):
        diffs.append(f"there is no {table.schema}.langchain_pg_collection")
    return "; ".join(diffs)


def _is_langchain(conn, table: TableInfo) -> bool:
    return (table.name == "langchain_pg_embedding" and _shape(table, _LANGCHAIN)
            and frameworks.has_relation(conn, table.schema, "langchain_pg_collection"))


@dataclass(frozen=True)
class _V2Columns:
    """The columns of a PGVectorStore table by role (langchain-postgres v2 lets each be named, see
    PGEngine.init_vectorstore_table); every other column is a metadata column."""

    id: str
    content: str
    embedding: str
    metadata_json: str | None  # None: created with store_metadata=False
    hybrid: tuple[str, ...]  # hybrid search's tsvector column: PostgreSQL full-text search, not migrated


# The defaults of PGEngine.init_vectorstore_table; "langchain_id" or "langchain_metadata" marks the
# table as LangChain's for --layout auto (the other names are common outside LangChain too).
_V2_DEFAULTS = {"id": "langchain_id", "content": "content", "embedding": "embedding",
                "metadata_json": "langchain_metadata"}
_V2_MARKS = ("langchain_id", "langchain_metadata")


def _v2_role(table: TableInfo, role: str, types: tuple[str, ...], *, not_null: bool,
             created_as: tuple[str, ...] | None = None) -> str | None:
    """The column that plays ``role``: the one of the default name, else the only one of the type
    LangChain creates it as (``created_as``, NOT NULL when it makes it so); ValueError says what differs."""
    default = table.column(_V2_DEFAULTS[role])
    if default is not None:
        if default.type.name not in types:
            raise ValueError(f"column {default.name} is {default.declared}, not {' or '.join(types)}")
        return default.name
    fits = [c.name for c in table.columns if c.type.name in (created_as or types) and (c.not_null or not not_null)
            and c.name not in table.primary_key]
    if len(fits) > 1:
        raise ValueError(f"several columns could be the {role.replace('_', ' ')} column ({', '.join(fits)})")
    return fits[0] if fits else None


def _v2_columns(table: TableInfo) -> _V2Columns:
    """The roles of the table's columns; ValueError names what differs from a PGVectorStore table
    (an id primary key, content TEXT NOT NULL, embedding vector(n) NOT NULL, an optional JSON column)."""
    if len(table.primary_key) == 1:
        key = table.primary_key[0]
    elif table.column(_V2_DEFAULTS["id"]) is not None:
        key = _V2_DEFAULTS["id"]  # no primary key: its uniqueness is checked before writing
    else:
        raise ValueError("no one-column primary key for the id (nor a langchain_id column)")
    content = _v2_role(table, "content", ("text",), not_null=True)
    embedding = _v2_role(table, "embedding", VECTOR, not_null=True)
    missing = [f"no {what} column" for what, name in (("content (text NOT NULL)", content),
                                                      ("embedding (vector NOT NULL)", embedding)) if name is None]
    if missing:
        raise ValueError("; ".join(missing))
    others = [c for c in table.columns if c.type.name in VECTOR and c.name != embedding]
    if others:
        raise ValueError(f"a second vector column ({', '.join(c.name for c in others)}): PGVectorStore has one")
    hybrid = tuple(c.name for c in table.columns if c.type.name == "tsvector")
    return _V2Columns(key, content, embedding, _v2_role(table, "metadata_json", JSON, not_null=False, created_as=("json",)), hybrid)


def _v2_differences(conn, table: TableInfo) -> str:
    try:
        _v2_columns(table)
    except ValueError as exc:
        return str(exc)
    return ""


def _is_langchain_v2(conn, table: TableInfo) -> bool:
    return not _v2_differences(conn, table) and any(table.column(name) for name in _V2_MARKS)


def _v2_metadata_columns(table: TableInfo) -> list[str]:
    v2 = _v2_columns(table)
    roles = {v2.id, v2.content, v2.embedding, v2.metadata_json, *v2.hybrid}
    return [c.name for c in table.columns if c.name not in roles]


def _v2_payload_keys(table: TableInfo) -> dict[str, str]:
    """page_content and metadata as langchain-qdrant reads them; a UUID id is the point ID, any
    other id (uuid5 of it) stays in the payload under its column name."""
    v2 = _v2_columns(table)
    keys = {v2.content: "page_content", **({v2.metadata_json: "metadata"} if v2.metadata_json else {}),
            **{c: f"metadata.{c}" for c in _v2_metadata_columns(table)}}
    if _type(table, v2.id) == "uuid":
        keys[v2.id] = ""
    return keys


def _is_llamaindex(conn, table: TableInfo) -> bool:
    return table.name.startswith("data_") and _shape(
        table, {"id": ("int8",), "text": TEXT, "metadata_": JSON, "node_id": TEXT, "embedding": VECTOR},
        optional={"text_search_tsv": ("tsvector",)})


def _llamaindex_hybrid(table: TableInfo) -> bool:
    return table.column("text_search_tsv") is not None


def _is_vecs(conn, table: TableInfo) -> bool:
    return table.schema == "vecs" and _shape(table, {"id": TEXT, "vec": VECTOR, "metadata": JSON})


_PGAI_STORE = {"embedding_uuid": ("uuid",), "chunk_seq": ("int4",), "chunk": ("text",), "embedding": VECTOR}


def _is_pgai(conn, table: TableInfo) -> bool:
    if table.relkind != "v" or not table.name.endswith("_embedding") or not _shape(table, _PGAI_STORE, exact=False):
        return False
    store = frameworks.relation_columns(conn, table.schema, table.name + "_store")
    return bool(store) and set(_PGAI_STORE) <= set(store)


def _all_columns(table: TableInfo) -> list[str]:
    return [c.name for c in table.columns]


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout(
        name="langchain", framework="LangChain PGVector (langchain-postgres)", detect=_is_langchain,
        columns=lambda t: ["id", "embedding", "document", "cmetadata"], key_column="id",
        vector_names=lambda t: {"embedding": ""},
        payload_keys=lambda t: {"document": "page_content", "cmetadata": "metadata"},
        targets=_langchain_targets, auto_payload_index=False,
        payload_text='{"page_content": document, "metadata": cmetadata, "id": id}; one collection per '
                     "LangChain collection, named like it", explain=_langchain_differences,
    ),
    Layout(
        name="langchain-v2", framework="LangChain PGVectorStore (langchain-postgres v2)", detect=_is_langchain_v2,
        columns=lambda t: [c.name for c in t.columns if c.name not in _v2_columns(t).hybrid],
        key_column=lambda t: _v2_columns(t).id,
        vector_names=lambda t: {_v2_columns(t).embedding: ""}, payload_keys=_v2_payload_keys,
        targets=_one_target(lambda t: t.name), auto_payload_index=False,
        notes=lambda t: [f"{t.display}: {', '.join(_v2_columns(t).hybrid)} (hybrid search's tsvector, PostgreSQL "
                         "full-text search) has no faithful Qdrant equivalent and is not migrated; dense search "
                         "works as before."] if _v2_columns(t).hybrid else [],
        payload_text='{"page_content": the content column, "metadata": the JSON metadata column merged with the '
                     "metadata columns}; an id that is not a UUID is kept under its column name",
        explain=_v2_differences,
    ),
    Layout(
        name="llamaindex", framework="LlamaIndex PGVectorStore", detect=_is_llamaindex,
        columns=lambda t: ["text", "metadata_", "node_id", "embedding"], key_column="node_id",
        vector_names=lambda t: {"embedding": "text-dense" if _llamaindex_hybrid(t) else ""},
        payload_keys=lambda t: {"metadata_": SPREAD, "node_id": ""},
        targets=_one_target(lambda t: t.name[len("data_"):]), payload_indexes=(("doc_id", "keyword"),),
        payload_shape="llamaindex", auto_payload_index=False,
        notes=lambda t: [f"{t.display} is a hybrid LlamaIndex table: its text_search_tsv (PostgreSQL full-text "
                         "search) has no faithful Qdrant sparse-vector equivalent and is not migrated; dense "
                         "search works as before."] if _llamaindex_hybrid(t) else [],
        payload_text="metadata_ spread at the top level, the text column restored into _node_content",
    ),
    Layout(
        name="vecs", framework="Supabase vecs", detect=_is_vecs,
        columns=_all_columns, key_column="id", vector_names=lambda t: {"vec": ""},
        payload_keys=lambda t: {"metadata": SPREAD}, targets=_one_target(lambda t: t.name), payload_shape="vecs",
        payload_text="metadata spread at the top level, the original id kept as \"id\" (a metadata key of that "
                     "name under \"metadata\")",
    ),
    Layout(
        name="pgai", framework="pgai vectorizer", detect=_is_pgai,
        columns=_all_columns, key_column="embedding_uuid", vector_names=lambda t: {"embedding": ""},
        payload_keys=lambda t: {}, targets=_one_target(lambda t: t.name),
        change_table=lambda t: t.name + "_store",
        payload_text="chunk, chunk_seq, embedding_uuid and the source table's columns",
    ),
)}


# Who reads each layout's collection as it is: what the announcement promises, and only that.
_QDRANT_STORE = "which {}'s QdrantVectorStore opens with its default arguments"
_NO_STORE = "shaped for qdrant-client queries as it is ({} has no Qdrant store)"
READ_BY = {
    "langchain": _QDRANT_STORE.format("langchain-qdrant"),
    "langchain-v2": _QDRANT_STORE.format("langchain-qdrant"),
    "llamaindex": _QDRANT_STORE.format("LlamaIndex"),
    "vecs": _NO_STORE.format("Supabase vecs"),
    "pgai": _NO_STORE.format("pgai"),
}


@dataclass
class Job:
    """One migration a layout asks for: the options to run it with, and what to tell the user."""

    options: Any  # pipeline.MigrationOptions
    layout: Layout | None
    announce: str = ""
    extras: dict = field(default_factory=dict)


def detect(conn: Connection, table: TableInfo) -> Layout | None:
    """The layout whose shape the table has exactly, if any (the first match)."""
    for layout in LAYOUTS.values():
        if layout.detect(conn, table):
            return layout
    return None


def _key_column(layout: Layout, table: TableInfo) -> str:
    return layout.key_column(table) if callable(layout.key_column) else layout.key_column


# complexity: turns a detected or forced layout into the jobs that migrate it; each branch is one case of --layout
# (auto, plain, forced, not fitting).
def jobs_for(options, conn: Connection, table: TableInfo, default_collection: str | None = None) -> list[Job]:
    """The migrations ``options`` mean for ``table``: one (plain), or what the layout yields."""
    name = options.layout or "auto"
    if name not in LAYOUT_NAMES:
        raise InputError(f"--layout {name!r} is not known.", fix=f"use one of {', '.join(LAYOUT_NAMES)}.")
    layout = None
    if name == "auto":
        layout = detect(conn, table)
    elif name != "plain":
        layout = LAYOUTS[name]
        differs = layout.explain(conn, table) if layout.explain else not layout.detect(conn, table)
        if differs:
            raise InputError(f"--layout {name}: {table.display} does not have the shape {layout.framework} writes"
                             + (f": {differs}." if isinstance(differs, str) else "."),
                             fix="check --pg.table, or use --layout plain (or auto) to copy it column by column.")
    if layout is None:
        if not options.collection and default_collection:
            return [Job(dataclasses.replace(options, collection=default_collection, layout="plain"), None)]
        if not options.collection:
            raise InputError("Missing required flag(s): --qdrant.collection.",
                             fix="name the target collection, e.g. --qdrant.collection items.")
        return [Job(dataclasses.replace(options, layout="plain"), None)]
    announce = (f"{table.display} has the shape of a {layout.framework} table: migrating it in the "
                f"{layout.name!r} layout, {READ_BY[layout.name]}"
                + ("; to copy it column by column instead, pass --layout plain." if name == "auto" else "."))
    jobs = []
    for target in layout.targets(conn, table, options.collection or None):
        where = target.where
        if options.where:
            where = f"({target.where}) AND ({options.where})" if target.where else options.where
        opts = dataclasses.replace(
            options, collection=target.collection, where=where,
            key_columns=options.key_columns or [_key_column(layout, table)],
            key_source=options.key_source if options.key_columns else f"the {layout.name} layout",
            columns=options.columns or layout.columns(table),
            vector_names={**layout.vector_names(table), **options.vector_names},
            payload_keys={**layout.payload_keys(table), **options.payload_keys},
            payload_shape=layout.payload_shape, layout_indexes=layout.payload_indexes,
            auto_payload_index=options.auto_payload_index and layout.auto_payload_index,
            layout="plain", layout_notes=tuple(layout.notes(table)))
        jobs.append(Job(opts, layout))
    if jobs:
        jobs[0].announce = (announce + f" Collection(s): {', '.join(j.options.collection for j in jobs)}; "
                            f"payload: {layout.payload_text}.")
    if not jobs:
        raise InputError(f"{table.display} is a {layout.framework} table with no collection to migrate.",
                         fix="add documents through the framework first, or use --layout plain.")
    return jobs


def plan_jobs(options, default_collection: str | None = None) -> list[Job]:
    """Connect, describe the table and return its jobs (a short catalog-only look)."""
    from pg2qdrant.source import catalog, connect, snapshot
    if (options.layout or "auto") == "plain":
        return jobs_for(options, None, None, default_collection)  # type: ignore[arg-type]
    conn = connect.connect(options.pg_url, autocommit=True)
    try:
        snapshot.begin_read_only(conn)
        table = catalog.describe_table(conn, options.table)
        return jobs_for(options, conn, table, default_collection)
    finally:
        conn.close()


def follow_changes(conn: Connection, plan):
    """The plan with ``table.change_tables`` set when the table is a view a layout syncs through its
    base table (pgai: ``<source>_embedding_store``): CDC publishes that table, and each of its
    changes is read again through the view by key (a deleted row: its point is deleted)."""
    table = plan.table
    if table.relkind != "v" or table.change_tables:
        return plan
    for layout in LAYOUTS.values():
        if layout.change_table and layout.detect(conn, table):
            leaves = frameworks.relation_leaves(conn, table.schema, layout.change_table(table))
            return dataclasses.replace(plan, table=dataclasses.replace(table, change_tables=leaves))
    return plan


def rows_only(plan) -> bool:
    """CDC must read each changed row again (with the filter) instead of applying partial updates."""
    return bool(plan.where or plan.payload_keys or plan.payload_shape or plan.table.change_tables
                or any(v.name == "" for v in plan.vectors))
