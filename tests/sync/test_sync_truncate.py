"""TRUNCATE of part of a table in CDC sync: one partition, an inheritance parent ONLY, the whole table.

pgoutput's Truncate message names the relations actually truncated (``TRUNCATE ONLY
parent`` names the parent alone; ``TRUNCATE root`` of a partitioned table names its
partitions), but only when the publication does not publish via the partition root:
with ``publish_via_partition_root = true`` PostgreSQL sends nothing at all for a
TRUNCATE of some partitions. Each test compares the whole collection with the table.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_sync import DIM, _vec, compare, options, sdb, slot_of, wait_caught_up, wait_streaming  # noqa: F401

from pg2qdrant.source.slots import PUBLICATION_COMMENT, derived_name
from pg2qdrant.sync import run_sync
from pg2qdrant.sync.options import SyncOptions, SyncStats
from pg2qdrant.ui import UI

PARTITIONED = (f"CREATE TABLE items (id bigint, cat int, title text, v vector({DIM}), PRIMARY KEY (id, cat)) "
               "PARTITION BY LIST (cat);"
               "CREATE TABLE items_1 PARTITION OF items FOR VALUES IN (1);"
               "CREATE TABLE items_2 PARTITION OF items FOR VALUES IN (2);")
INHERITANCE = (f"CREATE TABLE items (id bigint PRIMARY KEY, cat int, title text, v vector({DIM}));"
               "CREATE TABLE items_child () INHERITS (items);"
               "ALTER TABLE items_child ADD PRIMARY KEY (id);")


def _fill(db, table: str, ids, cat: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with db.connect() as conn:
        for k in ids:
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", (k, cat, f"t{k}", _vec(rng)))


def _sync_args(db, url: str) -> list[str]:
    return ["sync", "--pg.url", db.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.collection", "c",
            "--sync.slot", slot_of(db), "--migration.num-workers", "1", "--sync.once"]


def test_truncate_of_one_partition_deletes_only_its_points(sdb, tmp_path):
    """Issue 9.1: the table kept 5 rows, the collection 10 points. A partition created while sync
    streams (unknown to its plan) keeps its points too."""
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED)
    _fill(sdb, "items", range(1, 6), 1, seed=1)
    _fill(sdb, "items", range(6, 11), 2, seed=2)
    slot = slot_of(sdb)
    stop, stats = threading.Event(), SyncStats()
    worker = threading.Thread(target=run_sync, args=(options(sdb, url), SyncOptions(slot=slot), UI(quiet=True)),
                              kwargs=dict(initial_copy=True, stop=stop, stats=stats), daemon=True)
    worker.start()
    try:
        wait_streaming(sdb.url, slot)
        sdb.execute("CREATE TABLE items_3 PARTITION OF items FOR VALUES IN (3)")
        _fill(sdb, "items", range(20, 23), 3, seed=3)
        sdb.execute("TRUNCATE items_1")
        sdb.execute("UPDATE items SET title = 'after' WHERE id = 6")
        wait_caught_up(sdb.url, slot)
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
    assert sdb.execute("SELECT count(*) FROM items")[0][0] == 8
    assert compare(sdb, url) == 8


def test_truncate_only_inheritance_parent_keeps_children_points(sdb, tmp_path, cli):
    """Issue 9.2: TRUNCATE ONLY parent emptied the whole collection, the children's points included."""
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(INHERITANCE)
    _fill(sdb, "items", range(1, 5), 1, seed=1)
    _fill(sdb, "items_child", range(11, 14), 2, seed=2)
    r = cli(*_sync_args(sdb, url), "--sync.initial-copy")
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 7
    with sdb.connect() as conn:
        with conn.transaction():  # a reload in the same transaction: the new parent row stays
            conn.execute("TRUNCATE ONLY items")
            conn.execute("INSERT INTO items VALUES (2, 1, 'reloaded', NULL)")
        conn.execute("UPDATE items SET title = 'child edited' WHERE id = 12")
    r = cli(*_sync_args(sdb, url))
    assert r.exit_code == 0, r.output
    assert sdb.execute("SELECT count(*) FROM items")[0][0] == 4
    assert compare(sdb, url) == 4


@pytest.mark.parametrize("layout, statements", [
    ("partitioned", ["TRUNCATE items_1, items_2", "TRUNCATE items"]),  # every partition named, the root
    ("inheritance", ["TRUNCATE items_child, items", "TRUNCATE items"]),
])
def test_truncate_of_whole_table_empties_collection(sdb, tmp_path, cli, layout, statements):
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED if layout == "partitioned" else INHERITANCE)
    child = "items" if layout == "partitioned" else "items_child"
    first = True
    for n, statement in enumerate(statements):
        _fill(sdb, "items", range(100 * n + 1, 100 * n + 5), 1, seed=n)
        _fill(sdb, child, range(100 * n + 50, 100 * n + 53), 2, seed=n + 10)
        if first:
            r = cli(*_sync_args(sdb, url), "--sync.initial-copy")
            assert r.exit_code == 0, r.output
            first = False
        sdb.execute(statement)
        r = cli(*_sync_args(sdb, url))
        assert r.exit_code == 0, r.output
        assert compare(sdb, url) == 0, statement


def test_publication_via_partition_root_is_reported(sdb, tmp_path, cli):
    """A publication that publishes via the partition root cannot send a TRUNCATE of one partition:
    sync says so (and how to fix it) instead of missing it silently."""
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED)
    _fill(sdb, "items", range(1, 4), 1, seed=1)
    sdb.execute("CREATE PUBLICATION mine FOR TABLE items WITH (publish_via_partition_root = true)")
    r = cli(*_sync_args(sdb, url), "--sync.initial-copy", "--sync.publication", "mine")
    assert r.exit_code == 0, r.output
    assert "publish_via_partition_root" in r.output and "--sync.mode reconcile" in r.output
    assert "ALTER PUBLICATION mine SET (publish_via_partition_root = false)" in r.output


def test_publication_of_an_earlier_version_stops_publishing_via_root(sdb, tmp_path, cli):
    """pg2qdrant's own publication, created via the partition root by an earlier version, is switched
    over, and the TRUNCATE of one partition then arrives."""
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED)
    _fill(sdb, "items", range(1, 4), 1, seed=1)
    _fill(sdb, "items", range(4, 6), 2, seed=2)
    publication = derived_name("pg2qdrant", "c")
    sdb.execute(f"CREATE PUBLICATION {publication} FOR TABLE items WITH (publish_via_partition_root = true);"
                f"COMMENT ON PUBLICATION {publication} IS '{PUBLICATION_COMMENT}c'")
    r = cli(*_sync_args(sdb, url), "--sync.initial-copy")
    assert r.exit_code == 0, r.output
    assert "no longer publishes via the partition root" in r.output
    assert sdb.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (publication,)) == [(False,)]
    sdb.execute("TRUNCATE items_1")
    r = cli(*_sync_args(sdb, url))
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 2
