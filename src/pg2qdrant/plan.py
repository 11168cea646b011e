"""How a table becomes a collection: the migration plan.

The plan is decided once, from the catalog and the command line, and then
used by every flow (migrate, verify, sync) so that they cannot disagree:
which columns become which named vectors (size, distance, datatype), which
become payload and how each value is converted, and how point IDs are made.
It also knows how to read each column (the SQL expression and the type
psycopg decodes it as), so reading and mapping line up by construction.

Nothing here does I/O; :func:`build_plan` takes catalog facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from pg2qdrant.errors import InputError
from pg2qdrant.source.model import BIT_OID, Column, PgType, ServerInfo, TableInfo

# --- distances ----------------------------------------------------------------------------

DISTANCES = ("Cosine", "Dot", "Euclid", "Manhattan")
_DISTANCE_NAMES = {
    "cosine": "Cosine",
    "dot": "Dot", "ip": "Dot", "inner_product": "Dot", "inner-product": "Dot",
    "euclid": "Euclid", "euclidean": "Euclid", "l2": "Euclid",
    "manhattan": "Manhattan", "l1": "Manhattan", "hamming": "Manhattan",
}
_OPCLASS_SUFFIX = {
    "_cosine_ops": "Cosine",
    "_l2_ops": "Euclid",
    "_ip_ops": "Dot",
    "_l1_ops": "Manhattan",
    "_hamming_ops": "Manhattan",  # bit_hamming_ops: Manhattan on 0/1 values is Hamming
}


def parse_distance(name: str, *, flag: str = "--qdrant.distance-metric") -> str:
    key = name.strip().lower()
    if key not in _DISTANCE_NAMES:
        raise InputError(
            f"{flag}: unknown distance {name!r}.",
            fix="use one of cosine, dot, euclid, manhattan (per vector column: embedding=dot).",
        )
    return _DISTANCE_NAMES[key]


def distance_of_opclass(opclass: str) -> str | None:
    for suffix, distance in _OPCLASS_SUFFIX.items():
        if opclass.endswith(suffix):
            return distance
    return None


# --- value conversion kinds -----------------------------------------------------------------
# A payload column is read by psycopg with the loader of `load_type` (binary COPY) and then
# converted by the mapping function registered for its `kind` (see mapping.PAYLOAD_CONVERTERS).

_SCALAR_KINDS = {
    "int2": "int", "int4": "int", "int8": "int", "oid": "int",
    "float4": "float4", "float8": "float8",
    "bool": "bool",
    "numeric": "numeric",
    "text": "text", "varchar": "text", "bpchar": "text", "name": "text",
    "json": "json", "jsonb": "json",
    "uuid": "uuid",
    "timestamptz": "timestamptz", "timestamp": "timestamp", "date": "date",
    "time": "time", "timetz": "timetz", "interval": "interval",
    "bytea": "bytea",
    "inet": "inet", "cidr": "inet",
}

# What each kind means in Qdrant, for `inspect` and the README.
KIND_DESCRIPTIONS = {
    "int": "integer",
    "float4": "float (shortest decimal that round-trips the float4)",
    "float8": "float (NaN/Infinity as strings)",
    "bool": "bool",
    "numeric": "number when exact, else string with all digits",
    "text": "string",
    "json": "nested JSON (integers intact)",
    "uuid": "string (canonical UUID)",
    "timestamptz": "string, RFC 3339 UTC with microseconds",
    "timestamp": "string, ISO 8601 with microseconds",
    "date": "string, YYYY-MM-DD",
    "time": "string, HH:MM:SS.ffffff",
    "timetz": "string, HH:MM:SS.ffffff+HH:MM",
    "interval": "string, ISO 8601 duration",
    "bytea": "string, base64",
    "inet": "string",
    "text_form": "string (PostgreSQL text form)",
}


def _scalar_kind(t: PgType) -> str:
    # Strings read as their PostgreSQL text form (col::text): enums, citext, and "char",
    # a single byte that PostgreSQL prints as \ooo when it is not ASCII (psycopg would decode
    # the byte as UTF-8, which fails on such bytes).
    if (t.typtype == "e" or (t.extension == "citext" and t.name == "citext")
            or (t.schema == "pg_catalog" and t.name == "char")):
        return "text_cast"
    if t.schema == "pg_catalog" and t.name in _SCALAR_KINDS:
        return _SCALAR_KINDS[t.name]
    return "text_form"


# --- plan dataclasses -----------------------------------------------------------------------

@dataclass(frozen=True)
class ReadColumn:
    """One expression of the SELECT that the reader copies, and how psycopg decodes it."""

    sql: str  # a SQL expression over quoted identifiers (safe: built from catalog names)
    load_type: str  # type name or 'raw:<oid>' for bytes passed to the vector decoder
    column: str


@dataclass(frozen=True)
class VectorSpec:
    name: str  # named vector in Qdrant == column name
    column: str
    kind: str  # dense | half | sparse | bit
    size: int | None  # None for sparse
    distance: str | None  # None for sparse (Qdrant scores sparse vectors by dot product)
    distance_source: str
    datatype: str  # float32 | float16 | uint8 | sparse
    declared: str
    read_index: int
    size_from_data: bool = False

    @property
    def is_sparse(self) -> bool:
        return self.kind == "sparse"


@dataclass(frozen=True)
class PayloadSpec:
    name: str
    column: str
    declared: str
    kind: str  # a key of mapping.PAYLOAD_CONVERTERS; arrays are 'array:<element kind>'
    read_index: int

    @property
    def description(self) -> str:
        if self.kind.startswith("array:"):
            return "list of " + KIND_DESCRIPTIONS.get(self.kind[6:], self.kind[6:])
        return KIND_DESCRIPTIONS.get(self.kind, self.kind)


ID_MODES = ("native", "reference", "hash")


@dataclass(frozen=True)
class KeySpec:
    columns: tuple[str, ...]
    kinds: tuple[str, ...]  # int | uuid | text per column (text = the key's text form)
    read_indexes: tuple[int, ...]
    mode: str  # native | reference
    unique_by_constraint: bool  # a PK/unique NOT NULL index guarantees it; else we check
    source: str  # where the key came from (flag / primary key)

    @property
    def description(self) -> str:
        if len(self.columns) > 1:
            return ("uuid5(NAMESPACE_URL, JSON array of the key values' text) "
                    "(composite key)")
        kind = self.kinds[0]
        if self.mode == "reference":
            return "reference mode: UUID text as-is, else uuid5(NAMESPACE_URL, key text) (integers too)"
        if kind == "int":
            return "integer key as integer ID (negative keys: uuid5 of their text)"
        if kind == "uuid":
            return "UUID key as UUID ID"
        if self.mode == "hash":
            return "uuid5(NAMESPACE_URL, key text), also for UUID-shaped text (hash mode)"
        return "UUID-shaped text as that UUID, else uuid5(NAMESPACE_URL, key text) (as the reference tool)"


@dataclass(frozen=True)
class CollectionShape:
    """The vector configuration of a collection, as compared before any write."""

    dense: dict[str, tuple[int, str, str]]  # name -> (size, distance, datatype)
    sparse: frozenset[str]

    def describe(self) -> str:
        parts = [f"{n}: {s}-d {d} {t}" for n, (s, d, t) in sorted(self.dense.items())]
        parts += [f"{n}: sparse" for n in sorted(self.sparse)]
        return "; ".join(parts) or "no vectors"


PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "uuid", "text", "geo")
_INDEX_TYPE_OF_KIND = {
    "int": "integer", "float4": "float", "float8": "float", "bool": "bool", "text": "keyword",
    "uuid": "uuid", "timestamptz": "datetime", "timestamp": "datetime", "date": "datetime",
}


@dataclass(frozen=True)
class PayloadIndexSpec:
    field: str
    type: str  # one of PAYLOAD_INDEX_TYPES
    source: str  # why: "--qdrant.payload-index" or "btree index <name> in PostgreSQL"


@dataclass(frozen=True)
class CollectionOptions:
    """How the collection is created and bulk-loaded (only used when we create it)."""

    hnsw_m: int = 16  # restored after the load; 0 keeps the collection without HNSW
    hnsw_ef_construct: int = 100
    on_disk: bool | None = None
    quantization: str | None = None  # "int8"
    shard_number: int | None = None
    replication_factor: int | None = None
    payload_indexes: tuple[tuple[str, str], ...] = ()  # (field, type), created before loading


@dataclass(frozen=True)
class Plan:
    table: TableInfo
    server: ServerInfo
    collection: str
    reads: tuple[ReadColumn, ...]
    key: KeySpec
    vectors: tuple[VectorSpec, ...]
    payload: tuple[PayloadSpec, ...]
    warnings: tuple[str, ...] = field(default=())
    payload_indexes: tuple[PayloadIndexSpec, ...] = field(default=())
    # Generic options and framework layouts (see layouts.py): the row filter (SQL, validated),
    # payload keys other than the column names, and a named payload shaper.
    where: str | None = None
    payload_keys: tuple[tuple[str, str], ...] = ()
    payload_shape: str | None = None

    @property
    def dense_vectors(self) -> tuple[VectorSpec, ...]:
        return tuple(v for v in self.vectors if not v.is_sparse)

    @property
    def sparse_vectors(self) -> tuple[VectorSpec, ...]:
        return tuple(v for v in self.vectors if v.is_sparse)

    def shape(self) -> CollectionShape:
        return CollectionShape(
            dense={v.name: (v.size or 0, v.distance or "", v.datatype) for v in self.dense_vectors},
            sparse=frozenset(v.name for v in self.sparse_vectors),
        )

    def with_vector_size(self, name: str, size: int) -> "Plan":
        vectors = tuple(
            VectorSpec(**{**v.__dict__, "size": size}) if v.name == name else v for v in self.vectors
        )
        return Plan(**{**self.__dict__, "vectors": vectors})


# --- building the plan ----------------------------------------------------------------------

def _vector_kind(col: Column) -> str | None:
    t = col.type
    if t.extension == "vector" and t.name in ("vector", "halfvec", "sparsevec"):
        return {"vector": "dense", "halfvec": "half", "sparsevec": "sparse"}[t.name]
    if t.oid == BIT_OID:
        return "bit"
    return None


def _cast(col: Column, type_sql: str) -> str:
    return f"{_quote(col.name)}::{type_sql}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _type_sql(t: PgType) -> str:
    return f"{_quote(t.schema)}.{_quote(t.name)}"


def _payload_read(col: Column) -> tuple[str, str, str]:
    """(kind, SQL expression, load type) for a payload column.

    A column whose declared type is not its resolved type (a domain, an array of
    one, a domain over an array: see catalog._load_types) is cast to the resolved
    type, so the binary values, array elements included, carry a type OID psycopg
    has a loader for. This matters beyond the column itself: psycopg shares one
    array loader among all the reads of one array type, so one array of posint
    elements used to corrupt a plain int[] read next to it.
    """
    t = col.type
    is_domain = col.declared_oid != t.oid
    if t.category == "A" and t.elem is not None:
        ek = _scalar_kind(t.elem)
        if ek in ("text_form", "text_cast"):
            return "array:text", _cast(col, "text[]"), "text[]"
        expr = _cast(col, _type_sql(t.elem) + "[]") if is_domain else _quote(col.name)
        return f"array:{ek}", expr, f"{t.elem.name}[]"
    kind = _scalar_kind(t)
    if kind in ("text_form", "text_cast"):
        return ("text_form" if kind == "text_form" else "text"), _cast(col, "text"), "text"
    expr = _cast(col, _type_sql(t)) if is_domain else _quote(col.name)
    return kind, expr, t.name


def _check_loadable(col: Column, load_type: str) -> None:
    """Fail while planning, before anything is written, when psycopg cannot decode a read."""
    # Imported here: adapters imports mapping, which imports this module.
    from pg2qdrant.source import adapters

    if adapters.load_oid(load_type) is None:
        raise InputError(
            f"Column {col.name} ({col.declared}) cannot be read: psycopg has no binary loader for "
            f"{load_type!r}, the type pg2qdrant reads it as.",
            fix=f"leave the column out with --pg.columns, or migrate from a view that casts "
                f"{col.name} to text; please report the type.",
        )


def _key_read(col: Column, mode: str) -> tuple[str, str, str]:
    """(kind, SQL expression, load type) for a key column: int, uuid, or its text form.

    Integer and UUID keys are read exactly like the payload column (one read
    serves both); any other key is read as its PostgreSQL text form.
    """
    name = col.type.name if col.type.schema == "pg_catalog" and col.type.category != "A" else ""
    if name in ("int2", "int4", "int8", "uuid"):
        _, expr, load = _payload_read(col)
        return ("uuid" if name == "uuid" else "int"), expr, load
    return "text", _cast(col, "text"), "text"


def _split_list(values: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def parse_distance_overrides(values: Iterable[str] | None) -> dict[str, str]:
    """``embedding=dot`` items, repeatable and/or separated by ',' or ';'."""
    out: dict[str, str] = {}
    for raw in values or ():
        for item in raw.replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise InputError(
                    f"--qdrant.distance-metric {item!r} is not in the form column=metric.",
                    fix="write e.g. --qdrant.distance-metric embedding=dot (repeat, or separate with commas).",
                )
            col, metric = item.split("=", 1)
            out[col.strip()] = parse_distance(metric)
    return out


def _unknown_columns(table: TableInfo, names: Iterable[str], flag: str) -> None:
    known = {c.name for c in table.columns}
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(
            f"{flag} names column(s) not in {table.display}: {', '.join(repr(m) for m in missing)}.",
            fix=f"columns of {table.display} are: {', '.join(c.name for c in table.columns)}.",
        )


def build_plan(
    table: TableInfo,
    server: ServerInfo,
    *,
    collection: str,
    key_columns: list[str] | None = None,
    columns: list[str] | None = None,
    distance_overrides: dict[str, str] | None = None,
    id_mode: str = "native",
    payload_index_flags: list[str] | None = None,
    auto_payload_index: bool = True,
) -> Plan:
    """Decide the whole mapping from catalog facts and options (raises InputError)."""
    if not collection or not collection.strip():
        raise InputError("--qdrant.collection is empty.", fix="name the target collection.")
    if id_mode not in ID_MODES:
        raise InputError(f"--migration.id-mode {id_mode!r} is not known.", fix="use native, reference or hash.")
    warnings: list[str] = []
    key_columns = _split_list(key_columns)
    selected = _split_list(columns)
    overrides = dict(distance_overrides or {})

    # Which columns take part.
    if selected:
        _unknown_columns(table, selected, "--pg.columns")
    if key_columns:
        _unknown_columns(table, key_columns, "--pg.key-column")
        key_source = "--pg.key-column"
    elif table.primary_key:
        key_columns = list(table.primary_key)
        key_source = "primary key"
    else:
        candidates = [", ".join(k) for k in table.unique_keys] or [
            c.name for c in table.columns if c.name.lower() in ("id", "uuid", "pk") and _vector_kind(c) is None]
        raise InputError(
            f"Table {table.display} has no primary key, so the point ID column must be named.",
            fix="pass --pg.key-column COLUMN (a column with unique, non-NULL values)"
            + (f"; candidates: {'; '.join(candidates)}." if candidates else "."),
        )
    chosen = [c for c in table.columns if not selected or c.name in selected or c.name in key_columns]

    # Vectors.
    vectors_cols = [c for c in chosen if _vector_kind(c) is not None]
    if not vectors_cols:
        vector_like = [c.name for c in table.columns if _vector_kind(c)]
        if selected and vector_like:
            raise InputError(
                f"--pg.columns selects no vector column of {table.display}.",
                fix=f"add one of {', '.join(vector_like)} to --pg.columns.",
            )
        raise InputError(
            f"Table {table.display} has no vector column (vector, halfvec, sparsevec or bit(n)).",
            fix="choose the table that holds the embeddings; columns found: "
            + ", ".join(f"{c.name} {c.declared}" for c in table.columns) + ".",
        )
    for kc in key_columns:
        if _vector_kind(table.column(kc)) is not None:
            raise InputError(f"Key column {kc!r} is a vector column.", fix="use a scalar key column.")
    unknown_overrides = [n for n in overrides if n not in {c.name for c in vectors_cols}]
    if unknown_overrides:
        raise InputError(
            f"--qdrant.distance-metric names {', '.join(map(repr, unknown_overrides))}, "
            "which is not a migrated vector column.",
            fix=f"vector columns are: {', '.join(c.name for c in vectors_cols)}.",
        )

    reads: list[ReadColumn] = []
    read_at: dict[tuple[str, str], int] = {}

    def read(col: Column, expr: str, load_type: str) -> int:
        k = (expr, load_type)
        if k not in read_at:
            _check_loadable(col, load_type)
            read_at[k] = len(reads)
            reads.append(ReadColumn(expr, load_type, col.name))
        return read_at[k]

    # Key first: its reads come first in every row.
    key_kinds, key_reads = [], []
    for kc in key_columns:
        col = table.column(kc)
        kind, expr, load = _key_read(col, id_mode)
        key_kinds.append(kind)
        key_reads.append(read(col, expr, load))
    unique = any(set(u) == set(key_columns) for u in table.unique_keys)
    key = KeySpec(tuple(key_columns), tuple(key_kinds), tuple(key_reads), id_mode, unique, key_source)

    vectors: list[VectorSpec] = []
    for col in vectors_cols:
        kind = _vector_kind(col)
        indexes = [i for i in table.vector_indexes if i.column == col.name]
        distance: str | None
        if kind == "sparse":
            distance, source = None, "sparse vectors are scored by dot product in Qdrant"
            if col.name in overrides:
                raise InputError(
                    f"--qdrant.distance-metric {col.name}=... : {col.name} is a sparsevec column and "
                    "Qdrant sparse vectors have no configurable distance (always dot product).",
                    fix=f"remove {col.name} from --qdrant.distance-metric.",
                )
            if indexes and distance_of_opclass(indexes[0].opclass) not in ("Dot", None):
                warnings.append(
                    f"{col.name}: index {indexes[0].name} uses {indexes[0].opclass}; Qdrant scores sparse "
                    "vectors by dot product only, so scores and order can differ from pgvector.")
        elif col.name in overrides:
            distance, source = overrides[col.name], "--qdrant.distance-metric"
        elif indexes:
            idx = indexes[0]
            distance = distance_of_opclass(idx.opclass)
            source = f"index {idx.name} ({idx.method}, {idx.opclass})"
            if distance is None:
                distance = "Manhattan" if kind == "bit" else "Cosine"
                warnings.append(
                    f"{col.name}: operator class {idx.opclass} has no Qdrant equivalent; using {distance}. "
                    f"Override with --qdrant.distance-metric {col.name}=<metric>.")
                source += f", no Qdrant equivalent: {distance}"
            others = {distance_of_opclass(i.opclass) for i in indexes[1:]} - {distance}
            if others:
                warnings.append(
                    f"{col.name}: several vector indexes disagree on the distance "
                    f"({', '.join(i.opclass for i in indexes)}); using {idx.opclass}. "
                    f"Override with --qdrant.distance-metric {col.name}=<metric>.")
        elif kind == "bit":
            distance, source = "Manhattan", "bit vectors: Manhattan on 0/1 equals Hamming distance"
        else:
            distance, source = "Cosine", "default (no HNSW/IVFFlat index on the column)"
            warnings.append(
                f"{col.name}: no HNSW or IVFFlat index tells which distance you search with; using Cosine. "
                f"Pass --qdrant.distance-metric {col.name}=dot|euclid|manhattan|cosine to choose.")
        size = None if kind == "sparse" else (col.typmod if col.typmod > 0 else None)
        datatype = {"dense": "float32", "half": "float16", "sparse": "sparse", "bit": "uint8"}[kind]
        expr = _cast(col, _type_sql(col.type)) if col.declared_oid != col.type.oid else _quote(col.name)
        vectors.append(VectorSpec(
            name=col.name, column=col.name, kind=kind, size=size, distance=distance,
            distance_source=source, datatype=datatype, declared=col.declared,
            read_index=read(col, expr, f"raw:{col.type.oid}"),
            size_from_data=(kind != "sparse" and size is None),
        ))

    payload: list[PayloadSpec] = []
    for col in chosen:
        if _vector_kind(col) is not None:
            continue
        kind, expr, load = _payload_read(col)
        payload.append(PayloadSpec(col.name, col.name, col.declared, kind, read(col, expr, load)))

    indexes = _payload_indexes(table, payload, key_columns, payload_index_flags or [], auto_payload_index)
    if table.relkind in ("v", "f"):
        warnings.append(
            f"{table.display} is a {'view' if table.relkind == 'v' else 'foreign table'}: it is read "
            "by one worker in one pass (no physical ranges).")
    return Plan(table, server, collection, tuple(reads), key, tuple(vectors), tuple(payload),
                tuple(warnings), indexes)


def _payload_indexes(table: TableInfo, payload: list[PayloadSpec], key_columns: list[str],
                     flags: list[str], auto: bool) -> tuple[PayloadIndexSpec, ...]:
    """Payload indexes to create before loading: the flags, plus mirrors of btree-indexed scalars."""
    by_name = {p.name: p for p in payload}
    out: dict[str, PayloadIndexSpec] = {}
    for item in _split_list(flags):
        name, _, typ = item.partition(":")
        name, typ = name.strip(), typ.strip().lower()
        if name not in by_name:
            raise InputError(f"--qdrant.payload-index {item!r}: {name!r} is not a migrated payload column.",
                             fix=f"payload columns are: {', '.join(by_name) or 'none'}.")
        if not typ:
            typ = _INDEX_TYPE_OF_KIND.get(by_name[name].kind, "")
            if not typ:
                raise InputError(f"--qdrant.payload-index {item!r}: no default index type for "
                                 f"{by_name[name].declared}.",
                                 fix=f"give the type: {name}:keyword (one of {', '.join(PAYLOAD_INDEX_TYPES)}).")
        if typ not in PAYLOAD_INDEX_TYPES:
            raise InputError(f"--qdrant.payload-index {item!r}: unknown index type {typ!r}.",
                             fix=f"use one of {', '.join(PAYLOAD_INDEX_TYPES)}.")
        out[name] = PayloadIndexSpec(name, typ, "--qdrant.payload-index")
    if auto:
        for column in table.btree_columns:
            spec = by_name.get(column)
            typ = _INDEX_TYPE_OF_KIND.get(spec.kind) if spec else None
            if spec and typ and column not in out and column not in key_columns:
                out[column] = PayloadIndexSpec(column, typ, "btree index in PostgreSQL")
    return tuple(out.values())


def plan_fingerprint(plan: Plan) -> str:
    """A hash of everything that decides what the points look like (for resume: a changed plan
    must not resume a copy made with another one)."""
    import hashlib
    import json
    parts = {
        "reads": [(r.sql, r.load_type) for r in plan.reads],
        "key": [plan.key.columns, plan.key.kinds, plan.key.mode],
        "vectors": [(v.name, v.kind, v.size, v.distance, v.datatype) for v in plan.vectors],
        "payload": [(p.name, p.kind) for p in plan.payload],
    }
    if plan.where or plan.payload_keys or plan.payload_shape:  # absent keys keep older fingerprints
        parts["layout"] = [plan.where, list(plan.payload_keys), plan.payload_shape]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shape_differences(expected: CollectionShape, actual: CollectionShape) -> list[str]:
    """Human sentences naming every difference between the plan and an existing collection."""
    diffs: list[str] = []
    for name, (size, distance, datatype) in sorted(expected.dense.items()):
        if name not in actual.dense:
            where = "is a sparse vector" if name in actual.sparse else "is missing"
            diffs.append(f"vector {name!r} {where} in the collection (plan: {size}-d {distance} {datatype})")
            continue
        a_size, a_distance, a_datatype = actual.dense[name]
        if a_size != size:
            diffs.append(f"vector {name!r} has size {a_size} in the collection, {size} in the table")
        if a_distance != distance:
            diffs.append(f"vector {name!r} uses {a_distance} in the collection, the plan says {distance}")
        if a_datatype != datatype:
            diffs.append(f"vector {name!r} is stored as {a_datatype} in the collection, the plan says {datatype}")
    for name in sorted(expected.sparse - actual.sparse):
        diffs.append(f"sparse vector {name!r} is missing in the collection")
    for name in sorted(set(actual.dense) - set(expected.dense) - expected.sparse):
        diffs.append(f"the collection has vector {name!r}, which the table does not provide")
    for name in sorted(actual.sparse - expected.sparse - set(expected.dense)):
        diffs.append(f"the collection has sparse vector {name!r}, which the table does not provide")
    return diffs


def pgvector_feature_check(server: ServerInfo, table: TableInfo, columns: Iterable[str] | None = None) -> None:
    """Explain (instead of failing obscurely) when a table needs a newer pgvector.

    halfvec and sparsevec columns, and bit(n) columns (migrated as binary vectors),
    need pgvector 0.7 or newer. Only the columns that will be migrated count:
    ``columns`` is the --pg.columns selection (empty: every column).
    """
    if server.pgvector is None or server.pgvector_tuple >= (0, 7):
        return
    selected = set(_split_list(columns))
    for c in table.columns:
        if selected and c.name not in selected:
            continue
        if c.type.oid == BIT_OID:
            needs = "which pg2qdrant migrates as a binary vector; binary vectors need pgvector 0.7 or newer"
        elif c.type.name in ("halfvec", "sparsevec") and c.type.extension == "vector":
            needs = "which needs pgvector 0.7 or newer"
        else:
            continue
        raise InputError(
            f"Column {c.name} is {c.declared}, {needs}; this server has pgvector {server.pgvector}.",
            fix="upgrade pgvector (ALTER EXTENSION vector UPDATE) or leave the column out with --pg.columns.",
        )
