"""`pg2qdrant verify`: prove that a collection is the table, through the same plan and mapping as the copy.

Verification never converts values its own way: source rows are read with the
plan's SELECT expressions and loaders and mapped with
:class:`~pg2qdrant.core.mapping.batch.RowMapper` (point IDs with
:func:`~pg2qdrant.core.mapping.ids.make_point_id`), so the expected point is exactly what
migrate would write; then it is compared with what Qdrant returns, field by
field and vector by vector. The plan itself comes from
:func:`pipeline.open_source`, in one REPEATABLE READ snapshot, so all five
checks see the same table state:

1. counts: exact ``count`` per leaf relation (partitions) vs Qdrant's exact count;
2. IDs: every row's point exists, no orphan point, no two rows on one ID;
3. values: a sample of rows compared with :func:`compare_points`;
4. schema: the collection's vectors vs the plan's;
5. search parity: pgvector's exact top-k vs Qdrant's exact and HNSW top-k.

The ID check's memory (about 72 bytes per row, hash-bucket passes above
``--verify.id-memory``) is described in :mod:`.ids`.

Layout (one module per concern; every public name is re-exported here, so
``from pg2qdrant.verify import ...`` works as it did when this was one module):

- :mod:`.compare`: value and vector comparison (:class:`Mismatch`, :func:`same_json`,
  :func:`ulps_apart`, :func:`compare_vector`, :func:`compare_points`);
- :mod:`.source_rows`: reading source rows with the plan's SELECT (:func:`iter_source_batches`,
  :func:`fetch_source_batch`);
- :mod:`.options`: defaults, :class:`Thresholds`, :class:`VerifyOptions`, sample rules;
- :mod:`.ids`: the streamed ID scan of checks 1 and 2 (:class:`IdScan`, :func:`scan_ids`);
- :mod:`.search`: search-parity metrics (:class:`ParityStats`) and query vectors
  (:class:`QueryReservoir`, :func:`load_queries_file`);
- :mod:`.checks`: the five checks (:class:`Verification`) and :func:`run_verify`.
"""

from pg2qdrant.runtime.ids import (
    BYTES_PER_ROW,
    EXAMPLES_KEPT,
    ID_MEMORY_MB,
    ID_READ_ROWS,
    ID_SCROLL_BATCH,
    IdScan,
    scan_ids,
)
from pg2qdrant.verify.checks import Verification, is_ulp_level, run_verify
from pg2qdrant.verify.compare import (
    COSINE_ATOL,
    FLOAT16_RTOL,
    Mismatch,
    compare_points,
    compare_vector,
    json_type,
    same_json,
    ulps_apart,
)
from pg2qdrant.verify.options import (
    DEFAULT_K,
    DEFAULT_QUERIES,
    INDEX_POLL_S,
    INDEX_TIMEOUT_S,
    RETRIEVE_BATCH,
    SAMPLE_ALL_BELOW,
    SAMPLE_FRACTION,
    SAMPLE_MIN_ROWS,
    SCORE_PAIRS_KEPT,
    THRESHOLD_NAMES,
    Thresholds,
    VerifyOptions,
    parse_sample,
    parse_thresholds,
    sample_size,
)
from pg2qdrant.verify.search import (
    HAMMING,
    PG_OPERATORS,
    ParityStats,
    QueryReservoir,
    distribution,
    load_queries_file,
    qdrant_score,
    recall_at_k,
    spearman_on_overlap,
    top1_agrees,
)
from pg2qdrant.verify.source_rows import fetch_source_batch, iter_source_batches

__all__ = [
    # compare
    "COSINE_ATOL", "FLOAT16_RTOL", "Mismatch", "compare_points", "compare_vector", "json_type", "same_json",
    "ulps_apart",
    # source_rows
    "fetch_source_batch", "iter_source_batches",
    # options
    "BYTES_PER_ROW", "DEFAULT_K", "DEFAULT_QUERIES", "EXAMPLES_KEPT", "ID_MEMORY_MB", "ID_READ_ROWS",
    "ID_SCROLL_BATCH", "INDEX_POLL_S", "INDEX_TIMEOUT_S", "RETRIEVE_BATCH", "SAMPLE_ALL_BELOW", "SAMPLE_FRACTION",
    "SAMPLE_MIN_ROWS", "SCORE_PAIRS_KEPT", "THRESHOLD_NAMES", "Thresholds", "VerifyOptions", "parse_sample",
    "parse_thresholds", "sample_size",
    # ids
    "IdScan", "scan_ids",
    # search
    "HAMMING", "PG_OPERATORS", "ParityStats", "QueryReservoir", "distribution", "load_queries_file",
    "qdrant_score", "recall_at_k", "spearman_on_overlap", "top1_agrees",
    # checks
    "Verification", "is_ulp_level", "run_verify",
]
