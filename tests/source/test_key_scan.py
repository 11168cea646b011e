"""source.ids.key_batches over relations named by the caller, read as they are now (sync's complement
scans after a TRUNCATE or a partition change): a relation dropped since it was listed holds no row."""

from __future__ import annotations

import psycopg
import pytest

from helpers import source_plan
from pg2qdrant.core.table import Leaf
from pg2qdrant.source import ids


def test_a_leaf_dropped_since_it_was_listed_holds_no_row(db):
    db.execute("CREATE TABLE t (id int, cat int, v vector(2), PRIMARY KEY (id, cat)) PARTITION BY LIST (cat);"
               "CREATE TABLE t_1 PARTITION OF t FOR VALUES IN (1); CREATE TABLE t_2 PARTITION OF t FOR VALUES IN (2);"
               "INSERT INTO t SELECT i, 1 + i % 2, '[1,2]' FROM generate_series(1, 10) i")
    plan = source_plan(db.url, "t")
    leaves = plan.table.leaves
    db.execute("DROP TABLE t_2")
    gone = Leaf(leaves[1].oid, "public", "t_2", "r", 0, 0)
    with psycopg.connect(db.url, autocommit=True) as conn:
        read = [(tag, key) for tag, rows in ids.key_batches(conn, plan, 100, leaves=[leaves[0], gone]) for key in rows]
        assert sorted(read) == [(0, (i, 1)) for i in range(2, 11, 2)]
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # in a snapshot a relation cannot vanish: an error
        with pytest.raises(psycopg.errors.UndefinedTable):
            list(ids.key_batches(conn, plan, 100, leaves=[gone]))
