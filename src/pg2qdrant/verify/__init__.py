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

Layout (one module per concern):

- :mod:`.compare`: value and vector comparison (:class:`Mismatch`, :func:`same_json`,
  :func:`ulps_apart`, :func:`compare_vector`, :func:`compare_points`);
- :mod:`.source_rows`: reading source rows with the plan's SELECT (:func:`iter_source_batches`,
  :func:`fetch_source_batch`);
- :mod:`.options`: defaults, :class:`Thresholds`, :class:`VerifyOptions`, sample rules;
- :mod:`.ids`: the streamed ID scan of checks 1 and 2 (:class:`IdScan`, :func:`scan_ids`);
- :mod:`.search`: search-parity metrics (:class:`ParityStats`) and query vectors
  (:class:`QueryReservoir`, :func:`load_queries_file`);
- :mod:`.checks`: the five checks (:class:`Verification`) and :func:`run_verify`.
- :mod:`.keywords`: the sixth with BM25 vectors, PostgreSQL's full-text top-k vs Qdrant's BM25 top-k.
"""
