"""An initial copy into a collection that already holds points ends equal to the table.

Every flow an operator uses to (re)start sync from a copy writes into a collection an earlier
run made: the lost-slot recipe of docs/sync-production.md (`sync drop`, then `sync --sync.initial-copy`), `migrate`
then `migrate --then-sync`, a rerun after a run stopped during its copy. Rows deleted
meanwhile must not leave their points behind, and sync's markers in a
``--migration.state-file`` belong to one target.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from test_sync import compare, create_items, sdb, slot_of  # noqa: F401  (sdb: the fixture)


def _base(db, url: str, *extra: str) -> list[str]:
    return ["--pg.url", db.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.collection", "c",
            "--migration.num-workers", "1", *extra]


def _sync(db, url: str, *extra: str) -> list[str]:
    return ["sync", *_base(db, url, "--sync.slot", slot_of(db), *extra)]


def _drop(db, cli) -> None:
    r = cli("sync", "drop", "--pg.url", db.url, "--qdrant.collection", "c", "--sync.slot", slot_of(db))
    assert r.exit_code == 0, r.output


def _slots(db) -> int:
    return db.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot_of(db),))[0][0]


def _signal_during_copy(db, url: str, tmp_path, sig: signal.Signals) -> tuple[str, int]:
    """Start `sync --sync.initial-copy` in a process, send ``sig`` during its copy: (output, exit code)."""
    command = [sys.executable, "-m", "pg2qdrant",
               *_sync(db, url, "--sync.initial-copy", "--migration.batch-size", "16")]
    path = tmp_path / f"signal-{int(sig)}.log"
    with open(path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while not _slots(db):  # the copy starts right after its slot exists
                assert proc.poll() is None and time.monotonic() < deadline, path.read_text()
                time.sleep(0.02)
            time.sleep(0.3)
            proc.send_signal(sig)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return path.read_text(), code


def test_sigterm_during_the_initial_copy_says_what_a_rerun_does(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 3000)
    output, code = _signal_during_copy(sdb, url, tmp_path, signal.SIGTERM)
    assert code == 130, output
    assert "Interrupted during the initial copy" in output and "was dropped" in output, output
    assert "copies every row again from a new snapshot" in output and "to resume" not in output
    assert _slots(sdb) == 0
    r = cli(*_sync(sdb, url, "--sync.initial-copy", "--sync.once"))
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 3000


def test_lost_slot_recipe_deletes_points_of_rows_deleted_meanwhile(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 40)
    r = cli(*_sync(sdb, url, "--sync.initial-copy", "--sync.once"))
    assert r.exit_code == 0, r.output
    _drop(sdb, cli)
    sdb.execute("DELETE FROM items WHERE id % 4 = 0")  # while no slot records it
    r = cli(*_sync(sdb, url, "--sync.initial-copy", "--sync.once"))
    assert r.exit_code == 0, r.output
    assert "Deleted 10 point(s)" in r.output
    assert compare(sdb, url) == 30


def test_migrate_then_migrate_then_sync_deletes_points_of_rows_deleted_meanwhile(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    r = cli("migrate", *_base(sdb, url))
    assert r.exit_code == 0, r.output
    sdb.execute("DELETE FROM items WHERE id <= 5")
    r = cli("migrate", *_base(sdb, url, "--then-sync", "--sync.slot", slot_of(sdb), "--sync.once"))
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 25


@pytest.mark.one_server  # our processes and resume state, not PostgreSQL's: the other resume tests run on both
def test_rerun_after_a_run_killed_during_its_copy_copies_again_and_deletes_orphans(sdb, tmp_path, cli):
    """A run killed during its initial copy leaves its slot; the rerun must not take the marker of an
    earlier copy (from a slot of the same name) for this one's, and its copy removes the points of rows
    deleted meanwhile."""
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 3000)
    r = cli(*_sync(sdb, url, "--sync.initial-copy", "--sync.once"))  # an earlier copy: its marker says copied
    assert r.exit_code == 0, r.output
    _drop(sdb, cli)
    output, _ = _signal_during_copy(sdb, url, tmp_path, signal.SIGKILL)
    assert "Migration summary" not in output  # killed during the copy
    sdb.execute("DELETE FROM items WHERE id > 2000")
    r = cli(*_sync(sdb, url, "--sync.initial-copy", "--sync.once"))
    assert r.exit_code == 0, r.output
    assert "no initial copy finished from it" in r.output
    assert compare(sdb, url) == 2000


def test_delete_orphans_is_honoured_when_sync_resumes_without_a_copy(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 20)
    r = cli(*_sync(sdb, url, "--sync.initial-copy", "--sync.once"))
    assert r.exit_code == 0, r.output
    from qdrant_client import QdrantClient, models
    client = QdrantClient(path=str(tmp_path / "q"))
    client.upsert("c", [models.PointStruct(id=999, vector={}, payload={"stray": True})])
    client.close()
    r = cli(*_sync(sdb, url, "--sync.once", "--migration.delete-orphans"))
    assert r.exit_code == 0, r.output
    assert "1 orphan point(s) deleted" in r.output
    assert compare(sdb, url) == 20


@pytest.mark.parametrize("same_slot", [False, True])
def test_state_file_markers_belong_to_their_target(sdb, tmp_path, cli, same_slot):
    """With --migration.state-file, a copy into a second Qdrant is not skipped because of the first's marker;
    on the first's slot it stops with the fix instead of taking that slot over."""
    first, second = f"local:{tmp_path / 'q1'}", f"local:{tmp_path / 'q2'}"
    state = str(tmp_path / "state.json")
    with sdb.connect() as conn:
        create_items(conn, 12)
    r = cli(*_sync(sdb, first, "--sync.initial-copy", "--sync.once", "--migration.state-file", state))
    assert r.exit_code == 0, r.output
    slot = slot_of(sdb) if same_slot else f"{slot_of(sdb)}_b"
    r = cli("sync", *_base(sdb, second, "--sync.slot", slot, "--sync.initial-copy", "--sync.once",
                           "--migration.state-file", state))
    if same_slot:
        assert r.exit_code == 2, r.output
        assert "finished in an earlier run" not in r.output
        assert "is the slot of the sync into" in r.output and "--sync.slot" in r.output
        assert _slots(sdb) == 1  # the first target's slot is left alone
        assert compare(sdb, first) == 12
        return
    assert r.exit_code == 0, r.output
    assert "finished in an earlier run" not in r.output
    assert compare(sdb, second) == 12
    sdb.execute("DELETE FROM items WHERE id = 1")
    for url, s in ((first, slot_of(sdb)), (second, slot)):
        r = cli("sync", *_base(sdb, url, "--sync.slot", s, "--sync.once", "--migration.state-file", state))
        assert r.exit_code == 0, r.output
        assert compare(sdb, url) == 11


def test_a_where_filter_with_percent_survives_rows_read_again_by_key(sdb, tmp_path, cli):
    """--pg.where makes sync read every changed row again by key; a ``%`` in the filter is SQL's modulo,
    never a placeholder (the keys are quoted literals, not client-side parameters)."""
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    where = ("--pg.where", "n % 2 = 0 AND title LIKE 'title%'")
    r = cli(*_sync(sdb, url, *where, "--sync.initial-copy", "--sync.once"))
    assert r.exit_code == 0, r.output
    sdb.execute("UPDATE items SET n = n + 1 WHERE id <= 10")  # rows move in and out of the filter
    sdb.execute("UPDATE items SET title = 'title changed' WHERE id BETWEEN 11 AND 20")
    r = cli(*_sync(sdb, url, *where, "--sync.once"))
    assert r.exit_code == 0, r.output
    expected = {k for (k,) in sdb.execute("SELECT id FROM items WHERE n % 2 = 0 AND title LIKE 'title%'")}
    from qdrant_client import QdrantClient
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        points = {p.id: p.payload for p in client.scroll("c", limit=100)[0]}
    finally:
        client.close()
    assert set(points) == expected
    titles = dict(sdb.execute("SELECT id, title FROM items"))
    assert all(points[k]["title"] == titles[k] for k in expected)
