"""`sync --config FILE`: the tables of a migration file through one publication and one slot.

Real PostgreSQL, real local-mode collections, a real concurrent workload on every table
(inserts, payload-only updates whose 512-d vector stays unchanged TOAST, vector-only updates,
deletes, a TRUNCATE of one table), real SIGKILLs; afterwards each collection must equal its
table, and the server never holds more than one slot of ours.
"""

from __future__ import annotations

import json
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
from test_config_file import env_for, no_password
from test_sync import kill_due, sdb, wait_caught_up, wait_streaming, writing  # noqa: F401 (sdb: fixture)

from helpers import assert_collection_equals_table, fill_items, vector_literal
from pg2qdrant.destination import open_target
from pg2qdrant.destination.address import parse_target_url

DIMS = {"docs": 512, "parts": 16, "notes": 16}  # docs: stored out of line, so payload-only updates send 'u'
SLOT = "pg2qdrant_file_tables"


def _create(db, name: str) -> None:
    dim, key = DIMS[name], "text" if name == "notes" else "bigint"
    if name == "parts":
        db.execute(f"CREATE TABLE parts (id bigint PRIMARY KEY, title text, n int, score float8, v vector({dim})) "
                   "PARTITION BY RANGE (id)")
        db.execute("CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100)")
        db.execute("CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (100) TO (1000000)")
    else:
        db.execute(f"CREATE TABLE {name} (id {key} PRIMARY KEY, title text, n int, score float8, v vector({dim}))")
    with db.connect() as conn:
        fill_items(conn, name, 60, dim, key=key, seed=len(name))


@pytest.fixture
def tables(sdb):  # noqa: F811
    for name in DIMS:
        _create(sdb, name)
    return sdb


def write_file(db, tmp_path, names) -> str:
    text = f'pg.url = "{no_password(db.url)}"\nqdrant.url = "local:{tmp_path / "q"}"\nmigration.num-workers = 1\n'
    for name in names:
        text += f'\n[[table]]\nname = "{name}"\npg.table = "{name}"\nqdrant.collection = "{name}"\n'
    path = tmp_path / "tables.toml"
    path.write_text(text)
    return str(path)


class Workload:
    """Random small transactions over several tables from another connection."""

    def __init__(self, url: str, names, *, seed: int, truncate: str | None = None):
        self.url, self.names, self.truncate = url, list(names), truncate
        self.random = random.Random(seed)
        self.rng = np.random.default_rng(seed)
        self.ids = {n: list(range(1, 61)) for n in self.names}
        self.next_id = 1000
        self.counts: dict[str, int] = {}
        self.stop = threading.Event()

    def _key(self, name: str, k: int):
        return f"key-{k}" if name == "notes" else k

    def _vec(self, name: str) -> str:
        return vector_literal(self.rng.normal(size=DIMS[name]).astype(np.float32))

    def _one(self, cur) -> None:
        name = self.random.choice(self.names)
        ids = self.ids[name]
        op = self.random.choice(["insert", "payload", "payload", "vector", "delete"]) if ids else "insert"
        if op == "insert":
            self.next_id += 1
            ids.append(self.next_id)
            cur.execute(f"INSERT INTO {name} (id, title, n, v) VALUES (%s, %s, %s, %s)",
                        (self._key(name, self.next_id), f"new {self.next_id}", self.next_id, self._vec(name)))
        elif op == "payload":  # the vector is not touched
            cur.execute(f"UPDATE {name} SET title = %s, n = n + 1 WHERE id = %s",
                        (None if self.random.random() < 0.1 else f"edited {self.random.random()}",
                         self._key(name, self.random.choice(ids))))
        elif op == "vector":  # only the vector
            cur.execute(f"UPDATE {name} SET v = %s WHERE id = %s",
                        (self._vec(name), self._key(name, self.random.choice(ids))))
        else:
            k = ids.pop(self.random.randrange(len(ids)))
            cur.execute(f"DELETE FROM {name} WHERE id = %s", (self._key(name, k),))
        self.counts[op] = self.counts.get(op, 0) + 1

    def run(self, seconds: float, *, during=None, pending=None) -> None:
        """As test_sync.Workload.run: ``pending`` keeps it writing until the planned faults happened."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            start = time.monotonic()
            while writing(elapsed := time.monotonic() - start, seconds, pending) and not self.stop.is_set():
                if self.truncate and "truncate" not in self.counts and elapsed > seconds / 2:
                    conn.execute(f"TRUNCATE {self.truncate}")
                    self.ids[self.truncate] = []
                    self.counts["truncate"] = 1
                with conn.transaction(), conn.cursor() as cur:
                    for _ in range(self.random.choice([1, 2, 3])):
                        self._one(cur)
                if during is not None:
                    during(elapsed)
                time.sleep(self.random.uniform(0, 0.01))


def _slots(db) -> list[str]:
    with psycopg.connect(db.url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                           (db.name,)).fetchall()]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pg2qdrant", *args]


def assert_collections_equal_tables(db, tmp_path, names) -> None:
    target = open_target(parse_target_url(f"local:{tmp_path / 'q'}"))
    try:
        for name in names:
            assert_collection_equals_table(db.url, name, target, name)
    finally:
        target.close()


def test_three_tables_one_slot_workload_sigkill_and_restart(tables, tmp_path, cli):
    path = write_file(tables, tmp_path, DIMS)
    env = {**os.environ, **env_for(tables), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "sync.log", "ab")
    # migrate --then-sync: the copy of all three from the slot's snapshot, then the stream
    state = {"proc": subprocess.Popen(_command("migrate", "--config", path, "--then-sync"), stdout=log,
                                      stderr=log, env=env), "kills": 0}
    seen_slots: set[str] = set()
    kills = [2.0, 4.0]

    def during(elapsed: float) -> None:
        names = _slots(tables)
        seen_slots.update(names)
        assert len(names) <= 1, names  # only one slot on the server, throughout
        if kill_due(kills, elapsed):
            state["proc"].send_signal(signal.SIGKILL)
            state["proc"].wait()
            state["kills"] += 1
            state["proc"] = subprocess.Popen(_command("sync", "--config", path), stdout=log, stderr=log, env=env)

    try:
        wait_streaming(tables.url, SLOT, proc=state["proc"])
        workload = Workload(tables.url, DIMS, seed=7, truncate="parts")
        workload.run(6.0, during=during, pending=lambda: bool(kills))
        wait_streaming(tables.url, SLOT, proc=state["proc"])
        wait_caught_up(tables.url, SLOT)
        state["proc"].send_signal(signal.SIGTERM)
        assert state["proc"].wait(30) == 0, (tmp_path / "sync.log").read_text()[-3000:]
    finally:
        if state["proc"].poll() is None:
            state["proc"].kill()
            state["proc"].wait()
        log.close()
    output = (tmp_path / "sync.log").read_text()
    assert state["kills"] == 2 and seen_slots == {SLOT}, output[-3000:]
    assert {"insert", "payload", "vector", "delete", "truncate"} <= set(workload.counts)
    assert "Resuming from replication slot" in output, output[-3000:]  # (a restart may be killed before it says so)
    assert_collections_equal_tables(tables, tmp_path, DIMS)
    r = cli("verify", "--config", path, "--verify.queries", "3", env=env_for(tables))
    assert r.exit_code == 0, r.output
    r = cli("sync", "--config", path, "status", env=env_for(tables))
    assert r.exit_code == 0 and SLOT in r.stdout and "docs" in r.stdout and "notes" in r.stdout, r.output


def test_a_table_added_to_the_file_is_copied_and_joined_under_concurrent_writes(tables, tmp_path, cli):
    env = env_for(tables)
    path = write_file(tables, tmp_path, ["docs", "parts"])
    r = cli("sync", "--config", path, "--sync.initial-copy", "--sync.once", env=env)
    assert r.exit_code == 0, r.output
    # notes joins while every table (notes too) is written to
    workload = Workload(tables.url, DIMS, seed=3)
    writer = threading.Thread(target=workload.run, args=(60.0,))
    writer.start()
    try:
        time.sleep(0.5)
        path = write_file(tables, tmp_path, DIMS)
        r = cli("sync", "--config", path, "--sync.once", env=env)
        assert r.exit_code == 0, r.output
        assert "Joining public.notes to slot" in r.output and "Added public.notes to publication" in r.output
        time.sleep(0.5)
    finally:
        workload.stop.set()
        writer.join()
    assert workload.counts.get("insert", 0) > 5
    r = cli("sync", "--config", path, "--sync.once", env=env)
    assert r.exit_code == 0, r.output
    assert "Joining" not in r.output  # joined once
    assert _slots(tables) == [SLOT]  # the join's temporary slot went with its connection
    assert_collections_equal_tables(tables, tmp_path, DIMS)
    # a table left out of the file leaves the publication
    path = write_file(tables, tmp_path, ["docs", "notes"])
    r = cli("sync", "--config", path, "--sync.once", env=env)
    assert r.exit_code == 0 and "no longer in the file" in r.output, r.output
    r = cli("sync", "--config", path, "drop", env=env)
    assert r.exit_code == 0 and "dropped" in r.output, r.output
    assert _slots(tables) == []


def test_metrics_of_one_slot_are_per_table(tables, tmp_path):
    """--metrics-port with a file: copy progress, changes and latency by table and collection;
    the slot's own series (acknowledged LSN, transactions) carry empty table/collection labels."""
    from test_service import scrape, wait_for
    path = write_file(tables, tmp_path, ["docs", "notes"])
    log_file = tmp_path / "sync.jsonl"
    env = {**os.environ, **env_for(tables), "PYTHONUNBUFFERED": "1"}
    out = open(tmp_path / "out.txt", "ab")
    proc = subprocess.Popen(_command("sync", "--config", path, "--sync.initial-copy", "--metrics-port", "0",
                                     "--log-format", "json", "--log-file", str(log_file)),
                            stdout=out, stderr=out, env=env)

    def of(samples, name, table, **labels):
        return samples.get((name, tuple(sorted({"table": table, "collection": table if table else "",
                                                 **labels}.items()))), 0.0)
    try:
        def listening():
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()
            events = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []
            return next((e["port"] for e in events if e.get("event") == "metrics_listening"), None)

        port = wait_for(listening, "the metrics server")
        wait_streaming(tables.url, SLOT, proc=proc)
        before = scrape(port)
        assert of(before, "pg2qdrant_migrate_rows_total", "docs") == 60
        assert of(before, "pg2qdrant_migrate_rows_total", "notes") == 60
        with psycopg.connect(tables.url, autocommit=True) as conn:
            conn.execute("UPDATE docs SET title = 'x' WHERE id IN (1, 2, 3)")
            conn.execute("DELETE FROM notes WHERE id = 'key-1'")
            conn.execute("UPDATE parts SET title = 'not in the file' WHERE id = 1")
        wait_caught_up(tables.url, SLOT)
        after = wait_for(lambda: (s := scrape(port)) and
                         of(s, "pg2qdrant_sync_changes_total", "notes", kind="delete") == 1 and s, "the counters")
        assert of(after, "pg2qdrant_sync_changes_total", "docs", kind="update") == 3
        assert of(after, "pg2qdrant_sync_changes_total", "docs", kind="delete") == 0
        assert of(after, "pg2qdrant_sync_changes_total", "notes", kind="update") == 0
        assert of(after, "pg2qdrant_sync_apply_latency_seconds_count", "docs") == 1
        assert of(after, "pg2qdrant_sync_apply_latency_seconds_count", "notes") == 1
        assert of(after, "pg2qdrant_sync_transactions_total", "") - of(before, "pg2qdrant_sync_transactions_total", "") >= 2
        assert of(after, "pg2qdrant_sync_acknowledged_lsn", "") > 0
        assert not any(dict(labels).get("table") == "parts" for _, labels in after)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "out.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
