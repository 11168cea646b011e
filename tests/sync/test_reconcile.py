"""sync's reconcile on verify's memory-bounded ID merge: IDs compared in hash buckets, orphans
deleted, missing points filled (re-read by key, or picked from one pass over the rows), and
the shared-point check telling an inheritance overlap (one key) from two keys on one point."""

from __future__ import annotations

import pytest

from helpers import assert_collection_equals_table, source_plan
from pg2qdrant.destination import open_target
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.source import connect
from pg2qdrant.sync import reconcile as reconcile_module
from pg2qdrant.sync.reconcile import reconcile_ids

TINY_MB = 0.005  # ~50 IDs per bucket at verify's BYTES_PER_ROW: a 300-row table takes several passes


@pytest.mark.parametrize("fill_by_key_max", [100_000, 0], ids=["fill-by-key", "fill-from-rows"])
def test_reconcile_in_hash_buckets(db, tmp_path, cli, monkeypatch, fill_by_key_max):
    monkeypatch.setattr(reconcile_module, "FILL_BY_KEY_MAX", fill_by_key_max)
    db.execute("CREATE TABLE t (id int PRIMARY KEY, title text, v vector(2));"
               "INSERT INTO t SELECT i, 'row ' || i, ARRAY[i, 1]::vector FROM generate_series(1, 300) i")
    qdrant = f"local:{tmp_path / 'q'}"
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", qdrant, "--qdrant.collection", "c")
    assert r.exit_code == 0, r.output
    db.execute("DELETE FROM t WHERE id % 30 = 0;"  # 10 orphans, spread over the buckets
               "INSERT INTO t SELECT i, 'new ' || i, ARRAY[i, 2]::vector FROM generate_series(301, 320) i")
    plan = source_plan(db.url, "t")
    target = open_target(parse_target_url(qdrant))
    conn = connect.connect(db.url, autocommit=True)
    try:
        assert reconcile_ids(plan, target, conn, batch_size=64, memory_mb=TINY_MB) == (10, 20)
        assert assert_collection_equals_table(db.url, "t", target) == 310
        # An inheritance child holding a key of its parent: both rows are one point, not a conflict.
        db.execute("CREATE TABLE child () INHERITS (t); INSERT INTO child VALUES (5, 'row 5', '[5,1]')")
        plan = source_plan(db.url, "t")
        assert reconcile_ids(plan, target, conn, batch_size=64, memory_mb=TINY_MB) == (0, 0)
        assert target.count("c") == 310
    finally:
        conn.close()
        target.close()
