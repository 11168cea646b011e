"""`pg2qdrant sync` on a real PostgreSQL (wal_level=logical) and real local-mode / Edge collections.

A second connection runs a random workload (inserts, payload-only updates whose
512-d vector stays unchanged TOAST, vector updates, deletes, key changes, a
TRUNCATE + reload) while sync runs; afterwards the collection must equal the
table exactly (helpers.assert_collection_equals_table reads and maps the table
with the same plan). Faults are real: SIGKILL of the sync process, a
terminated walsender.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
import pytest

from helpers import assert_collection_equals_table, drop_database_slots, vector_literal
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.destination import open_target
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.source.lsn import parse_lsn
from pg2qdrant.source.slots import derived_name
from pg2qdrant.sync import run_sync
from pg2qdrant.sync.options import SyncOptions, SyncStats
from pg2qdrant.ui import UI

DIM = 512  # large enough to be stored out of line (TOAST): payload-only UPDATEs send it as 'u'

SCHEMA = f"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (
    id bigint PRIMARY KEY,
    title text,
    n integer,
    tags text[],
    meta jsonb,
    mac macaddr,
    mood mood,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    v vector({DIM})
);
CREATE INDEX items_updated_at ON items (updated_at);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
"""


def _vec(rng: np.random.Generator) -> str:
    return vector_literal(rng.normal(size=DIM).astype(np.float32))


def _row(rng: np.random.Generator, k: int) -> tuple:
    return (k, None if k % 9 == 0 else f"title {k} {rng.integers(1000)}", int(rng.integers(-50, 50)),
            [f"t{rng.integers(5)}", None], psycopg.types.json.Jsonb({"k": k, "big": 2**60 + k, "s": "x"}),
            f"08:00:2b:01:02:{k % 256:02x}", ["sad", "ok", "happy"][k % 3], _vec(rng))


INSERT = "INSERT INTO items (id, title, n, tags, meta, mac, mood, v) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"


def create_items(conn: psycopg.Connection, rows: int, seed: int = 1) -> None:
    conn.execute(SCHEMA)
    rng = np.random.default_rng(seed)
    with conn.cursor() as cur:
        cur.executemany(INSERT, [_row(rng, k) for k in range(1, rows + 1)])


def writing(elapsed: float, seconds: float, pending) -> bool:
    """Whether a workload writes on: for ``seconds``, then (up to a minute more) while ``pending()`` is true."""
    return elapsed < seconds or (pending is not None and pending() and elapsed < seconds + 60)


def kill_due(kills: list[float], elapsed: float) -> bool:
    """Whether the next planned kill (``kills``: moments, soonest first) is due; if so it is taken off, and a
    late one moves the rest by its lateness (the spacing between kills is kept)."""
    if not kills or elapsed <= kills[0]:
        return False
    late = elapsed - kills.pop(0)
    kills[:] = [t + late for t in kills]
    return True


class Workload:
    """Random writes from another connection, in small transactions, for ``seconds``."""

    def __init__(self, url: str, *, seed: int, deletes: bool = True, key_changes: bool = True,
                 truncate: bool = True, first_id: int = 1, last_id: int = 0):
        self.url = url
        self.rng = np.random.default_rng(seed)
        self.random = random.Random(seed)
        self.deletes, self.key_changes, self.truncate = deletes, key_changes, truncate
        self.ids = list(range(first_id, last_id + 1))
        self.next_id = 100_000
        self.counts: dict[str, int] = {}

    def _new_id(self) -> int:
        self.next_id += self.random.randint(1, 3)
        return self.next_id

    def _one(self, cur) -> None:
        ops = ["insert", "payload", "payload", "vector"]
        if self.deletes:
            ops.append("delete")
        if self.key_changes:
            ops.append("key")
        op = self.random.choice(ops) if self.ids else "insert"
        if op == "insert":
            k = self._new_id()
            cur.execute(INSERT, _row(self.rng, k))
            self.ids.append(k)
        elif op == "payload":  # the vector is not touched: pgoutput sends it as unchanged TOAST
            k = self.random.choice(self.ids)
            cur.execute("UPDATE items SET title = %s, n = n + 1, tags = %s, mood = %s WHERE id = %s",
                        (None if self.random.random() < 0.1 else f"edited {self.random.random()}",
                         ["a", f"b{self.random.randint(0, 9)}"], self.random.choice(["sad", "ok", "happy"]), k))
        elif op == "vector":
            k = self.random.choice(self.ids)
            value = None if self.random.random() < 0.1 else _vec(self.rng)
            cur.execute("UPDATE items SET v = %s, meta = %s WHERE id = %s",
                        (value, psycopg.types.json.Jsonb({"v": self.random.random() < 0.5}), k))
        elif op == "delete":
            k = self.ids.pop(self.random.randrange(len(self.ids)))
            cur.execute("DELETE FROM items WHERE id = %s", (k,))
        else:  # key change; sometimes with a payload change in the same statement
            i = self.random.randrange(len(self.ids))
            k, new = self.ids[i], self._new_id()
            if self.random.random() < 0.5:
                cur.execute("UPDATE items SET id = %s WHERE id = %s", (new, k))
            else:
                cur.execute("UPDATE items SET id = %s, title = 'moved' WHERE id = %s", (new, k))
            self.ids[i] = new
        self.counts[op] = self.counts.get(op, 0) + 1

    def truncate_and_reload(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("TRUNCATE items")
            self.ids = []
            with conn.cursor() as cur:
                for _ in range(40):
                    k = self._new_id()
                    cur.execute(INSERT, _row(self.rng, k))
                    self.ids.append(k)
        self.counts["truncate"] = 1

    def run(self, seconds: float, *, during=None, pending=None) -> None:
        """Write for ``seconds``; ``during(elapsed)`` is called between transactions (fault injection).
        With ``pending``, writing goes on (up to a minute more) while it returns true: a transaction
        that waited for a lock (the TRUNCATE behind a copy on a slow machine) must not end the run
        before the faults it was meant to carry have happened."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            start = time.monotonic()
            while writing(elapsed := time.monotonic() - start, seconds, pending):
                if self.truncate and "truncate" not in self.counts and elapsed > seconds / 2:
                    self.truncate_and_reload(conn)  # once per workload
                with conn.transaction(), conn.cursor() as cur:
                    for _ in range(self.random.choice([1, 1, 2, 3])):
                        self._one(cur)
                if during is not None:
                    during(elapsed)
                time.sleep(self.random.uniform(0, 0.01))


def wait_caught_up(url: str, slot: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    """Until the slot has acknowledged everything written so far (sync acks only applied changes);
    with ``proc``, fails at once when that sync process has exited."""
    with psycopg.connect(url, autocommit=True) as conn:
        target = parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                               (slot,)).fetchone()
            if row and parse_lsn(row[0]) >= target:
                return
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"sync exited with {proc.returncode} before the slot caught up with {target:X}")
            time.sleep(0.1)
    raise AssertionError(f"slot {slot} did not catch up with {target:X} in {timeout} s")


def wait_streaming(url: str, slot: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    """Until a walsender streams from the slot (START_REPLICATION done). The slot alone is not enough: the
    connection that created it holds it (active) while the initial copy reads its snapshot, and a SIGTERM
    sent then interrupts the copy (exit 130)."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute("SELECT r.state FROM pg_replication_slots s JOIN pg_stat_replication r "
                               "ON r.pid = s.active_pid WHERE s.slot_name = %s", (slot,)).fetchone()
            if row and row[0] in ("catchup", "streaming"):
                return
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"sync exited with {proc.returncode}")
            time.sleep(0.1)
    raise AssertionError(f"slot {slot} was not streaming within {timeout} s")


@pytest.fixture
def sdb(db):
    """The test database; its replication slots are dropped afterwards (they would block DROP DATABASE)."""
    yield db
    drop_database_slots(db)


def options(db, url: str, **kw) -> MigrationOptions:
    return MigrationOptions(pg_url=db.url, table="items", collection="c", qdrant_url=url, num_workers=1,
                            batch_size=64, **kw)


def compare(db, url: str, float_ulps: int = 0) -> int:
    target = open_target(parse_target_url(url))
    try:
        return assert_collection_equals_table(db.url, "items", target, float_ulps=float_ulps)
    finally:
        target.close()


def slot_of(db) -> str:
    return f"s_{db.name}"


# --- CDC ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["local", "edge"])
def test_cdc_initial_copy_during_workload_then_stream_equals_table(sdb, tmp_path, kind):
    if kind == "edge":
        pytest.importorskip("qdrant_edge")
    url = f"{kind}:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 150)
    slot = slot_of(sdb)
    workload = Workload(sdb.url, seed=7, last_id=150)
    stop, stats = threading.Event(), SyncStats()
    quiet = UI(quiet=True)

    def sync_thread():
        # Started while the workload already writes: the copy reads the slot's snapshot.
        time.sleep(0.3)
        run_sync(options(sdb, url), SyncOptions(slot=slot), quiet, initial_copy=True, stop=stop, stats=stats)

    worker = threading.Thread(target=sync_thread, daemon=True)
    worker.start()
    killed = []

    def kill_walsender(elapsed: float) -> None:
        # A walsender that dies mid-stream (server restart, admin): sync reconnects on its own.
        if not killed and elapsed > 2.0:
            with psycopg.connect(sdb.url, autocommit=True) as c:
                pid = c.execute("SELECT r.pid FROM pg_replication_slots s JOIN pg_stat_replication r "
                                "ON r.pid = s.active_pid WHERE s.slot_name = %s AND r.state IN "
                                "('streaming', 'catchup')", (slot,)).fetchone()
                if pid and pid[0]:
                    c.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
                    killed.append(pid[0])

    # Writing goes on until the walsender was killed and the stream has applied enough to check: on a slow
    # machine (a late start, a TRUNCATE waiting behind the copy) 4 s of writes can end before the stream began.
    workload.run(4.0, during=kill_walsender,
                 pending=lambda: not killed or stats.partial_updates == 0 or stats.changes <= 50)
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline:  # a slow machine was still copying
        kill_walsender(99.0)
        time.sleep(0.2)
    workload.run(0.5)
    wait_streaming(sdb.url, slot)
    wait_caught_up(sdb.url, slot)
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    assert killed and stats.reconnects >= 1
    assert stats.partial_updates > 0  # payload-only updates were applied in place, vectors kept
    assert stats.changes > 50
    assert set(workload.counts) >= {"insert", "payload", "vector", "delete", "key", "truncate"}
    assert compare(sdb, url) == len(workload.ids)


def test_cdc_reconnects_after_postgres_restart(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    slot = slot_of(sdb)
    stop, stats = threading.Event(), SyncStats()
    worker = threading.Thread(target=run_sync, args=(options(sdb, url), SyncOptions(slot=slot), UI(quiet=True)),
                              kwargs=dict(initial_copy=True, stop=stop, stats=stats), daemon=True)
    worker.start()
    wait_streaming(sdb.url, slot)
    workload = Workload(sdb.url, seed=12, truncate=False, last_id=30)
    workload.run(0.5)
    sdb.server.restart()  # every connection is cut; the server is back a moment later
    workload.run(0.5)
    wait_streaming(sdb.url, slot)
    wait_caught_up(sdb.url, slot)
    stop.set()
    worker.join(30)
    assert stats.reconnects >= 1
    assert compare(sdb, url) == len(workload.ids)


def _sync_command(db, url: str, slot: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pg2qdrant", "sync", "--pg.url", db.url, "--pg.table", "items",
            "--qdrant.url", url, "--qdrant.collection", "c", "--sync.slot", slot, "--migration.num-workers", "1",
            "--migration.batch-size", "64", *extra]


def test_cdc_sigkill_at_random_moments_then_restart_equals_table(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 120, seed=3)
    slot = slot_of(sdb)
    command = _sync_command(sdb, url, slot, "--sync.initial-copy")
    log = open(tmp_path / "sync.log", "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, stdout=log, stderr=log, env=env)

    proc = start()
    rng = random.Random(11)
    kills = [rng.uniform(0.3, 1.5), rng.uniform(2.0, 3.0), rng.uniform(3.5, 4.5)]  # the first may hit the copy
    state = {"proc": proc, "kills": 0}

    def killer(elapsed: float) -> None:
        if kill_due(kills, elapsed):
            state["proc"].send_signal(signal.SIGKILL)
            state["proc"].wait()
            state["kills"] += 1
            state["proc"] = start()

    workload = Workload(sdb.url, seed=5, last_id=120)
    try:
        workload.run(5.0, during=killer, pending=lambda: bool(kills))
        proc = state["proc"]
        wait_streaming(sdb.url, slot, proc=proc)
        wait_caught_up(sdb.url, slot)
        proc.send_signal(signal.SIGTERM)  # a clean stop
        assert proc.wait(30) == 0, (tmp_path / "sync.log").read_text()[-3000:]
    finally:
        if state["proc"].poll() is None:
            state["proc"].kill()
            state["proc"].wait()
        log.close()
    assert state["kills"] == 3
    assert compare(sdb, url) == len(workload.ids), (tmp_path / "sync.log").read_text()[-3000:]


def test_cdc_text_key_replica_identity_full_and_once(sdb, tmp_path, cli):
    """Text keys (read as text), REPLICA IDENTITY FULL (old row complete), key change with unchanged TOAST."""
    url = f"local:{tmp_path / 'q'}"
    rng = np.random.default_rng(2)
    sdb.execute(f"CREATE TABLE items (id text PRIMARY KEY, title text, v vector({DIM}), h halfvec(4));"
                "ALTER TABLE items REPLICA IDENTITY FULL")
    with sdb.connect() as conn:
        for k in range(20):
            conn.execute("INSERT INTO items VALUES (%s, %s, %s, '[1,2,3,4]')", (f"key-{k}", f"t{k}", _vec(rng)))
    slot = slot_of(sdb)
    base = ["sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.collection", "c",
            "--sync.slot", slot, "--migration.num-workers", "1"]
    r = cli(*base, "--sync.initial-copy", "--sync.once")
    assert r.exit_code == 0, r.output
    with sdb.connect() as conn:
        conn.execute("UPDATE items SET title = 'only title' WHERE id = 'key-1'")
        conn.execute("UPDATE items SET id = 'key-100' WHERE id = 'key-2'")  # vector unchanged TOAST
        conn.execute("UPDATE items SET id = 'key-101', title = 'x' WHERE id = 'key-3'")
        conn.execute("UPDATE items SET v = NULL, h = NULL WHERE id = 'key-4'")
        conn.execute("DELETE FROM items WHERE id = 'key-5'")
        conn.execute("INSERT INTO items VALUES ('7c8a0ab1-5c3a-4b5e-9a43-4e7e3a4d2a11', 'uuid-like text', NULL, NULL)")
    r = cli(*base, "--sync.once")
    assert r.exit_code == 0, r.output
    assert "Resuming from replication slot" in r.output
    assert compare(sdb, url) == 20
    r = cli("sync", "status", "--pg.url", sdb.url, "--qdrant.collection", "c", "--sync.slot", slot)
    assert r.exit_code == 0, r.output
    assert "last applied LSN" in r.stdout and "inactive" in r.stdout


def test_table_without_replica_identity_is_explained_and_not_published(sdb, tmp_path, cli):
    sdb.execute("CREATE TABLE items (id bigint NOT NULL, title text, v vector(3))")
    sdb.execute("INSERT INTO items VALUES (1, 'a', '[1,2,3]')")
    r = cli("sync", "--pg.url", sdb.url, "--pg.table", "items", "--pg.key-column", "id",
            "--qdrant.url", f"local:{tmp_path / 'q'}", "--qdrant.collection", "c", "--sync.initial-copy")
    assert r.exit_code == 2, r.output
    assert "has no primary key" in r.output and "REPLICA IDENTITY" in r.output and "Fix:" in r.output
    assert "local-test-password" not in r.output
    # The table was not added to a publication, so the application's UPDATEs keep working.
    assert sdb.execute("SELECT count(*) FROM pg_publication_tables")[0][0] == 0
    sdb.execute("UPDATE items SET title = 'b'")
    sdb.execute("CREATE UNIQUE INDEX items_id ON items (id)")
    r = cli("sync", "--pg.url", sdb.url, "--pg.table", "items", "--pg.key-column", "id",
            "--qdrant.url", f"local:{tmp_path / 'q'}", "--qdrant.collection", "c", "--sync.initial-copy")
    assert r.exit_code == 2 and "REPLICA IDENTITY USING INDEX items_id" in r.output


def test_sync_into_a_collection_of_another_shape_stops_before_publishing(sdb, tmp_path, cli):
    """Without the initial copy, the existing collection must fit the table (the shared shape check)."""
    sdb.execute("CREATE TABLE items (id bigint PRIMARY KEY, v vector(3)); INSERT INTO items VALUES (1, '[1,2,3]')")
    from qdrant_client import QdrantClient, models
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("c", vectors_config={"v": models.VectorParams(size=4, distance=models.Distance.DOT)})
    client.close()
    r = cli("sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", f"local:{tmp_path / 'q'}",
            "--qdrant.collection", "c", "--sync.slot", slot_of(sdb), "--sync.once")
    assert r.exit_code == 2, r.output
    assert "Collection 'c' does not match the table" in r.stderr
    assert "vector 'v' has size 4 in the collection, 3 in the table" in r.stderr and "Fix:" in r.stderr
    assert sdb.execute("SELECT count(*) FROM pg_publication_tables")[0][0] == 0
    assert sdb.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot_of(sdb),))[0][0] == 0


def test_cdc_partitioned_table_composite_key_rows_moving_between_partitions(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    rng = np.random.default_rng(8)
    sdb.execute(f"CREATE TABLE items (id bigint, cat int, title text, v vector({DIM}), PRIMARY KEY (id, cat)) "
                "PARTITION BY LIST (cat);"
                "CREATE TABLE items_1 PARTITION OF items FOR VALUES IN (1);"
                "CREATE TABLE items_2 PARTITION OF items FOR VALUES IN (2);")
    with sdb.connect() as conn:
        for k in range(30):
            conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", (k, 1 + k % 2, f"t{k}", _vec(rng)))
    base = ["sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.collection", "c",
            "--sync.slot", slot_of(sdb), "--migration.num-workers", "1", "--sync.once"]
    r = cli(*base, "--sync.initial-copy")
    assert r.exit_code == 0, r.output
    with sdb.connect() as conn:
        conn.execute("UPDATE items SET cat = 2 WHERE id IN (0, 2, 4)")  # to the other partition
        conn.execute("UPDATE items SET title = 'same partition' WHERE id = 1")  # vector unchanged TOAST
        conn.execute("DELETE FROM items WHERE id = 3")
        conn.execute("INSERT INTO items VALUES (100, 1, 'new', NULL)")
    r = cli(*base)
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 30
    sdb.execute("TRUNCATE items")  # the root: the collection is emptied
    sdb.execute("INSERT INTO items VALUES (7, 1, 'after truncate', NULL)")
    r = cli(*base)
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == 1


def test_sync_drop_removes_slot_and_publication(sdb, tmp_path, cli):
    with sdb.connect() as conn:
        create_items(conn, 5)
    slot = slot_of(sdb)
    # A slot left by a run killed during its initial copy: the next --sync.initial-copy replaces it.
    sdb.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    args = ["--pg.url", sdb.url, "--qdrant.collection", "c", "--sync.slot", slot]
    r = cli("sync", "--pg.table", "items", "--qdrant.url", f"local:{tmp_path / 'q'}", "--migration.num-workers",
            "1", "--sync.initial-copy", "--sync.once", *args)
    assert r.exit_code == 0, r.output
    assert "no initial copy finished from it" in r.output
    assert compare(sdb, f"local:{tmp_path / 'q'}") == 5
    assert sdb.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0][0] == 1
    r = cli("sync", "drop", *args)
    assert r.exit_code == 0, r.output
    assert sdb.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0][0] == 0
    assert sdb.execute("SELECT count(*) FROM pg_publication")[0][0] == 0
    r = cli("sync", "status", *args)
    assert r.exit_code == 2 and "no replication slot" in r.output


def test_derived_names_are_valid_identifiers():
    assert derived_name("pg2qdrant", "docs") == "pg2qdrant_docs"
    for name in ("My Collection!", "x" * 200, "Ünïcode-name"):
        derived = derived_name("pg2qdrant", name)
        assert len(derived) <= 63 and derived.replace("_", "").isalnum() and derived == derived.lower()
    assert derived_name("pg2qdrant", "A") != derived_name("pg2qdrant", "a")


# --- poll mode ------------------------------------------------------------------------------------

def test_poll_mode_without_deletes_matches(sdb, tmp_path):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 100, seed=4)
    stop, stats = threading.Event(), SyncStats()
    sync = SyncOptions(mode="poll", updated_column="updated_at", interval_s=0.3)
    worker = threading.Thread(target=run_sync, args=(options(sdb, url), sync, UI(quiet=True)),
                              kwargs=dict(stop=stop, stats=stats), daemon=True)
    worker.start()
    workload = Workload(sdb.url, seed=9, deletes=False, key_changes=False, truncate=False, last_id=100)
    workload.run(2.5, pending=lambda: stats.changes < 100)  # a slow start may not have polled yet
    stop.set()
    worker.join(30)
    # One more round after the workload (a scheduled poll would do the same).
    run_sync(options(sdb, url), SyncOptions(mode="poll", updated_column="updated_at", once=True), UI(quiet=True))
    assert stats.changes >= 100
    assert compare(sdb, url) == len(workload.ids)


def test_poll_mode_with_reconcile_matches_deletes(sdb, tmp_path, cli):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 100, seed=6)
    args = ["sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.collection", "c",
            "--migration.num-workers", "1", "--sync.mode", "poll", "--sync.updated-column", "updated_at",
            "--sync.once"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "does not see deletes" in r.output
    workload = Workload(sdb.url, seed=10, last_id=100)  # deletes, key changes, a TRUNCATE
    workload.run(1.5)
    r = cli(*args, "--sync.reconcile")
    assert r.exit_code == 0, r.output
    assert "orphans deleted" in r.stdout
    assert compare(sdb, url) == len(workload.ids)
    # Reconcile alone: a point that went missing is written again.
    target = open_target(parse_target_url(url))
    try:
        from pg2qdrant.destination import operations as ops
        target.apply("c", [ops.DeletePoints((workload.ids[0],))])
    finally:
        target.close()
    r = cli(*args[:-5], "--sync.mode", "reconcile")
    assert r.exit_code == 0, r.output
    assert compare(sdb, url) == len(workload.ids)


def _points(path, collection: str = "c") -> dict:
    """Every point of a local-mode collection: payload and vectors as plain values."""
    from qdrant_client import QdrantClient
    client = QdrantClient(path=str(path))
    try:
        out = {}
        for p in client.scroll(collection, limit=1000, with_vectors=True)[0]:
            vectors = {name: (sorted(zip(v.indices, v.values)) if hasattr(v, "indices") else list(v))
                       for name, v in (p.vector or {}).items()}
            out[p.id] = (p.payload, vectors)
        return out
    finally:
        client.close()


def test_cdc_bm25_vectors_follow_their_text_like_a_fresh_migrate(sdb, tmp_path, cli):
    """--qdrant.bm25: a changed text is embedded again (also in a partial update, when another column is
    unchanged TOAST), an update that leaves the TOASTed text unchanged keeps the vector, an emptied text
    loses it; after catch-up the collection equals a fresh migrate with the same flags."""
    rng = random.Random(5)

    def noise(n: int) -> str:  # incompressible words: stored out of line (TOAST)
        return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(n))

    sdb.execute("CREATE TABLE items (id bigint PRIMARY KEY, body text, notes text, n int, v vector(4))")
    with sdb.connect() as conn:
        for k in range(12):
            conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s, '[1,2,3,4]')",
                         (k, noise(800) if k < 6 else f"short text {k} about zebras", noise(800), k))
    slot = slot_of(sdb)
    # dot: local mode stores a cosine vector normalised once a point is updated in place, not on upsert
    bm25 = ["--qdrant.bm25", "body", "--qdrant.bm25-language", "english", "--qdrant.distance-metric", "v=dot"]
    base = ["sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", f"local:{tmp_path / 'q'}",
            "--qdrant.collection", "c", "--sync.slot", slot, "--migration.num-workers", "1", *bm25]
    r = cli(*base, "--sync.initial-copy", "--sync.once")
    assert r.exit_code == 0, r.output
    with sdb.connect() as conn:
        conn.execute("UPDATE items SET n = 100 WHERE id = 1")  # body and notes: unchanged TOAST
        conn.execute("UPDATE items SET body = 'a new text about quartz' WHERE id = 2")  # notes: unchanged TOAST
        conn.execute("UPDATE items SET body = '' WHERE id = 3")  # partial; no token: the vector goes
        conn.execute("UPDATE items SET body = '!!!' WHERE id = 7")
        conn.execute("UPDATE items SET body = NULL WHERE id = 8")
        conn.execute("UPDATE items SET body = 'zebras again, changed' WHERE id = 9")
        conn.execute("UPDATE items SET body = 'back from nothing' WHERE id = 3")
        conn.execute("UPDATE items SET body = '' WHERE id = 4")
        conn.execute("INSERT INTO items VALUES (20, 'inserted text', 'x', 20, '[4,3,2,1]')")
        conn.execute("DELETE FROM items WHERE id = 10")
    r = cli(*base, "--sync.once")
    assert r.exit_code == 0, r.output
    fresh = tmp_path / "fresh"
    r = cli("migrate", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", f"local:{fresh}",
            "--qdrant.collection", "c", "--migration.num-workers", "1", *bm25)
    assert r.exit_code == 0, r.output
    synced, expected = _points(tmp_path / "q"), _points(fresh)
    assert synced == expected
    toasted = sdb.execute("SELECT pg_column_size(body) < octet_length(body) OR pg_column_size(body) > 2000 "
                          "FROM items WHERE id = 1")[0][0]
    assert toasted  # stored out of line: the n-only update sent it as unchanged TOAST
    assert "body-bm25" not in expected[4][1] and "body-bm25" not in expected[8][1]
    assert "body-bm25" in expected[2][1] and "body-bm25" in expected[1][1]
    # Restarted with other BM25 settings: every point is written again with them (no mixture of encodings).
    german = [a if a != "english" else "german" for a in base]
    r = cli(*german, "--sync.once")
    assert r.exit_code == 0, r.output
    assert "The --qdrant.bm25 settings differ from those 'c' was written with" in r.output
    fresh_german = tmp_path / "fresh-german"
    r = cli("migrate", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", f"local:{fresh_german}",
            "--qdrant.collection", "c", "--migration.num-workers", "1", *[a if a != "english" else "german" for a in bm25])
    assert r.exit_code == 0, r.output
    assert _points(tmp_path / "q") == _points(fresh_german) != expected
