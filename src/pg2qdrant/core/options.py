"""What a run is told to do, one dataclass per concern, with every default written once.

The command line's options take their defaults from these fields (``default_of``), so a default
changed here changes `--help` and the library alike. ``MigrationOptions`` is all of them together:
what the migrate, verify and sync flows receive. A command that needs less takes less
(`state list` / `state clear`: a ``TargetConfig`` and a ``StateConfig``).

Kept free of heavy imports (no psycopg, numpy or qdrant-client): the CLI imports it to build `--help`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.retry import RetryPolicy

READ_BATCH_ROWS = 1024  # rows mapped at a time: amortises numpy calls, bounds memory per batch



ROWS_PER_RANGE = 50_000  # a range is the unit of parallel work and of resume (--migration.range-rows)


def default_of(cls: type, name: str) -> Any:
    """The default of dataclass field ``cls.name``: the one place it is written (click options read it)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise LookupError(f"{cls.__name__}.{name} has no default")


DEFAULT_HNSW_M = 16  # Qdrant's defaults, for a vector without a pgvector HNSW index and no flag
DEFAULT_HNSW_EF_CONSTRUCT = 100
#: Approximate searches (verify's) of a quantized collection: twice the candidates by the quantized
#: vectors, re-ranked with the original ones (rescore=true), as Qdrant's quantization guide advises.
RESCORE_OVERSAMPLING = 2.0
QUANTIZATIONS = ("int8",)  # --qdrant.quantization; "binary" comes from a binary_quantize(col) index


@dataclass(frozen=True)
class CollectionOptions:
    """How the collection is created and bulk-loaded (only used when we create it).

    ``hnsw_m``, ``hnsw_ef_construct`` and ``quantization`` are the flags: None when not given, and
    then each vector's come from its pgvector index, else the defaults above (core/plan.py)."""

    hnsw_m: int | None = None  # restored after the load; 0 keeps the collection without HNSW
    hnsw_ef_construct: int | None = None
    on_disk: bool | None = None  # None: Qdrant's default (vectors in RAM)
    quantization: str | None = None  # "int8" (None: a binary_quantize index's binary, else none)
    shard_number: int | None = None  # None: the server's default
    replication_factor: int | None = None
    payload_indexes: tuple[tuple[str, str], ...] = ()  # (field, type), created before loading


@dataclass(kw_only=True)
class SourceConfig:
    """Which rows to read: the PostgreSQL table and the part of it that is migrated."""

    pg_url: str
    table: str
    key_columns: list[str] = field(default_factory=list)  # empty: the primary key
    key_source: str = "--pg.key-column"  # who named key_columns (a layout does too): the plan says so
    columns: list[str] = field(default_factory=list)  # empty: all
    where: str | None = None  # SQL condition, validated (layouts.check_where)


@dataclass(kw_only=True)
class TargetConfig:
    """How to reach the Qdrant target: all a connection needs."""

    qdrant_url: str = "http://localhost:6334"
    api_key: str | None = field(default=None, repr=False)  # never in a repr, a log line or a traceback
    skip_tls_verification: bool = False
    max_retries: int = default_of(RetryPolicy, "max_retries")
    retry_deadline_s: float = default_of(RetryPolicy, "deadline_s")


@dataclass(kw_only=True)
class StateConfig:
    """Where resume checkpoints are kept: a collection in the target, or a local JSON file."""

    offsets_collection: str = "_pg2qdrant_state"
    state_file: str | None = None


@dataclass(kw_only=True)
class CollectionConfig:
    """The target collection: its name, whether we may create it, and how (see CollectionOptions)."""

    collection: str
    create_collection: bool = True
    hnsw_m: int | None = default_of(CollectionOptions, "hnsw_m")  # None: from the pgvector index, else 16
    hnsw_ef_construct: int | None = default_of(CollectionOptions, "hnsw_ef_construct")  # ... else 100
    on_disk: bool | None = default_of(CollectionOptions, "on_disk")
    quantization: str | None = default_of(CollectionOptions, "quantization")
    shard_number: int | None = default_of(CollectionOptions, "shard_number")
    replication_factor: int | None = default_of(CollectionOptions, "replication_factor")
    payload_index: list[str] = field(default_factory=list)  # column[:type], before loading
    auto_payload_index: bool = True  # mirror btree-indexed scalar columns
    # --qdrant.alias: copy into a new version ALIAS_vN, verify it, then switch the alias (migrate/alias.py)
    alias: str | None = None
    keep_versions: int = 2  # after a switch: versions beyond the K newest (never the live one) are removed
    adopt: bool = False  # a plain collection named like the alias is replaced by the alias


@dataclass(frozen=True)
class Bm25Options:
    """Qdrant's BM25 (``qdrant_edge.Bm25Config``) for ``--qdrant.bm25``: its defaults, written once.

    The same settings must encode the queries (``Bm25.embed_query``, or the server's ``qdrant/bm25``
    inference with these options), so they are part of the plan's fingerprint."""

    language: str = "english"  # the stopwords and the Snowball stemmer
    k: float = 1.2  # term-frequency saturation
    b: float = 0.75  # length normalisation (0: none, 1: full)
    avg_len: float = 256.0  # the expected average document length in tokens
    lowercase: bool = True
    ascii_folding: bool = False
    stemming: bool = True  # False: no stemmer
    stopwords: bool = True  # False: no stopword is dropped


@dataclass(kw_only=True)
class MappingConfig:
    """How a row becomes a point: IDs, distances, names, and framework layouts (layouts.py)."""

    id_mode: str = "native"  # native | reference | hash
    distance_overrides: dict[str, str] = field(default_factory=dict)
    distance_source: str = "--qdrant.distance-metric"  # who set distance_overrides (the demo does too)
    vector_names: dict[str, str] = field(default_factory=dict)
    payload_keys: dict[str, str] = field(default_factory=dict)
    tenant_column: str | None = None
    # --qdrant.bm25 COLUMN[=NAME]: a sparse BM25 vector of a text column (name "" : <column>-bm25);
    # --qdrant.hybrid: the one a framework layout's hybrid mode reads (runtime/layouts.py).
    bm25: dict[str, str] = field(default_factory=dict)
    hybrid: bool = False
    bm25_options: Bm25Options = field(default_factory=Bm25Options)
    # auto: layouts.plan_jobs detects a framework's table; it resolves to plain or a framework
    # layout, which fills the last three.
    layout: str = "auto"
    payload_shape: str | None = None
    layout_indexes: tuple[tuple[str, str], ...] = ()
    layout_notes: tuple[str, ...] = ()


@dataclass(kw_only=True)
class CopyOptions:
    """How the copy runs: parallelism, batching, resume and what is done after it."""

    num_workers: int = 0  # 0: one per CPU core (resolved on creation)
    batch_size: int = 256  # points per request: Qdrant's bulk-load advice is 64-256
    batch_delay_ms: int = 0
    range_rows: int | None = None  # rows per range (None: ROWS_PER_RANGE)
    restart: bool = False
    dry_run: bool = False
    delete_orphans: bool = False  # after the copy, delete the points no row of the snapshot maps to
    # migrate --config --migration.consistent: the exported snapshot every table of the run reads;
    # saved progress is then not resumed (it was read in another snapshot, gone with its run)
    shared_snapshot: str | None = None
    # ... and what its tables share besides: the reader processes (started once), their row counts
    shared_copy: Any = field(default=None, compare=False, repr=False)  # a migrate.copy.SharedCopy

    def __post_init__(self) -> None:
        if self.num_workers == 0:
            self.num_workers = os.cpu_count() or 1


@dataclass(kw_only=True)
class MigrationOptions(SourceConfig, TargetConfig, StateConfig, CollectionConfig, MappingConfig, CopyOptions):
    """Everything one table's migration is told (the migrate, verify and sync flows take it)."""

    def collection_options(self, payload_indexes) -> CollectionOptions:
        """How to create the collection: these options and the plan's ``payload_indexes``."""
        return CollectionOptions(
            hnsw_m=self.hnsw_m, hnsw_ef_construct=self.hnsw_ef_construct, on_disk=self.on_disk,
            quantization=self.quantization, shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            payload_indexes=tuple((p.field, p.type) for p in payload_indexes),
        )

    def _validate_index_flags(self) -> None:
        """--qdrant.hnsw-m, --qdrant.hnsw-ef-construct, --qdrant.quantization (None: not given)."""
        if (self.hnsw_m is not None and self.hnsw_m < 0) or (
                self.hnsw_ef_construct is not None and self.hnsw_ef_construct <= 0):
            raise InputError("--qdrant.hnsw-m must be >= 0 and --qdrant.hnsw-ef-construct > 0.",
                             fix="use e.g. --qdrant.hnsw-m 16 --qdrant.hnsw-ef-construct 100.")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise InputError(f"--qdrant.quantization {self.quantization!r} is not supported.",
                             fix="use --qdrant.quantization int8 (scalar quantization), or leave it out.")

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise InputError(f"--migration.batch-size must be positive (got {self.batch_size}).",
                             fix=f"use e.g. --migration.batch-size {default_of(CopyOptions, 'batch_size')}.")
        if self.num_workers < 0:
            raise InputError(f"--migration.num-workers must be positive (got {self.num_workers}).",
                             fix="use 1 or more (0 means one per CPU core).")
        self._validate_index_flags()
        for flag, value in (("--qdrant.shard-number", self.shard_number),
                            ("--qdrant.replication-factor", self.replication_factor)):
            if value is not None and value <= 0:
                raise InputError(f"{flag} must be positive (got {value}).", fix=f"use e.g. {flag} 1.")
        if self.max_retries < 0 or self.retry_deadline_s <= 0:
            raise InputError("--migration.max-retries must be >= 0 and --migration.retry-deadline > 0.",
                             fix="use e.g. --migration.max-retries 5 --migration.retry-deadline 300.")
        o = self.bm25_options
        if o.k < 0 or not 0 <= o.b <= 1 or o.avg_len <= 0:
            raise InputError(f"BM25 needs k >= 0, 0 <= b <= 1 and avg_len > 0 (got k={o.k}, b={o.b}, "
                             f"avg_len={o.avg_len}).",
                             fix="fix --qdrant.bm25-k, --qdrant.bm25-b or --qdrant.bm25-avg-len "
                                 "(Qdrant's defaults: 1.2, 0.75, 256).")
        if self.batch_delay_ms < 0:
            raise InputError(f"--migration.batch-delay must not be negative (got {self.batch_delay_ms}).",
                             fix="give milliseconds to sleep between batches, e.g. 100.")


SYNC_MODES = ("cdc", "poll", "reconcile")


@dataclass
class SyncConfig:
    """`pg2qdrant sync`'s options and their defaults (sync/options.py adds their checks)."""

    mode: str = "cdc"  # one of SYNC_MODES
    slot: str | None = None  # default: derived from the collection
    publication: str | None = None
    initial_copy: bool = False
    updated_column: str | None = None
    interval_s: float = 5.0
    overlap: float = 60.0  # seconds for time columns, units for numeric columns
    reconcile: bool = False
    reconcile_interval_s: float = 600.0
    once: bool = False  # cdc: stop once caught up with the WAL position at start; poll: one round
    status_every_s: float = 10.0  # plain status lines when not on a terminal
