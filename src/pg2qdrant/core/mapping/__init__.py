"""Row -> point, with no I/O: point IDs, payload values and vectors, one module per type family.

Every flow (migrate, verify, sync) converts through this package, so a value is converted one
way only. The functions take what psycopg's binary loaders produce (plus the raw pgvector wire
bytes, decoded in bulk with numpy) and return what Qdrant stores (docs/mapping.md):

- :mod:`.ids`: point IDs from keys (integers, UUIDs, uuid5 of text, composite keys);
- :mod:`.scalars`: numbers, text, bytes, network addresses, and the converter of each payload kind;
- :mod:`.json_values`: json/jsonb with integers and exact numbers intact;
- :mod:`.temporal`: dates, times, timestamps and intervals from PostgreSQL's binary form;
- :mod:`.vectors`: pgvector's wire formats (vector, halfvec, bit, sparsevec), a batch at a time;
- :mod:`.batch`: :class:`~.batch.RowMapper`, rows -> a :class:`~.batch.PointBatch`.

"""
