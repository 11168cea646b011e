"""TODO docstring (pg2qdrant/runtime/layouts.py, from pg2qdrant/layouts.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.layouts import LAYOUT_NAMES, SPREAD
from pg2qdrant.core.table import TableInfo
from pg2qdrant.source import frameworks
from pg2qdrant.source.connect import Connection
from pg2qdrant.source.where import and_where, where_sql  # noqa: F401  (the filter in SQL, re-exported)


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
class LayoutCollection:
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
    targets: Callable[[Connection, TableInfo, str | None], list[LayoutCollection]]
    payload_indexes: tuple[tuple[str, str], ...] = ()
    payload_shape: str | None = None
    notes: Callable[[TableInfo], list[str]] = lambda table: []
    payload_text: str = ""  # the payload shape, for inspect
    auto_payload_index: bool = True
    change_table: Callable[[TableInfo], str] | None = None  # a view's: the table whose changes CDC follows
    # What differs from the shape ("" when it fits), for a forced --layout; without it the
    # refusal names no difference. A forced layout runs on a table this accepts.
    explain: Callable[[Connection, TableInfo], str] | None = None
    # --qdrant.hybrid: column -> name of the BM25 vector the framework's Qdrant store reads in hybrid mode
    hybrid: Callable[[TableInfo], dict[str, str]] | None = None
    hybrid_dense: str | None = None  # ... and the name its dense vector has then (else the unnamed one)


def _one_target(name: Callable[[TableInfo], str]):
    def targets(conn, table: TableInfo, chosen: str | None) -> list[LayoutCollection]:
        return [LayoutCollection(chosen or name(table))]
    return targets


def _langchain_targets(conn: Connection, table: TableInfo, chosen: str | None) -> list[LayoutCollection]:
    """One Qdrant collection per LangChain collection (langchain_pg_collection, same schema)."""
    rows = frameworks.langchain_collections(conn, table.schema)
    known = ", ".join(name for name, _ in rows) or "none"
    if chosen:
        rows = [r for r in rows if r[0] == chosen]
        if not rows:
            raise InputError(f"LangChain collection {chosen!r} is not in {table.schema}.langchain_pg_collection "
                             f"(collections: {known}).",
                             fix="name one of them with --qdrant.collection, or leave the flag out to migrate all.")
    return [LayoutCollection(name, where) for name, where in rows]


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


_LLAMAINDEX = {"id": ("int8",), "text": TEXT, "metadata_": JSON, "node_id": TEXT, "embedding": VECTOR}
_LLAMAINDEX_OPTIONAL = {"text_search_tsv": ("tsvector",)}


def _is_llamaindex(conn, table: TableInfo) -> bool:
    return table.name.startswith("data_") and _shape(table, _LLAMAINDEX, optional=_LLAMAINDEX_OPTIONAL)


def _llamaindex_differences(conn, table: TableInfo) -> str:
    diffs = [] if table.name.startswith("data_") else [f"its name {table.name} does not start with data_"]
    return "; ".join(diffs + _differences(table, _LLAMAINDEX, optional=_LLAMAINDEX_OPTIONAL))


def _llamaindex_hybrid(table: TableInfo) -> bool:
    return table.column("text_search_tsv") is not None


_VECS = {"id": TEXT, "vec": VECTOR, "metadata": JSON}


def _is_vecs(conn, table: TableInfo) -> bool:
    return table.schema == "vecs" and _shape(table, _VECS)


def _vecs_differences(conn, table: TableInfo) -> str:
    diffs = [] if table.schema == "vecs" else [f"it is in schema {table.schema}, not vecs"]
    return "; ".join(diffs + _differences(table, _VECS))


_PGAI_STORE = {"embedding_uuid": ("uuid",), "chunk_seq": ("int4",), "chunk": ("text",), "embedding": VECTOR}


def _is_pgai(conn, table: TableInfo) -> bool:
    if table.relkind != "v" or not table.name.endswith("_embedding"):  # no catalog read for other tables
        return False
    return not _pgai_differences(conn, table)


def _pgai_differences(conn, table: TableInfo) -> str:
    diffs = [] if table.relkind == "v" else ["it is not a view (pgai's is <source>_embedding over its store table)"]
    diffs += [] if table.name.endswith("_embedding") else [f"its name {table.name} does not end with _embedding"]
    diffs += _differences(table, _PGAI_STORE, exact=False)
    store = frameworks.relation_columns(conn, table.schema, table.name + "_store")
    if not store:
        diffs.append(f"there is no {table.schema}.{table.name}_store")
    elif not set(_PGAI_STORE) <= set(store):
        diffs.append(f"{table.name}_store lacks {', '.join(sorted(set(_PGAI_STORE) - set(store)))}")
    return "; ".join(diffs)


def _all_columns(table: TableInfo) -> list[str]:
    return [c.name for c in table.columns]


LANGCHAIN_SPARSE = "langchain-sparse"  # langchain-qdrant's QdrantVectorStore.SPARSE_VECTOR_NAME
LLAMAINDEX_SPARSE = "text-sparse-new"  # llama-index-vector-stores-qdrant's DEFAULT_SPARSE_VECTOR_NAME


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout(
        name="langchain", framework="LangChain PGVector (langchain-postgres)", detect=_is_langchain,
        columns=lambda t: ["id", "embedding", "document", "cmetadata"], key_column="id",
        vector_names=lambda t: {"embedding": ""},
        payload_keys=lambda t: {"document": "page_content", "cmetadata": "metadata"},
        targets=_langchain_targets, auto_payload_index=False,
        hybrid=lambda t: {"document": LANGCHAIN_SPARSE},
        payload_text='{"page_content": document, "metadata": cmetadata, "id": id}; one collection per '
                     "LangChain collection, named like it", explain=_langchain_differences,
    ),
    Layout(
        name="langchain-v2", framework="LangChain PGVectorStore (langchain-postgres v2)", detect=_is_langchain_v2,
        columns=lambda t: [c.name for c in t.columns if c.name not in _v2_columns(t).hybrid],
        key_column=lambda t: _v2_columns(t).id,
        vector_names=lambda t: {_v2_columns(t).embedding: ""}, payload_keys=_v2_payload_keys,
        targets=_one_target(lambda t: t.name), auto_payload_index=False,
        hybrid=lambda t: {_v2_columns(t).content: LANGCHAIN_SPARSE},
        notes=lambda t: [f"{t.display}: {', '.join(_v2_columns(t).hybrid)} (hybrid search's tsvector, PostgreSQL "
                         "full-text search) is not copied; pass --qdrant.hybrid for the BM25 sparse vector "
                         f"langchain-qdrant's hybrid mode reads ({LANGCHAIN_SPARSE!r}, from "
                         f"{_v2_columns(t).content})."] if _v2_columns(t).hybrid else [],
        payload_text='{"page_content": the content column, "metadata": the JSON metadata column merged with the '
                     "metadata columns}; an id that is not a UUID is kept under its column name",
        explain=_v2_differences,
    ),
    Layout(
        name="llamaindex", framework="LlamaIndex PGVectorStore", detect=_is_llamaindex,
        columns=lambda t: ["text", "metadata_", "node_id", "embedding"], key_column="node_id",
        vector_names=lambda t: {"embedding": "text-dense" if _llamaindex_hybrid(t) else ""},
        hybrid=lambda t: {"text": LLAMAINDEX_SPARSE}, hybrid_dense="text-dense",
        payload_keys=lambda t: {"metadata_": SPREAD, "node_id": ""},
        targets=_one_target(lambda t: t.name[len("data_"):]), payload_indexes=(("doc_id", "keyword"),),
        payload_shape="llamaindex", auto_payload_index=False,
        notes=lambda t: [f"{t.display} is a hybrid LlamaIndex table: its text_search_tsv (PostgreSQL full-text "
                         "search) is not copied; pass --qdrant.hybrid for the BM25 sparse vector LlamaIndex's "
                         f"hybrid mode reads ({LLAMAINDEX_SPARSE!r}, from text)."] if _llamaindex_hybrid(t) else [],
        payload_text="metadata_ spread at the top level, the text column restored into _node_content",
        explain=_llamaindex_differences,
    ),
    Layout(
        name="vecs", framework="Supabase vecs", detect=_is_vecs,
        columns=_all_columns, key_column="id", vector_names=lambda t: {"vec": ""},
        payload_keys=lambda t: {"metadata": SPREAD}, targets=_one_target(lambda t: t.name), payload_shape="vecs",
        payload_text="metadata spread at the top level, the original id kept as \"id\" (a metadata key of that "
                     "name under \"metadata\")",
        explain=_vecs_differences,
    ),
    Layout(
        name="pgai", framework="pgai vectorizer", detect=_is_pgai,
        columns=_all_columns, key_column="embedding_uuid", vector_names=lambda t: {"embedding": ""},
        payload_keys=lambda t: {}, targets=_one_target(lambda t: t.name),
        change_table=lambda t: t.name + "_store",
        payload_text="chunk, chunk_seq, embedding_uuid and the source table's columns",
        explain=_pgai_differences,
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
    if layout is None and options.hybrid:
        raise InputError(f"--qdrant.hybrid adds the sparse vector a framework's hybrid mode reads, and "
                         f"{options.table} is not migrated with a framework layout.",
                         fix="name the text column instead: --qdrant.bm25 COLUMN[=VECTOR_NAME].")
    if layout is None:
        if not options.collection and default_collection:
            return [Job(dataclasses.replace(options, collection=default_collection, layout="plain"), None)]
        if not options.collection:
            raise InputError("Missing required flag(s): --qdrant.collection.",
                             fix="name the target collection, e.g. --qdrant.collection items.")
        return [Job(dataclasses.replace(options, layout="plain"), None)]
    if options.hybrid and layout.hybrid is None:
        raise InputError(f"--qdrant.hybrid: {layout.framework} has no Qdrant store with a hybrid mode.",
                         fix="name the text column instead: --qdrant.bm25 COLUMN[=VECTOR_NAME].")
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
            vector_names={**_hybrid_names(layout, table, options), **options.vector_names},
            bm25={**(layout.hybrid(table) if options.hybrid and layout.hybrid else {}), **options.bm25},
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


def _hybrid_names(layout: Layout, table: TableInfo, options) -> dict[str, str]:
    """The layout's vector names; in hybrid mode, its dense vector named as the store reads it then."""
    names = layout.vector_names(table)
    if options.hybrid and layout.hybrid_dense:
        names = {column: name or layout.hybrid_dense for column, name in names.items()}
    return names


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
