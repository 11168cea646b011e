"""DDL and partition changes while CDC sync streams (issue 18, items 5 and 6).

Once sync has caught up with a change, the collection must equal a fresh migrate of the table
(helpers.assert_collection_equals_table plans from the catalog as it is now, every point's ID,
payload and vectors, and no other point); a change sync cannot follow stops it with a clear
input error after everything committed before it is applied and acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import psycopg
import pytest
from test_sync import (  # noqa: F401
    DIM,
    _sync_command,
    _vec,
    compare,
    create_items,
    options,
    sdb,
    slot_of,
    wait_caught_up,
    wait_streaming,
)
from test_sync_many import SLOT, _command, assert_collections_equal_tables, env_for, tables, write_file  # noqa: F401
from test_sync_recopy import _sync
from test_sync_truncate import PARTITIONED, _fill

from pg2qdrant.source.lsn import parse_lsn
from pg2qdrant.sync import run_sync
from pg2qdrant.sync.options import SyncOptions, SyncStats
from pg2qdrant.sync.schema_watch import POLL_EVERY_S
from pg2qdrant.ui import UI


class Syncing:
    """run_sync (initial copy, then streaming) in a thread, until :meth:`finish`."""

    def __init__(self, db, url: str):
        self.db, self.slot = db, slot_of(db)
        self.stop, self.stats = threading.Event(), SyncStats()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(options(db, url),), daemon=True)
        self.thread.start()
        wait_streaming(db.url, self.slot)

    def _run(self, opts) -> None:
        try:
            run_sync(opts, SyncOptions(slot=self.slot), UI(quiet=True), initial_copy=True, stop=self.stop,
                     stats=self.stats)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def followed(self, n: int = 1, timeout: float = 60) -> None:
        """Until sync has followed ``n`` DDL / partition changes, then caught up with the WAL."""
        deadline = time.monotonic() + timeout
        while self.stats.schema_changes < n and self.error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.error is None, self.error
        assert self.stats.schema_changes >= n, "the change was not noticed"
        wait_caught_up(self.db.url, self.slot)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def _touch(db, ids, title: str) -> None:
    """Payload-only updates (the 512-d vector stays unchanged TOAST) and a NULL (read again by key)."""
    with db.connect() as conn:
        conn.execute("UPDATE items SET title = %s, n = n + 1 WHERE id = ANY(%s)", (title, list(ids)))
        conn.execute("UPDATE items SET title = NULL WHERE id = %s", (ids[0],))


@pytest.mark.parametrize("default, later_changes", [(True, False), (False, False), (True, True), (False, True)])
def test_add_column_while_syncing_reaches_every_point(sdb, tmp_path, default, later_changes):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 40)
    sync = Syncing(sdb, url)
    try:
        sdb.execute("ALTER TABLE items ADD COLUMN score integer" + (" DEFAULT 7" if default else ""))
        if later_changes:
            with sdb.connect() as conn:
                conn.execute("UPDATE items SET score = id * 2 WHERE id <= 10")
                conn.execute("INSERT INTO items (id, title, score, v) VALUES (100, 'new', 3, %s)",
                             (_vec(np.random.default_rng(3)),))
            _touch(sdb, [11, 12, 13], "after add")
            sdb.execute("DELETE FROM items WHERE id = 20")
        sync.followed()
    finally:
        sync.finish()
    assert compare(sdb, url) == 40


def test_drop_column_right_after_an_update_applies_both(sdb, tmp_path):
    """The UPDATE committed just before the DROP is applied, the dropped field leaves every point."""
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 40)
    sync = Syncing(sdb, url)
    try:
        with sdb.connect() as conn:
            conn.execute("UPDATE items SET mac = NULL, n = 1000 WHERE id <= 5")  # a NULL: read again by key
            conn.execute("ALTER TABLE items DROP COLUMN mac")
        _touch(sdb, [6, 7], "after drop")
        sync.followed()
    finally:
        sync.finish()
    assert compare(sdb, url) == 40
    assert sdb.execute("SELECT count(*) FROM items WHERE n = 1000")[0][0] == 5


def test_rename_column_while_syncing(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    sync = Syncing(sdb, url)
    try:
        sdb.execute("ALTER TABLE items RENAME COLUMN title TO name")
        with sdb.connect() as conn:
            conn.execute("UPDATE items SET name = 'renamed' WHERE id <= 3")
        sync.followed()
    finally:
        sync.finish()
    assert compare(sdb, url) == 30


def test_payload_column_type_change_while_syncing(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    sync = Syncing(sdb, url)
    try:
        _touch(sdb, [1, 2], "before")  # in flight while the type changes
        sdb.execute("ALTER TABLE items ALTER COLUMN n TYPE text USING 'n=' || n")
        with sdb.connect() as conn:
            conn.execute("UPDATE items SET n = 'changed' WHERE id IN (3, 4)")
            conn.execute("UPDATE items SET title = 'only title' WHERE id = 5")
        sync.followed()
    finally:
        sync.finish()
    assert compare(sdb, url) == 30


def test_named_column_dropped_stops_sync_after_applying_what_came_before(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 20)
    slot = slot_of(sdb)
    proc = subprocess.Popen(_sync_command(sdb, url, slot, "--sync.initial-copy", "--pg.columns", "title,n,v"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_streaming(sdb.url, slot, proc=proc)
        with sdb.connect() as conn:
            conn.execute("UPDATE items SET title = 'before the drop' WHERE id <= 4")
            conn.execute("UPDATE items SET n = n + 100 WHERE id = 5")
            applied_lsn = parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
            conn.execute("ALTER TABLE items DROP COLUMN title")
            conn.execute("UPDATE items SET n = 99 WHERE id = 6")
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, output
    assert "Unexpected failure" not in output
    assert "column title dropped" in output and "--sync.initial-copy" in output, output
    flushed = sdb.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                          (slot,))[0][0]
    assert parse_lsn(flushed) >= applied_lsn
    from pg2qdrant.destination import open_target
    from pg2qdrant.destination.address import parse_target_url
    target = open_target(parse_target_url(url))
    try:
        points = {r.id: r.payload for r in target.retrieve("c", [1, 2, 3, 4, 5], with_vectors=False)}
    finally:
        target.close()
    assert all(points[k]["title"] == "before the drop" for k in (1, 2, 3, 4)), points
    assert points[5]["n"] == sdb.execute("SELECT n FROM items WHERE id = 5")[0][0]


@pytest.mark.parametrize("change", ["attach", "detach", "drop"])
def test_partition_attached_detached_dropped_while_syncing(sdb, tmp_path, change):
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED)
    _fill(sdb, "items", range(1, 6), 1, seed=1)
    _fill(sdb, "items", range(6, 11), 2, seed=2)
    sync = Syncing(sdb, url)
    try:
        if change == "attach":  # rows inserted before ATTACH never were in the stream
            sdb.execute("CREATE TABLE items_3 (LIKE items INCLUDING ALL)")
            _fill(sdb, "items_3", range(20, 24), 3, seed=3)
            sdb.execute("ALTER TABLE items ATTACH PARTITION items_3 FOR VALUES IN (3)")
            sdb.execute("UPDATE items SET title = 'attached' WHERE id = 20")
        elif change == "detach":
            sdb.execute("UPDATE items SET title = 'just before' WHERE id = 1")
            sdb.execute("ALTER TABLE items DETACH PARTITION items_1")
            _fill(sdb, "items_1", [50], 1, seed=4)  # no longer the table's
        else:
            sdb.execute("DROP TABLE items_2")
        sync.followed()
        _fill(sdb, "items", [60], 2 if change != "drop" else 1, seed=5)
        wait_caught_up(sdb.url, sync.slot)
    finally:
        sync.finish()
    expected = {"attach": 15, "detach": 6, "drop": 6}[change]
    assert sdb.execute("SELECT count(*) FROM items")[0][0] == expected
    assert compare(sdb, url) == expected


def test_sync_config_follows_ddl_per_table(tables, tmp_path):
    """`sync --config`: each table of the shared slot has its own watch (ADD COLUMN on one,
    DETACH of a partition of another, plain changes on the third)."""
    path = write_file(tables, tmp_path, ["docs", "parts", "notes"])
    out = open(tmp_path / "out.txt", "ab")
    proc = subprocess.Popen(_command("sync", "--config", path, "--sync.initial-copy"), stdout=out, stderr=out,
                            env={**os.environ, **env_for(tables)})
    try:
        wait_streaming(tables.url, SLOT, proc=proc)
        with psycopg.connect(tables.url, autocommit=True) as conn:
            conn.execute("ALTER TABLE docs ADD COLUMN extra integer DEFAULT 5")
            conn.execute("ALTER TABLE parts DETACH PARTITION parts_b")
            conn.execute("UPDATE notes SET title = 'x' WHERE id = 'key-1'")
            conn.execute("UPDATE docs SET extra = 6 WHERE id = 1")
        time.sleep(3 * POLL_EVERY_S)
        wait_caught_up(tables.url, SLOT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "out.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_collections_equal_tables(tables, tmp_path, ["docs", "parts", "notes"])


# --- while sync is stopped: found and followed (or refused) at the next start ---------------------

def test_columns_changed_while_sync_was_stopped_are_followed_at_the_next_start(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    r = cli(*_sync(sdb, url, "--sync.once", "--sync.initial-copy"))
    assert r.exit_code == 0, r.output
    _touch(sdb, [1, 2, 3], "before the change")  # in the slot, decoded with the old columns
    sdb.execute("ALTER TABLE items ADD COLUMN score integer DEFAULT 7")
    sdb.execute("ALTER TABLE items DROP COLUMN mood")
    sdb.execute("ALTER TABLE items RENAME COLUMN n TO num")
    sdb.execute("DELETE FROM items WHERE id = 4")
    r = cli(*_sync(sdb, url, "--sync.once"))
    assert r.exit_code == 0, r.output
    assert "changed while sync was stopped" in r.output and "rewriting every point" in r.output
    assert compare(sdb, url) == 29
    r = cli(*_sync(sdb, url, "--sync.once"))  # nothing changed since: nothing rewritten
    assert r.exit_code == 0, r.output
    assert "changed while sync was stopped" not in r.output


def test_partitions_changed_while_sync_was_stopped_are_followed_at_the_next_start(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED)
    _fill(sdb, "items", range(1, 21), 1, seed=1)
    _fill(sdb, "items", range(21, 41), 2, seed=2)
    r = cli(*_sync(sdb, url, "--sync.once", "--sync.initial-copy"))
    assert r.exit_code == 0, r.output
    sdb.execute("ALTER TABLE items DETACH PARTITION items_2")
    sdb.execute(f"CREATE TABLE items_3 (id bigint, cat int, title text, v vector({DIM}), PRIMARY KEY (id, cat))")
    _fill(sdb, "items_3", range(41, 51), 3, seed=3)
    sdb.execute("ALTER TABLE items ATTACH PARTITION items_3 FOR VALUES IN (3)")
    r = cli(*_sync(sdb, url, "--sync.once"))
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 30


def test_a_named_column_dropped_while_sync_was_stopped_stops_it_before_writing(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 10)
    columns = ("--pg.columns", "title,n,v")
    r = cli(*_sync(sdb, url, "--sync.once", "--sync.initial-copy", *columns))
    assert r.exit_code == 0, r.output
    sdb.execute("ALTER TABLE items ALTER COLUMN n TYPE text")
    r = cli(*_sync(sdb, url, "--sync.once", *columns))
    assert r.exit_code == 2, r.output
    assert "changed while sync was stopped in a way sync cannot follow" in r.output
    assert "--sync.initial-copy" in r.output and "Unexpected" not in r.output


def test_a_partitioned_table_left_without_partitions_resumes(sdb, tmp_path, cli):
    """Every partition detached or dropped while sync was stopped: the publication still names the table
    (pg_publication_tables lists a partitioned table by its partitions, of which there are none)."""
    url = f"local:{tmp_path / 'q'}"
    sdb.execute(PARTITIONED)
    _fill(sdb, "items", range(1, 11), 1, seed=1)
    _fill(sdb, "items", range(11, 21), 2, seed=2)
    r = cli(*_sync(sdb, url, "--sync.once", "--sync.initial-copy"))
    assert r.exit_code == 0, r.output
    sdb.execute("ALTER TABLE items DETACH PARTITION items_1")
    sdb.execute("DROP TABLE items_2")
    r = cli(*_sync(sdb, url, "--sync.once"))
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 0
    sdb.execute("CREATE TABLE items_3 PARTITION OF items FOR VALUES IN (3)")
    _fill(sdb, "items", range(21, 26), 3, seed=3)
    r = cli(*_sync(sdb, url, "--sync.once"))
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 5
