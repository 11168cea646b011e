"""A TRUNCATE or ALTER TABLE that queues for its exclusive lock while a copy reads in a snapshot.

The copy's coordinator holds ACCESS SHARE on the table from its first read in the snapshot; the
statement waits for it, and every later share request (a reader starting its first range) waits
behind the statement: a wait that never ends and that PostgreSQL cannot see as a deadlock (the
coordinator waits for its readers in the client). The readers stop waiting after
source.snapshot.LOCK_WAIT_S: migrate stops with the fix (resumable), sync's initial copy lets the
statement go first and copies again from a new slot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from test_config_file import env_for, no_password
from test_sync import compare, create_items, sdb, slot_of, wait_caught_up, wait_streaming  # noqa: F401

from helpers import assert_collection_equals_table
from pg2qdrant.destination import open_target
from pg2qdrant.destination.address import parse_target_url


def _truncate_while_only_the_coordinator_holds_its_lock(db, proc: subprocess.Popen, statement: str) -> threading.Thread:
    """Wait until one pg2qdrant session holds its lock on items and its readers have none yet, then run
    ``statement`` in a thread (it queues behind that lock)."""
    query = ("SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
             "WHERE l.relation = 'items'::regclass AND l.granted AND a.application_name = 'pg2qdrant'")
    with psycopg.connect(db.url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while conn.execute(query).fetchone()[0] != 1:
            assert proc.poll() is None and time.monotonic() < deadline, "the copy never held its lock alone"
            time.sleep(0.005)
    done = threading.Thread(target=db.execute, args=(statement,), daemon=True)
    done.start()
    return done


def _alter_while_copying_then_catch_up(db, proc: subprocess.Popen, slot: str, *more: str) -> None:
    """An ALTER TABLE queued behind the initial copy's lock must go first; then changes (and ``more``) are
    streamed, and sync catches up (the schema watch's poll included)."""
    statement = _truncate_while_only_the_coordinator_holds_its_lock(
        db, proc, "ALTER TABLE items ADD COLUMN extra integer DEFAULT 5")
    statement.join(60)
    assert not statement.is_alive(), "the ALTER TABLE still waits"
    db.execute("UPDATE items SET extra = 6 WHERE id <= 10")
    for sql in more:
        db.execute(sql)
    wait_streaming(db.url, slot, proc=proc)
    wait_caught_up(db.url, slot, proc=proc)
    time.sleep(3)  # the schema watch's poll
    wait_caught_up(db.url, slot, proc=proc)


def _command(db, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pg2qdrant", *extra, "--pg.url", db.url, "--pg.table", "items", "--qdrant.url",
            url, "--qdrant.collection", "c", "--migration.num-workers", "2", "--migration.range-rows", "100"]


def test_migrate_stops_with_the_fix_instead_of_waiting_forever(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 2000)
    proc = subprocess.Popen(_command(sdb, url, "migrate"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        statement = _truncate_while_only_the_coordinator_holds_its_lock(sdb, proc, "TRUNCATE items")
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    statement.join(30)
    assert not statement.is_alive(), "the TRUNCATE still waits: the copy's snapshot did not end"
    if proc.returncode == 0:  # the readers had locked the table already: the copy went first (fine)
        return
    assert proc.returncode == 2, output
    assert "waits for an exclusive lock on a table this run reads" in output and "TRUNCATE items" in output, output
    assert "rerun this command once it is done" in output
    assert sdb.execute("SELECT count(*) FROM items")[0][0] == 0  # the TRUNCATE went first
    r = cli("migrate", *_command(sdb, url, "migrate")[4:], "--migration.delete-orphans")
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 0


def test_sync_lets_the_statement_go_first_and_copies_again(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 2000)
    slot = slot_of(sdb)
    proc = subprocess.Popen(_command(sdb, url, "sync", "--sync.initial-copy", "--sync.slot", slot),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _alter_while_copying_then_catch_up(sdb, proc, slot)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert compare(sdb, url) == 2000


@pytest.mark.one_server  # the retry is ours; the lock wait is covered on both servers above
def test_sync_of_a_file_lets_the_statement_go_first_and_copies_the_rest_again(sdb, tmp_path):
    """The same through `sync --config`: the slot exists once the copy started, so the retry resumes from it and
    copies again the tables not yet joined (was: the run stopped with the LockConflict)."""
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 2000)
    sdb.execute("CREATE TABLE other (id int PRIMARY KEY, v vector(3))")
    sdb.execute("INSERT INTO other SELECT i, '[1,2,3]' FROM generate_series(1, 50) i")
    path = tmp_path / "tables.toml"
    path.write_text(f'pg.url = "{no_password(sdb.url)}"\nqdrant.url = "{url}"\nmigration.num-workers = 2\n'
                    'migration.range-rows = 100\n\n[[table]]\npg.table = "items"\nqdrant.collection = "c"\n\n'
                    '[[table]]\npg.table = "other"\nqdrant.collection = "other"\n')
    slot = slot_of(sdb)
    proc = subprocess.Popen([sys.executable, "-m", "pg2qdrant", "sync", "--config", str(path), "--sync.initial-copy",
                             "--sync.slot", slot], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env_for(sdb)})
    try:
        _alter_while_copying_then_catch_up(sdb, proc, slot, "DELETE FROM other WHERE id <= 5")
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert compare(sdb, url) == 2000
    target = open_target(parse_target_url(url))
    try:
        assert assert_collection_equals_table(sdb.url, "other", target, "other") == 45
    finally:
        target.close()
