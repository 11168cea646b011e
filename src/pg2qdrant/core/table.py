"""The source table as the rest of pg2qdrant sees it: plain dataclasses, no psycopg.

:mod:`pg2qdrant.source.catalog` fills these from PostgreSQL's catalog;
:mod:`pg2qdrant.core.plan` decides on them without importing a driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PGVECTOR_TYPES = ("vector", "halfvec", "sparsevec")
BIT_OID = 1560  # pg_catalog.bit: fixed-length bit string, pgvector's binary vector


@dataclass(frozen=True)
class PgType:
    """A type after domains are resolved to their base type."""

    oid: int
    name: str  # typname
    schema: str
    typtype: str  # b base, e enum, r range, c composite, m multirange, p pseudo
    category: str  # typcategory: A array, N numeric, S string, ...
    extension: str | None  # name of the extension that owns it (e.g. 'vector', 'citext')
    elem: PgType | None = None  # element type of an array (resolved)


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    declared: str  # format_type(): what the user wrote, e.g. vector(384), my_domain
    declared_oid: int  # the column's own type (a domain or array of one differs from .type)
    type: PgType  # resolved base type
    typmod: int  # of the base type (domains carry their own typmod)
    not_null: bool


#: What pgvector builds an index with when its WITH (...) leaves a setting out (pgvector's README:
#: HNSW ``m`` 16 and ``ef_construction`` 64, IVFFlat ``lists`` 100).
PGVECTOR_INDEX_DEFAULTS = {"m": 16, "ef_construction": 64, "lists": 100}


@dataclass(frozen=True)
class VectorIndex:
    """An HNSW or IVFFlat index whose operator class names the distance the user searched with.

    ``expression`` is the indexed expression when it is not the bare column (e.g.
    ``binary_quantize(embedding)::bit(3)`` or ``(embedding)::halfvec(3)``); ``options`` the
    index's reloptions as written in ``WITH (...)`` (only the settings the user gave: see
    ``setting`` for pgvector's defaults)."""

    name: str
    column: str
    method: str  # hnsw | ivfflat
    opclass: str
    expression: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def binary_quantized(self) -> bool:
        """An index on ``binary_quantize(column)``: pgvector's binary quantization of the column."""
        return self.expression is not None and self.expression.lstrip("(").startswith("binary_quantize(")

    def option(self, name: str) -> int | None:
        """A setting given in ``WITH (...)`` (None: not given)."""
        value = dict(self.options).get(name)
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    def setting(self, name: str) -> int | None:
        """The value the index was built with: the one given, else pgvector's default."""
        given = self.option(name)
        return given if given is not None else PGVECTOR_INDEX_DEFAULTS.get(name)


class _Relation:
    """schema + name of a relation, quoted for SQL and shown to users."""

    schema: str
    name: str


    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Leaf(_Relation):
    """A relation that physically stores rows of the table (itself, a partition or a child)."""

    oid: int
    schema: str
    name: str
    relkind: str
    pages: int  # from pg_relation_size at introspection time
    estimated_rows: int  # reltuples, -1 when never analyzed


@dataclass(frozen=True)
class TableInfo(_Relation):
    oid: int
    schema: str
    name: str
    relkind: str  # r table, p partitioned, v view, m matview, f foreign
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    unique_keys: tuple[tuple[str, ...], ...]  # non-partial, column-only, all NOT NULL
    vector_indexes: tuple[VectorIndex, ...]
    btree_columns: tuple[str, ...]  # single columns leading a btree index
    leaves: tuple[Leaf, ...]
    # A view synced through a base table (CDC cannot publish a view; see layouts.follow_changes):
    # the tables whose row changes are read again through the view.
    change_tables: tuple[Leaf, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def estimated_rows(self) -> int:
        return sum(max(leaf.estimated_rows, 0) for leaf in self.leaves)


@dataclass(frozen=True)
class ServerInfo:
    version_num: int
    version: str
    database: str
    encoding: str
    pgvector: str | None  # installed extension version, None when absent
    system_identifier: str | None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def pgvector_tuple(self) -> tuple[int, ...]:
        if not self.pgvector:
            return ()
        return tuple(int(p) for p in self.pgvector.split(".") if p.isdigit())
