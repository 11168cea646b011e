"""How a table becomes a collection: the migration plan.

The plan is decided once, from the catalog and the command line, and then
used by every flow (migrate, verify, sync) so that they cannot disagree:
which columns become which named vectors (size, distance, datatype), which
become payload and how each value is converted, and how point IDs are made.
It also knows how to read each column (the SQL expression and the type
psycopg decodes it as), so reading and mapping line up by construction.

The plan has two sides: the read side (table, ReadColumns, key, payload), used by
source/ and mapping, and the collection (:meth:`Plan.collection_spec`), which is all
a target in destination/ sees. Nothing here does I/O or imports a driver:
:func:`build_plan` takes the catalog facts of source/model.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.options import (  # CollectionOptions: the targets and tests import it from here
    DEFAULT_HNSW_EF_CONSTRUCT,
    DEFAULT_HNSW_M,
    Bm25Options,
    CollectionOptions,
)
from pg2qdrant.core.table import BIT_OID, Column, PgType, ServerInfo, TableInfo, VectorIndex

# --- distances ----------------------------------------------------------------------------

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


# --- kinds ------------------------------------------------------------------------------------
# StrEnums: each member is its own string, so saved fingerprints, JSON and messages keep the
# words they had when these were plain strings.

class VectorKind(StrEnum):
    DENSE = "dense"  # vector
    HALF = "half"  # halfvec
    SPARSE = "sparse"  # sparsevec
    BIT = "bit"  # bit(n), a binary vector


class KeyKind(StrEnum):
    """How a key column is read: as an integer, a UUID, or its PostgreSQL text form."""

    INT = "int"
    UUID = "uuid"
    TEXT = "text"


class PayloadKind(StrEnum):
    """How a payload value is converted (see mapping.PAYLOAD_CONVERTERS); arrays convert per element.

    A payload column is read by psycopg with the loader of its ReadColumn.load_type (binary
    COPY) and then converted by the mapping function registered for its kind.
    """

    INT = "int"
    FLOAT4 = "float4"
    FLOAT8 = "float8"
    BOOL = "bool"
    NUMERIC = "numeric"
    TEXT = "text"
    JSON = "json"
    UUID = "uuid"
    TIMESTAMPTZ = "timestamptz"
    TIMESTAMP = "timestamp"
    DATE = "date"
    TIME = "time"
    TIMETZ = "timetz"
    INTERVAL = "interval"
    BYTEA = "bytea"
    INET = "inet"
    TEXT_FORM = "text_form"  # a type pg2qdrant has no rule for: its PostgreSQL text form


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

# What each kind means in Qdrant, for `inspect` and docs/mapping.md.
KIND_DESCRIPTIONS = {
    PayloadKind.INT: "integer",
    PayloadKind.FLOAT4: "float (shortest decimal that round-trips the float4)",
    PayloadKind.FLOAT8: "float (NaN/Infinity as strings)",
    PayloadKind.BOOL: "bool",
    PayloadKind.NUMERIC: "number when exact, else string with all digits",
    PayloadKind.TEXT: "string",
    PayloadKind.JSON: "nested JSON (integers intact)",
    PayloadKind.UUID: "string (canonical UUID)",
    PayloadKind.TIMESTAMPTZ: "string, RFC 3339 UTC with microseconds",
    PayloadKind.TIMESTAMP: "string, ISO 8601 with microseconds",
    PayloadKind.DATE: "string, YYYY-MM-DD",
    PayloadKind.TIME: "string, HH:MM:SS.ffffff",
    PayloadKind.TIMETZ: "string, HH:MM:SS.ffffff+HH:MM",
    PayloadKind.INTERVAL: "string, ISO 8601 duration",
    PayloadKind.BYTEA: "string, base64",
    PayloadKind.INET: "string",
    PayloadKind.TEXT_FORM: "string (PostgreSQL text form)",
}


def _scalar_kind(t: PgType) -> tuple[PayloadKind, bool]:
    """(kind, read as col::text) of a scalar type."""
    # Strings read as their PostgreSQL text form (col::text): enums, citext, and "char",
    # a single byte that PostgreSQL prints as \ooo when it is not ASCII (psycopg would decode
    # the byte as UTF-8, which fails on such bytes).
    if (t.typtype == "e" or (t.extension == "citext" and t.name == "citext")
            or (t.schema == "pg_catalog" and t.name == "char")):
        return PayloadKind.TEXT, True
    if t.schema == "pg_catalog" and t.name in _SCALAR_KINDS:
        return PayloadKind(_SCALAR_KINDS[t.name]), False
    return PayloadKind.TEXT_FORM, True


# --- plan dataclasses -----------------------------------------------------------------------

def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ReadColumn:
    """One expression of the SELECT that the reader copies, and how psycopg decodes it."""

    column: str
    load_type: str | None  # psycopg type name it is decoded as ('int4', 'text[]'); None for raw bytes
    cast: str | None = None  # SQL type the column is cast to (built from catalog names); None: bare column
    raw_oid: int | None = None  # vectors: the type OID whose bytes go unparsed to the vector decoder

    @property
    def sql(self) -> str:
        """The SQL expression over quoted identifiers (safe: built from catalog names)."""
        return quote_ident(self.column) + (f"::{self.cast}" if self.cast else "")


@dataclass(frozen=True)
class IndexSettings:
    """How Qdrant indexes one dense vector, each setting with where it came from (`inspect` shows
    them): HNSW ``m`` and ``ef_construct``, quantization, and notes on pgvector indexes that have no
    Qdrant equivalent (IVFFlat)."""

    m: int
    m_source: str
    ef_construct: int
    ef_construct_source: str
    quantization: str | None  # None | "int8" (the flag) | "binary" (a binary_quantize(col) index)
    quantization_source: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VectorSpec:
    name: str  # named vector in Qdrant == column name
    column: str
    kind: VectorKind
    size: int | None  # None for sparse
    distance: str | None  # None for sparse (Qdrant scores sparse vectors by dot product)
    distance_source: str
    datatype: str  # float32 | float16 | uint8 | sparse
    declared: str
    read_index: int
    size_from_data: bool = False
    index: IndexSettings | None = None  # dense vectors: HNSW and quantization (sparse: None)

    @property
    def is_sparse(self) -> bool:
        return self.kind == VectorKind.SPARSE


@dataclass(frozen=True)
class Bm25Spec:
    """``--qdrant.bm25``: a sparse vector (IDF modifier) holding Qdrant's BM25 of a text column."""

    name: str
    column: str
    declared: str
    read_index: int  # the text column's read (the payload's: the text stays in the payload)
    options: Bm25Options
    source: str = "--qdrant.bm25"  # or the layout whose hybrid mode reads it

    def describe(self) -> str:
        o = self.options
        return (f"BM25 of {self.column} ({o.language}, k={o.k}, b={o.b}, avg_len={o.avg_len}"
                + ("" if o.stemming else ", no stemming") + ("" if o.stopwords else ", no stopwords")
                + ("" if o.lowercase else ", case kept") + (", ASCII folding" if o.ascii_folding else "") + ")")


@dataclass(frozen=True)
class PayloadSpec:
    name: str
    column: str
    declared: str
    kind: PayloadKind  # of the value, or of each element of an array
    read_index: int
    array: bool = False

    def is_scalar(self, *kinds: PayloadKind) -> bool:
        """A single value (not an array) of one of ``kinds``."""
        return not self.array and self.kind in kinds

    @property
    def description(self) -> str:
        return ("list of " if self.array else "") + KIND_DESCRIPTIONS[self.kind]


ID_MODES = ("native", "reference", "hash")


@dataclass(frozen=True)
class KeySpec:
    columns: tuple[str, ...]
    kinds: tuple[KeyKind, ...]  # per column (text = the key's text form)
    read_indexes: tuple[int, ...]
    mode: str  # native | reference | hash
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
        if kind == KeyKind.INT:
            return "integer key as integer ID (negative keys: uuid5 of their text)"
        if kind == KeyKind.UUID:
            return "UUID key as UUID ID"
        if self.mode == "hash":
            return "uuid5(NAMESPACE_URL, key text), also for UUID-shaped text (hash mode)"
        return "UUID-shaped text as that UUID, else uuid5(NAMESPACE_URL, key text) (as the reference tool)"


# --- the collection: what a target sees -------------------------------------------------------

def vector_label(name: str, *, quoted: bool = False) -> str:
    """How messages name a vector: Qdrant's unnamed default vector is "", which would print as nothing.

    ``quoted``: in a sentence ("vector 'embedding'", "the unnamed vector")."""
    if quoted:
        return f"vector {name!r}" if name else "the unnamed vector"
    return name or "unnamed vector"


@dataclass(frozen=True)
class CollectionShape:
    """The vector configuration of a collection, as compared before any write."""

    dense: dict[str, tuple[int, str, str]]  # name -> (size, distance, datatype)
    sparse: frozenset[str]
    idf: frozenset[str] = frozenset()  # the sparse vectors with the IDF modifier (BM25's)

    def describe(self) -> str:
        parts = [f"{vector_label(n)}: {s}-d {d} {t}" for n, (s, d, t) in sorted(self.dense.items())]
        parts += [f"{n}: sparse" + (" (IDF)" if n in self.idf else "") for n in sorted(self.sparse)]
        return "; ".join(parts) or "no vectors"


PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "uuid", "text", "geo")
TENANT_INDEX = "tenant"  # a keyword index marked is_tenant (layouts: --qdrant.tenant-column)
_INDEX_TYPE_OF_KIND = {
    PayloadKind.INT: "integer", PayloadKind.FLOAT4: "float", PayloadKind.FLOAT8: "float",
    PayloadKind.BOOL: "bool", PayloadKind.TEXT: "keyword", PayloadKind.UUID: "uuid",
    PayloadKind.TIMESTAMPTZ: "datetime", PayloadKind.TIMESTAMP: "datetime", PayloadKind.DATE: "datetime",
}


@dataclass(frozen=True)
class PayloadIndexSpec:
    field: str
    type: str  # one of PAYLOAD_INDEX_TYPES, or TENANT_INDEX
    source: str  # why: "--qdrant.payload-index" or "btree index <name> in PostgreSQL"


@dataclass(frozen=True)
class VectorConfig:
    """One vector of the collection as Qdrant configures it."""

    name: str  # "" is Qdrant's unnamed default vector
    size: int | None  # None for sparse
    distance: str | None  # None for sparse
    datatype: str  # float32 | float16 | uint8 | sparse
    sparse: bool = False
    modifier: str | None = None  # sparse only: "idf" (BM25 vectors: Qdrant weighs each term by its IDF)
    hnsw_m: int | None = None  # dense vectors: this vector's HNSW (see CollectionSpec.hnsw)
    hnsw_ef_construct: int | None = None
    quantization: str | None = None  # None | "int8" | "binary"


@dataclass(frozen=True)
class CollectionSpec:
    """Everything a target needs to create, check and finish a collection, and nothing of the
    source (no table, no SQL): destination/ sees only this."""

    name: str
    vectors: tuple[VectorConfig, ...]
    options: CollectionOptions = field(default_factory=CollectionOptions)

    @property
    def dense_vectors(self) -> tuple[VectorConfig, ...]:
        return tuple(v for v in self.vectors if not v.sparse)

    @property
    def sparse_vectors(self) -> tuple[VectorConfig, ...]:
        return tuple(v for v in self.vectors if v.sparse)

    @property
    def hnsw(self) -> tuple[int, int]:
        """The collection's HNSW (m, ef_construct): the one its dense vectors share, else the flags'
        (or the defaults); a vector that differs gets its own (``vector_hnsw``)."""
        shared = {(v.hnsw_m, v.hnsw_ef_construct) for v in self.dense_vectors}
        if len(shared) == 1 and None not in next(iter(shared)):
            return next(iter(shared))  # type: ignore[return-value]
        o = self.options
        return (DEFAULT_HNSW_M if o.hnsw_m is None else o.hnsw_m,
                DEFAULT_HNSW_EF_CONSTRUCT if o.hnsw_ef_construct is None else o.hnsw_ef_construct)

    def vector_hnsw(self, vector: VectorConfig) -> tuple[int, int] | None:
        """A dense vector's own HNSW (m, ef_construct) where it differs from the collection's."""
        own = (vector.hnsw_m, vector.hnsw_ef_construct)
        return None if vector.sparse or None in own or own == self.hnsw else own  # type: ignore[return-value]

    @property
    def builds_hnsw(self) -> bool:
        """Some vector has an HNSW index to build once loaded (m > 0)."""
        return self.hnsw[0] > 0 or any((self.vector_hnsw(v) or (0, 0))[0] > 0 for v in self.dense_vectors)

    @property
    def quantization(self) -> str | None:
        """The collection's quantization: the one its dense vectors share (else per vector)."""
        shared = {v.quantization for v in self.dense_vectors}
        return shared.pop() if len(shared) == 1 else None

    def vector_quantization(self, vector: VectorConfig) -> str | None:
        """A dense vector's own quantization where the collection has none for all."""
        return None if vector.sparse or self.quantization is not None else vector.quantization

    def shape(self) -> CollectionShape:
        return CollectionShape(
            dense={v.name: (v.size or 0, v.distance or "", v.datatype) for v in self.dense_vectors},
            sparse=frozenset(v.name for v in self.sparse_vectors),
            idf=frozenset(v.name for v in self.sparse_vectors if v.modifier == "idf"),
        )


@dataclass(frozen=True)
class Plan:
    """The read side (table, SELECT list, key, payload) and the collection it becomes."""

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
    bm25: tuple[Bm25Spec, ...] = ()  # sparse vectors computed from text columns (--qdrant.bm25)

    @property
    def dense_vectors(self) -> tuple[VectorSpec, ...]:
        return tuple(v for v in self.vectors if not v.is_sparse)

    @property
    def sparse_vectors(self) -> tuple[VectorSpec, ...]:
        return tuple(v for v in self.vectors if v.is_sparse)

    def collection_spec(self, options: CollectionOptions | None = None) -> CollectionSpec:
        """The collection this plan writes, for a target (``options``: how to create it; its flags
        win over what the plan took from the pgvector indexes)."""
        options = options or CollectionOptions()

        def config(v: VectorSpec) -> VectorConfig:
            if v.is_sparse or v.index is None:
                return VectorConfig(v.name, v.size, v.distance, v.datatype, v.is_sparse)
            i = v.index
            return VectorConfig(
                v.name, v.size, v.distance, v.datatype, False,
                hnsw_m=i.m if options.hnsw_m is None else options.hnsw_m,
                hnsw_ef_construct=i.ef_construct if options.hnsw_ef_construct is None else options.hnsw_ef_construct,
                quantization=i.quantization if options.quantization is None else options.quantization)

        vectors = tuple(config(v) for v in self.vectors)
        vectors += tuple(VectorConfig(b.name, None, None, "sparse", True, "idf") for b in self.bm25)
        return CollectionSpec(self.collection, vectors, options)

    @property
    def index_notes(self) -> tuple[str, ...]:
        """What the plan says of the pgvector indexes (IVFFlat has no Qdrant equivalent, ...)."""
        return tuple(n for v in self.vectors if v.index for n in v.index.notes)

    def with_vector_size(self, name: str, size: int) -> Plan:
        vectors = tuple(
            VectorSpec(**{**v.__dict__, "size": size}) if v.name == name else v for v in self.vectors
        )
        return Plan(**{**self.__dict__, "vectors": vectors})


# --- reading each column --------------------------------------------------------------------

def _vector_kind(col: Column) -> VectorKind | None:
    t = col.type
    if t.extension == "vector" and t.name in ("vector", "halfvec", "sparsevec"):
        return {"vector": VectorKind.DENSE, "halfvec": VectorKind.HALF, "sparsevec": VectorKind.SPARSE}[t.name]
    if t.oid == BIT_OID:
        return VectorKind.BIT
    return None


_DATATYPES = {VectorKind.DENSE: "float32", VectorKind.HALF: "float16", VectorKind.SPARSE: "sparse",
              VectorKind.BIT: "uint8"}


def _type_sql(t: PgType) -> str:
    return f"{quote_ident(t.schema)}.{quote_ident(t.name)}"


def _payload_read(col: Column) -> tuple[PayloadKind, bool, ReadColumn]:
    """(kind, is an array, read) for a payload column.

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
        kind, as_text = _scalar_kind(t.elem)
        if as_text:
            return PayloadKind.TEXT, True, ReadColumn(col.name, "text[]", cast="text[]")
        cast = _type_sql(t.elem) + "[]" if is_domain else None
        return kind, True, ReadColumn(col.name, f"{t.elem.name}[]", cast=cast)
    kind, as_text = _scalar_kind(t)
    if as_text:
        return kind, False, ReadColumn(col.name, "text", cast="text")
    return kind, False, ReadColumn(col.name, t.name, cast=_type_sql(t) if is_domain else None)


def _key_read(col: Column) -> tuple[KeyKind, ReadColumn]:
    """(kind, read) for a key column: int, uuid, or its text form.

    Integer and UUID keys are read exactly like the payload column (one read
    serves both); any other key is read as its PostgreSQL text form.
    """
    name = col.type.name if col.type.schema == "pg_catalog" and col.type.category != "A" else ""
    if name in ("int2", "int4", "int8", "uuid"):
        return (KeyKind.UUID if name == "uuid" else KeyKind.INT), _payload_read(col)[2]
    return KeyKind.TEXT, ReadColumn(col.name, "text", cast="text")


def _vector_read(col: Column) -> ReadColumn:
    """A vector's wire bytes, decoded by mapping in bulk (a vector domain's bytes are the vector's)."""
    cast = _type_sql(col.type) if col.declared_oid != col.type.oid else None
    return ReadColumn(col.name, None, cast=cast, raw_oid=col.type.oid)


class _Reads:
    """The SELECT list being built: one read per distinct expression (key and payload share)."""

    def __init__(self) -> None:
        self.reads: list[ReadColumn] = []
        self._at: dict[ReadColumn, int] = {}

    def add(self, col: Column, read: ReadColumn) -> int:
        if read not in self._at:
            self._at[read] = len(self.reads)
            self.reads.append(read)
        return self._at[read]


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


# complexity: the plan's steps in order (key, vectors, payload, indexes, warnings); each is a call, the branches are
# the flags that skip them.
def build_plan(
    table: TableInfo,
    server: ServerInfo,
    *,
    collection: str,
    key_columns: list[str] | None = None,
    key_source: str = "--pg.key-column",
    columns: list[str] | None = None,
    distance_overrides: dict[str, str] | None = None,
    distance_source: str = "--qdrant.distance-metric",
    id_mode: str = "native",
    payload_index_flags: list[str] | None = None,
    auto_payload_index: bool = True,
    index_flags: CollectionOptions | None = None,
) -> Plan:
    """Decide the whole mapping from catalog facts and options (raises InputError).

    ``key_source`` and ``distance_source`` say who named the key columns and the distances (the
    flags, a layout, the demo): the plan shows it, and errors name it. ``index_flags``: the
    --qdrant.hnsw-m, --qdrant.hnsw-ef-construct and --qdrant.quantization given (None: not given),
    which win over the pgvector indexes."""
    if not collection or not collection.strip():
        raise InputError("--qdrant.collection is empty.", fix="name the target collection.")
    if id_mode not in ID_MODES:
        raise InputError(f"--migration.id-mode {id_mode!r} is not known.", fix="use native, reference or hash.")
    warnings: list[str] = []
    selected = _split_list(columns)
    overrides = dict(distance_overrides or {})
    if selected:
        _unknown_columns(table, selected, "--pg.columns")
    key_columns, key_source = _key_columns(table, _split_list(key_columns), key_source)
    chosen = [c for c in table.columns if not selected or c.name in selected or c.name in key_columns]
    vector_columns = _vector_columns(table, chosen, selected, key_columns, overrides, distance_source)

    reads = _Reads()
    # Key first: its reads come first in every row.
    key = _key_spec(table, key_columns, key_source, id_mode, reads)
    flags = index_flags or CollectionOptions()
    vectors = [_vector_spec(col, table, overrides, distance_source, reads, warnings, flags)
               for col in vector_columns]
    payload = []
    for col in chosen:
        if _vector_kind(col) is None:
            kind, array, read = _payload_read(col)
            payload.append(PayloadSpec(col.name, col.name, col.declared, kind, reads.add(col, read), array))

    indexes = _payload_indexes(table, payload, key_columns, payload_index_flags or [], auto_payload_index)
    if table.relkind in ("v", "f"):
        warnings.append(
            f"{table.display} is a {'view' if table.relkind == 'v' else 'foreign table'}: it is read "
            "by one worker in one pass (no physical ranges).")
    return Plan(table, server, collection, tuple(reads.reads), key, tuple(vectors), tuple(payload),
                tuple(warnings), indexes)


def _key_columns(table: TableInfo, named: list[str], named_by: str) -> tuple[list[str], str]:
    """The key's columns and where they came from: ``named_by`` (--pg.key-column, a layout), else the primary key."""
    if named:
        _unknown_columns(table, named, named_by)
        columns, source = named, named_by
    elif table.primary_key:
        columns, source = list(table.primary_key), "primary key"
    else:
        candidates = [", ".join(k) for k in table.unique_keys] or [
            c.name for c in table.columns if c.name.lower() in ("id", "uuid", "pk") and _vector_kind(c) is None]
        raise InputError(
            f"Table {table.display} has no primary key, so the point ID column must be named.",
            fix="pass --pg.key-column COLUMN (a column with unique, non-NULL values)"
            + (f"; candidates: {'; '.join(candidates)}." if candidates else "."),
        )
    for kc in columns:
        if _vector_kind(table.column(kc)) is not None:
            raise InputError(f"Key column {kc!r} is a vector column.", fix="use a scalar key column.")
    return columns, source


def _vector_columns(table: TableInfo, chosen: list[Column], selected: list[str], key_columns: list[str],
                    overrides: dict[str, str], overrides_by: str) -> list[Column]:
    """The migrated vector columns (at least one; --qdrant.distance-metric names only them)."""
    found = [c for c in chosen if _vector_kind(c) is not None]
    if not found:
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
    unknown_overrides = [n for n in overrides if n not in {c.name for c in found}]
    if unknown_overrides:
        raise InputError(
            f"{overrides_by} names {', '.join(map(repr, unknown_overrides))}, "
            "which is not a migrated vector column.",
            fix=f"vector columns are: {', '.join(c.name for c in found)}.",
        )
    return found


def _key_spec(table: TableInfo, key_columns: list[str], source: str, id_mode: str, reads: _Reads) -> KeySpec:
    kinds, read_indexes = [], []
    for name in key_columns:
        col = table.column(name)
        kind, read = _key_read(col)
        kinds.append(kind)
        read_indexes.append(reads.add(col, read))
    unique = any(set(u) == set(key_columns) for u in table.unique_keys)
    return KeySpec(tuple(key_columns), tuple(kinds), tuple(read_indexes), id_mode, unique, source)


def _vector_spec(col: Column, table: TableInfo, overrides: dict[str, str], overrides_by: str, reads: _Reads,
                 warnings: list[str], flags: CollectionOptions) -> VectorSpec:
    kind = _vector_kind(col)
    assert kind is not None
    indexes = [i for i in table.vector_indexes if i.column == col.name]
    distance, source = _distance(col, kind, indexes, overrides, overrides_by, warnings)
    size = None if kind == VectorKind.SPARSE else (col.typmod if col.typmod > 0 else None)
    return VectorSpec(
        name=col.name, column=col.name, kind=kind, size=size, distance=distance,
        distance_source=source, datatype=_DATATYPES[kind], declared=col.declared,
        read_index=reads.add(col, _vector_read(col)),
        size_from_data=(kind != VectorKind.SPARSE and size is None),
        index=None if kind == VectorKind.SPARSE else index_settings(col.name, indexes, flags),
    )


IVFFLAT_RECALL_NOTE = (
    "Qdrant has no IVFFlat: the collection gets an HNSW index. If your recall baseline was measured "
    "with IVFFlat (lower recall), Qdrant's HNSW may return better results: a difference from that "
    "baseline can be an improvement, not a mismatch.")


def index_settings(column: str, indexes: list[VectorIndex], flags: CollectionOptions) -> IndexSettings:
    """A dense vector's HNSW and quantization: the flags, else its pgvector indexes, else the defaults.

    HNSW ``m`` and ``ef_construct`` come from the column's HNSW index (one on the column itself, or a
    cast of it, before one on ``binary_quantize(column)``): the settings it was built with, pgvector's
    defaults (16, 64) where its WITH (...) gives none. An index on ``binary_quantize(column)`` asks for
    binary quantization (Qdrant rescoring with the original vectors at query time)."""
    hnsw = sorted((i for i in indexes if i.method == "hnsw"), key=lambda i: i.binary_quantized)
    idx = hnsw[0] if hnsw else None

    def hnsw_value(flag: int | None, flag_name: str, setting: str, default: int) -> tuple[int, str]:
        if flag is not None:
            return flag, flag_name
        if idx is None:
            return default, "default"
        given = idx.option(setting)
        value = idx.setting(setting)
        assert value is not None
        return value, f"from index {idx.name}" + ("" if given is not None else f" (pgvector's default {setting})")

    m, m_source = hnsw_value(flags.hnsw_m, "--qdrant.hnsw-m", "m", DEFAULT_HNSW_M)
    ef, ef_source = hnsw_value(flags.hnsw_ef_construct, "--qdrant.hnsw-ef-construct", "ef_construction",
                               DEFAULT_HNSW_EF_CONSTRUCT)
    binary = next((i for i in indexes if i.binary_quantized), None)
    notes = []
    if flags.quantization is not None:
        quantization, q_source = flags.quantization, "--qdrant.quantization"
        if binary is not None:
            q_source += f" (wins over index {binary.name} on binary_quantize)"
    elif binary is not None:
        quantization, q_source = "binary", f"from index {binary.name} (binary_quantize({column}))"
        notes.append(f"{column}: binary quantization (from index {binary.name}): search with rescore=true and "
                     "oversampling (e.g. 2.0) in the query's params.quantization, as verify does, to re-rank "
                     "with the original vectors as pgvector's binary_quantize queries do.")
    else:
        quantization, q_source = None, "none"
    for i in indexes:
        if i.method == "ivfflat":
            notes.append(f"{column}: index {i.name} is IVFFlat (lists={i.setting('lists')}). {IVFFLAT_RECALL_NOTE}")
    return IndexSettings(m, m_source, ef, ef_source, quantization, q_source, tuple(notes))


def _distance(col: Column, kind: VectorKind, indexes: list, overrides: dict[str, str], overrides_by: str,
              warnings: list[str]) -> tuple[str | None, str]:
    """(distance, why): the overrides (``overrides_by``: the flag, the demo), else the vector index's
    operator class, else a default."""
    if kind == VectorKind.SPARSE:
        if col.name in overrides:
            raise InputError(
                f"{overrides_by} {col.name}=... : {col.name} is a sparsevec column and "
                "Qdrant sparse vectors have no configurable distance (always dot product).",
                fix=f"remove {col.name} from --qdrant.distance-metric.",
            )
        if indexes and distance_of_opclass(indexes[0].opclass) not in ("Dot", None):
            warnings.append(
                f"{col.name}: index {indexes[0].name} uses {indexes[0].opclass}; Qdrant scores sparse "
                "vectors by dot product only, so scores and order can differ from pgvector.")
        return None, "sparse vectors are scored by dot product in Qdrant"
    if col.name in overrides:
        return overrides[col.name], overrides_by
    # An index on binary_quantize(col) searches the bits by Hamming distance: it says nothing of
    # the distance of the vectors themselves (pgvector's README re-ranks its results with <=>).
    binary = [i.name for i in indexes if i.binary_quantized]
    indexes = [i for i in indexes if not i.binary_quantized]
    if indexes:
        return _distance_of_indexes(col, kind, indexes, warnings)
    if kind == VectorKind.BIT:
        return "Manhattan", "bit vectors: Manhattan on 0/1 equals Hamming distance"
    warnings.append(
        f"{col.name}: no HNSW or IVFFlat index tells which distance you search with"
        + (f" (index {binary[0]} on binary_quantize({col.name}) compares bits, not the vectors)" if binary else "")
        + f"; using Cosine. Pass --qdrant.distance-metric {col.name}=dot|euclid|manhattan|cosine to choose.")
    return "Cosine", "default (no HNSW/IVFFlat index on the column)"


def _distance_of_indexes(col: Column, kind: VectorKind, indexes: list, warnings: list[str]) -> tuple[str, str]:
    """The distance the first vector index searches with (warnings when unknown or disputed)."""
    idx = indexes[0]
    distance = distance_of_opclass(idx.opclass)
    source = f"index {idx.name} ({idx.method}, {idx.opclass})"
    if distance is None:
        distance = "Manhattan" if kind == VectorKind.BIT else "Cosine"
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
    return distance, source


# complexity: the flags' indexes, then mirrors of btree-indexed columns, each checked against the payload it must
# exist in.
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
            typ = "" if by_name[name].array else _INDEX_TYPE_OF_KIND.get(by_name[name].kind, "")
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
            typ = _INDEX_TYPE_OF_KIND.get(spec.kind) if spec and not spec.array else None
            if spec and typ and column not in out and column not in key_columns:
                out[column] = PayloadIndexSpec(column, typ, "btree index in PostgreSQL")
    return tuple(out.values())


_BM25_TYPES = ("text", "varchar", "bpchar")


def _is_text(col: Column) -> bool:
    t = col.type
    return ((t.schema == "pg_catalog" and t.name in _BM25_TYPES and t.category != "A")
            or (t.extension == "citext" and t.name == "citext"))


def bm25_vectors(plan: Plan, columns: dict[str, str], options: Bm25Options, *,
                 source: str = "--qdrant.bm25") -> tuple[Bm25Spec, ...]:
    """The BM25 vectors ``columns`` (column -> vector name; "": ``<column>-bm25``) ask for, checked
    against the plan (its vectors named as they will be): a migrated text column each, distinct names."""
    by_column = {p.column: p for p in plan.payload}
    taken = {v.name for v in plan.vectors}
    out: list[Bm25Spec] = []
    for column, name in columns.items():
        flag = f"{source} {column}" + (f"={name}" if name else "")
        col = plan.table.column(column)
        if col is None:
            raise InputError(f"{flag}: {plan.table.display} has no column {column!r}.",
                             fix=f"columns of {plan.table.display} are: "
                                 f"{', '.join(c.name for c in plan.table.columns)}.")
        if not _is_text(col):
            texts = [c.name for c in plan.table.columns if _is_text(c)]
            raise InputError(f"{flag}: {column} is {col.declared}; BM25 needs a text column "
                             "(text, varchar, char or citext).",
                             fix=f"choose a text column ({', '.join(texts) or 'the table has none'}).")
        if column not in by_column:
            raise InputError(f"{flag}: {column} is not migrated (--pg.columns leaves it out).",
                             fix=f"add {column} to --pg.columns: the BM25 vector is computed from it.")
        name = name or f"{column}-bm25"
        if name in taken:
            raise InputError(f"{flag}: the vector name {name!r} is already taken by another vector.",
                             fix=f"name the BM25 vector: --qdrant.bm25 {column}=OTHER_NAME.")
        taken.add(name)
        out.append(Bm25Spec(name, column, col.declared, by_column[column].read_index, options, source))
    return tuple(out)


def plan_fingerprint(plan: Plan) -> str:
    """A hash of everything that decides what the points look like (for resume: a changed plan
    must not resume a copy made with another one)."""
    import dataclasses
    import hashlib
    import json
    parts = {
        # In the words of earlier versions (saved progress names its fingerprint): vectors were
        # read as 'raw:<oid>', arrays converted as 'array:<element kind>'.
        "reads": [(r.sql, f"raw:{r.raw_oid}" if r.raw_oid is not None else r.load_type) for r in plan.reads],
        "key": [plan.key.columns, plan.key.kinds, plan.key.mode],
        "vectors": [(v.name, v.kind, v.size, v.distance, v.datatype) for v in plan.vectors],
        "payload": [(p.name, f"array:{p.kind}" if p.array else p.kind) for p in plan.payload],
    }
    if plan.where or plan.payload_keys or plan.payload_shape:  # absent keys keep older fingerprints
        parts["layout"] = [plan.where, list(plan.payload_keys), plan.payload_shape]
    if plan.bm25:
        parts["bm25"] = [(b.name, b.column, dataclasses.astuple(b.options)) for b in plan.bm25]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shape_differences(expected: CollectionShape, actual: CollectionShape) -> list[str]:
    """Human sentences naming every difference between the plan and an existing collection."""
    diffs: list[str] = []
    for name, (size, distance, datatype) in sorted(expected.dense.items()):
        if name not in actual.dense:
            where = "is a sparse vector" if name in actual.sparse else "is missing"
            diffs.append(f"{vector_label(name, quoted=True)} {where} in the collection "
                         f"(plan: {size}-d {distance} {datatype})")
            continue
        a_size, a_distance, a_datatype = actual.dense[name]
        vector = vector_label(name, quoted=True)
        if a_size != size:
            diffs.append(f"{vector} has size {a_size} in the collection, {size} in the table")
        if a_distance != distance:
            diffs.append(f"{vector} uses {a_distance} in the collection, the plan says {distance}")
        if a_datatype != datatype:
            diffs.append(f"{vector} is stored as {a_datatype} in the collection, the plan says {datatype}")
    for name in sorted(expected.sparse - actual.sparse):
        diffs.append(f"sparse vector {name!r} is missing in the collection")
    for name in sorted((expected.idf & actual.sparse) - actual.idf):  # BM25 scores need the collection's IDF
        diffs.append(f"sparse vector {name!r} has no IDF modifier in the collection (BM25 needs it: without it a "
                     "query weighs common and rare words alike)")
    for name in sorted((actual.idf & expected.sparse) - expected.idf):
        diffs.append(f"sparse vector {name!r} has the IDF modifier in the collection, the plan has none")
    for name in sorted(set(actual.dense) - set(expected.dense) - expected.sparse):
        diffs.append(f"the collection has {vector_label(name, quoted=True)}, which the table does not provide")
    for name in sorted(actual.sparse - expected.sparse - set(expected.dense)):
        diffs.append(f"the collection has sparse vector {name!r}, which the table does not provide")
    return diffs


@dataclass(frozen=True)
class ShapeCheck:
    """A collection as it is, held against the spec: the one shape check of migrate, sync and verify."""

    spec: CollectionSpec
    actual: CollectionShape | None  # None: the collection does not exist
    differences: tuple[str, ...]

    @property
    def exists(self) -> bool:
        return self.actual is not None

    @property
    def expected(self) -> CollectionShape:
        return self.spec.shape()

    def require_match(self, problem: str, fix: str) -> None:
        """InputError naming every difference, when the existing collection does not fit."""
        if self.differences:
            raise InputError(
                f"Collection {self.spec.name!r} {problem}: " + "; ".join(self.differences)
                + f". (The table needs: {self.expected.describe()}.)", fix=fix)


def check_shape(spec: CollectionSpec, actual: CollectionShape | None) -> ShapeCheck:
    """Compare ``actual`` (a target's ``shape()``, None when missing) with ``spec``."""
    diffs = () if actual is None else tuple(shape_differences(spec.shape(), actual))
    return ShapeCheck(spec, actual, diffs)


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
