"""Model-based test of sync's invariant (issue 18).

**The invariant:** once sync has caught up, every collection it keeps equals a fresh
``pg2qdrant migrate`` of its table with the same flags: the same point IDs, the same full
payloads, bit-exact vectors, no other point.

A hypothesis state machine (:class:`SyncModel`, ``RuleBasedStateMachine``) drives a real
PostgreSQL (the harness's server, one new database per sequence) and a real
``pg2qdrant sync`` subprocess writing to local-mode folders, through random sequences of
operations; its ``check`` rule (and the end of every sequence) waits until the slot's
``confirmed_flush_lsn`` passes the current WAL position with sync running, migrates every
synced table afresh into a new folder and compares point by point. Sync keeps its folder
locked while it runs, so the check reads a copy of that folder (every change was applied
with ``wait=true`` before the slot acknowledged it, so the copy holds them all).

Hypothesis' stateful testing is fast enough with a real server: a sequence of 8 steps takes 5 to
10 s (a new database, one sync start, a fresh migrate per check), the CI profile (3 sequences of
8 steps per server, derandomized) 25 to 40 s per server. Shrinking is off by default (see below).

The operations come in families, switched on and off as a whole:

======================  ==========================================================================
``dml``                 inserts, payload-only updates (the 512-d vector stays unchanged TOAST, sent
                        as 'u'), vector updates, columns set to NULL, deletes, key changes; one
                        to four of them in one transaction
``truncate``            TRUNCATE + reload (of a partitioned table: the root, or one partition)
``restart``             sync stopped by SIGTERM (must exit 0), SIGKILLed, started again
``kill_copy``           sync SIGKILLed during ``--sync.initial-copy``, then started with it again
``slot_drop``           the slot dropped while sync is stopped, writes, then the documented recovery
                        ("A lost slot": ``sync drop``, then ``sync --sync.initial-copy``)
``config``              ``sync --config FILE`` over two tables; entries added to and removed from
                        the file between runs (never fewer than two)
``config_shrink``       ... the file shrinks to a single entry
``config_where``        ... two entries on one table (``pg.where``: id < 1000, id >= 1000) into two
                        collections
``where_percent``       ... plus an entry whose ``pg.where`` holds a '%' (``id % 2 = 0``)
``config_targets``      ... the same table into two targets (two local folders)
``ddl``                 ADD (with and without DEFAULT) / DROP / RENAME COLUMN of a payload column
``partition``           single-table runs of a partitioned table; partition DETACH / ATTACH /
                        DROP / CREATE
======================  ==========================================================================

``PENDING_FAMILIES`` lists the families that break the invariant on today's code (each with
the bug it hits); they are off unless named. Environment:

- ``PG2QDRANT_MODEL_FAMILIES``: comma-separated families to run (``all``: every one,
  ``default``: those not pending; ``+ddl`` adds to the default, ``-restart`` removes).
- ``PG2QDRANT_MODEL_EXAMPLES`` / ``PG2QDRANT_MODEL_STEPS``: sequences per server and steps per
  sequence (CI: a few short, derandomized sequences; e.g. 200 / 50 for a long run).
- ``PG2QDRANT_MODEL_SEED``: a seed instead of the derandomized CI run.
- ``PG2QDRANT_MODEL_SHRINK=1``: minimise a failing sequence (replays it many times: minutes).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, run_state_machine_as_test
from hypothesis.stateful import rule as _rule
from test_config_file import env_for, no_password
from test_sync import INSERT, _row, _sync_command, create_items, wait_caught_up, wait_streaming

from conftest import Database, run_cli
from helpers import drop_database_slots, vector_literal

pytestmark = pytest.mark.slow

FAMILIES = ("dml", "truncate", "restart", "kill_copy", "slot_drop", "config", "config_shrink", "config_where",
            "where_percent", "config_targets", "ddl", "partition")

# Families that break the invariant on today's code, each with the bug (see the failures these
# sequences found in the module's git history / the issue 18 report). Switch one on with
# PG2QDRANT_MODEL_FAMILIES=+name once its fix is merged, and remove it from here.
# Families that break the invariant on today's code, each with the bug it hits (off unless named).
# Every family found a bug when this test was written; each is fixed, with its own regression test:
# slot_drop, kill_copy (tests/sync/test_sync_recopy.py), config_shrink, config_where, config_targets
# (tests/sync/test_sync_many_entries.py), where_percent (test_sync_recopy.py), ddl, partition
# (tests/sync/test_sync_ddl.py). A new one goes here with its failure until it is fixed.
PENDING_FAMILIES: dict[str, str] = {}


def _enabled_families() -> frozenset[str]:
    default = {f for f in FAMILIES if f not in PENDING_FAMILIES}
    spec = os.environ.get("PG2QDRANT_MODEL_FAMILIES", "").strip()
    if not spec or spec == "default":
        return frozenset(default)
    if spec == "all":
        return frozenset(FAMILIES)
    items = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = set(default) if all(s[0] in "+-" for s in items) else set()
    for item in items:
        name = item.lstrip("+-")
        if name not in FAMILIES:
            raise ValueError(f"PG2QDRANT_MODEL_FAMILIES: unknown family {name!r} (known: {', '.join(FAMILIES)})")
        (chosen.discard if item.startswith("-") else chosen.add)(name)
    return frozenset(chosen | {"dml"})


ENABLED = _enabled_families()
EXAMPLES = int(os.environ.get("PG2QDRANT_MODEL_EXAMPLES", "3"))
STEPS = int(os.environ.get("PG2QDRANT_MODEL_STEPS", "8"))
SEED = os.environ.get("PG2QDRANT_MODEL_SEED")
# Shrinking a failing sequence replays it against the real server many times (minutes): off by
# default so a failure in CI reports its sequence within the test's timeout; on to minimise one.
SHRINK = os.environ.get("PG2QDRANT_MODEL_SHRINK", "") not in ("", "0")

CATCH_UP_S = 60  # each wait of a check gives up (with a message) after this long
STOP_S = 30  # SIGTERM -> exit
PART_DIM = 16
PART_SPAN = 1000  # partition parts_<i> holds ids [i * PART_SPAN, (i + 1) * PART_SPAN)
# Euclid: vectors are stored as sent. With Cosine, qdrant-client's local mode persists a point
# rewritten by set_payload with its normalised vector but an upserted one as given, so a folder
# reopened would differ from a fresh migrate's in the last bits for reasons that are not sync's.
DISTANCE = ("--qdrant.distance-metric", "v=euclid")
MIGRATE_FLAGS = ("--migration.num-workers", "1", "--migration.batch-size", "64", *DISTANCE)
_names = itertools.count()


def rule(**kwargs):
    """hypothesis' ``rule``, counting the steps run (for the summary line)."""
    def decorate(f):
        def step(self, **args):
            RUNS["steps"] += 1
            return f(self, **args)
        step.__name__, step.__doc__ = f.__name__, f.__doc__
        return _rule(**kwargs)(step)
    return decorate


def on(*families: str) -> bool:
    return all(f in ENABLED for f in families)


@dataclass(frozen=True)
class Entry:
    """One synced collection: a table (and a row filter) into a collection of a local folder."""
    name: str
    table: str
    folder: str  # "q1" or "q2", under the sequence's work folder
    where: str | None = None

    @property
    def collection(self) -> str:
        return self.name


# Entries a migration file may hold (config mode). items: 512-d vectors (TOAST), parts: partitioned.
POOL = {
    "items": Entry("items", "items", "q1"),
    "parts": Entry("parts", "parts", "q1"),
    "items_low": Entry("items_low", "items", "q1", "id < 1000"),
    "items_high": Entry("items_high", "items", "q1", "id >= 1000"),
    "items_q2": Entry("items_q2", "items", "q2"),
    "items_even": Entry("items_even", "items", "q1", "id % 2 = 0"),
}


def _pool_allowed(entry: Entry) -> bool:
    if entry.where:
        return on("where_percent" if "%" in entry.where else "config_where")
    if entry.folder != "q1":
        return on("config_targets")
    return True


# --- comparing a synced collection with a fresh migrate ----------------------------------------

def read_points(folder: Path, collection: str) -> dict:
    """{id: (payload, {vector name: float32 bytes or sparse pair})} of a local-mode folder."""
    from qdrant_client import QdrantClient
    client = QdrantClient(path=str(folder))
    try:
        if not client.collection_exists(collection):
            return {}
        points, offset = {}, None
        while True:
            records, offset = client.scroll(collection, limit=1000, offset=offset, with_payload=True,
                                            with_vectors=True)
            for r in records:
                vectors = r.vector if isinstance(r.vector, dict) else {"": r.vector}
                points[r.id] = (r.payload or {}, {name: _vector_key(v) for name, v in (vectors or {}).items()})
            if offset is None:
                return points
    finally:
        client.close()


def _vector_key(v):
    if hasattr(v, "indices"):
        return ("sparse", tuple(v.indices), np.asarray(v.values, dtype=np.float32).tobytes())
    return np.asarray(v, dtype=np.float32).tobytes()


def _show(point) -> str:
    if point is None:
        return "<no point>"
    payload, vectors = point
    shown = {n: (np.frombuffer(v, np.float32)[:3].tolist() if isinstance(v, bytes) else v) for n, v in vectors.items()}
    return f"payload={payload} vectors(first 3)={shown}"


def diff_points(synced: dict, fresh: dict, limit: int = 5) -> list[str]:
    """Readable differences (synced collection vs. a fresh migrate), first ``limit`` IDs."""
    lines = []
    for key in sorted(set(synced) | set(fresh), key=str):
        a, b = synced.get(key), fresh.get(key)
        if a == b:
            continue
        what = "extra point" if b is None else "missing point" if a is None else \
            "payload differs" if a[0] != b[0] else "vectors differ"
        lines.append(f"  id {key!r}: {what}\n    synced: {_show(a)}\n    migrate: {_show(b)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... {len(lines) - limit} more"]
    return lines


# --- the machine ---------------------------------------------------------------------------------

class SyncModel(RuleBasedStateMachine):
    """One sequence: a new database, a sync process, random operations, invariant checks."""

    server = None  # set by the test (pg_server)
    workdir: Path = Path()  # set by the test (tmp_path)

    def __init__(self):
        super().__init__()
        self.n = next(_names)
        self.dir = self.workdir / f"seq{self.n}"
        self.dir.mkdir(parents=True)
        self.db = Database(self.server, f"model{os.getpid()}_{self.n}")
        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db.name}" TEMPLATE template_vec')
        self.slot = f"s_{self.db.name}"
        self.proc: subprocess.Popen | None = None
        self.log = open(self.dir / "sync.log", "ab")
        self.rng = np.random.default_rng(self.n)
        self.copy_pending = True  # the next start copies (a copy not known to have finished)
        self.slot_lost = False
        self.mode = "single"
        self.entries: list[Entry] = []
        self.partitions: dict[int, str] = {}  # attached partition index -> name
        self.detached: dict[int, str] = {}
        self.extra_columns: list[str] = []
        self.column_names = itertools.count(1)
        self.checks = 0

    # -- plumbing ------------------------------------------------------------------------------

    def folder(self, name: str) -> Path:
        return self.dir / name

    def _conn(self) -> psycopg.Connection:
        return self.db.connect()

    def _tail(self) -> str:
        self.log.flush()
        return (self.dir / "sync.log").read_text(errors="replace")[-4000:]

    def _env(self) -> dict[str, str]:
        return {**os.environ, **env_for(self.db), "PYTHONUNBUFFERED": "1"}

    def _write_file(self) -> Path:
        text = (f'pg.url = "{no_password(self.db.url)}"\nsync.slot = "{self.slot}"\n'
                f'migration.num-workers = 1\nmigration.batch-size = 64\nqdrant.distance-metric = {{ v = "euclid" }}\n')
        for e in self.entries:
            text += (f'\n[[table]]\nname = "{e.name}"\npg.table = "{e.table}"\n'
                     f'qdrant.url = "local:{self.folder(e.folder)}"\nqdrant.collection = "{e.collection}"\n')
            if e.where:
                text += f'pg.where = "{e.where}"\n'
        path = self.dir / "tables.toml"
        path.write_text(text)
        return path

    def _command(self, *extra: str) -> list[str]:
        if self.mode == "config":
            return [sys.executable, "-m", "pg2qdrant", "sync", "--config", str(self._write_file()), *extra]
        (entry,) = self.entries
        command = _sync_command(self.db, f"local:{self.folder(entry.folder)}", self.slot, *DISTANCE, *extra)
        command[command.index("--pg.table") + 1] = entry.table
        command[command.index("--qdrant.collection") + 1] = entry.collection
        return command

    def start(self) -> None:
        assert self.proc is None and not self.slot_lost
        extra = ("--sync.initial-copy",) if self.copy_pending else ()
        self.log.write(f"\n=== start {' '.join(extra)}\n".encode())
        self.log.flush()
        self.started_at = self.log.tell()
        self.proc = subprocess.Popen(self._command(*extra), stdout=self.log, stderr=self.log, env=self._env())

    def _since_start(self) -> str:
        with open(self.dir / "sync.log", "rb") as f:
            f.seek(self.started_at)
            return f.read().decode(errors="replace")

    def _wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self._since_start():
            if self.proc.poll() is not None:
                raise AssertionError(f"sync exited with {self.proc.returncode} before {text!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sync did not print {text!r} within {timeout} s")
            time.sleep(0.1)

    def _wait_started(self) -> None:
        """Until the process has printed its first line: before that, Python has not yet installed
        sync's SIGTERM handler (a SIGTERM then ends the interpreter, as for any program)."""
        deadline = time.monotonic() + STOP_S
        while (self.dir / "sync.log").stat().st_size <= self.started_at and self.proc.poll() is None:
            assert time.monotonic() < deadline, f"sync printed nothing within {STOP_S} s of its start"
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: sync must stop cleanly (exit 0)."""
        self._wait_started()
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"sync did not stop within {STOP_S} s of SIGTERM\n{self._tail()}") from None
        if code in (-signal.SIGINT, -signal.SIGTERM) and not self._since_start().strip():
            # The signal came before the interpreter had started the program (it printed nothing, and
            # Python had not installed its handlers): ended as any program then is; nothing was done
            # (a pending initial copy stays pending).
            return
        # -2 (SIGINT's own exit) with "Interrupted." printed: seen on a SIGTERM during start-up, rarely, once
        # the run had reported its interruption (not understood yet; noted in the closing note of issue 18).
        if code in (130, -signal.SIGINT) and "Streaming changes" not in self._since_start():
            # Stopped during the initial copy: "Interrupted ... rerun the same command to resume"
            # (130, as migrate's Ctrl-C), the copy is not finished: the next start copies again.
            self.copy_pending = True
            return
        assert code == 0, f"sync exited with {code} after SIGTERM\n{self._tail()}"

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def _ids(self, table: str) -> list[int]:
        with self._conn() as conn:
            return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]

    def _tables(self) -> list[str]:
        return sorted({e.table for e in self.entries} | ({"items", "parts"} if self.mode == "config" else set()))

    # -- setup ---------------------------------------------------------------------------------

    @initialize(mode=st.sampled_from(["single"] + (["config"] if on("config") else [])),
                table=st.sampled_from(["items"] + (["parts"] if on("partition") else [])),
                rows=st.integers(3, 30), data=st.data())
    def setup(self, mode, table, rows, data):
        with self._conn() as conn:
            create_items(conn, rows, seed=self.n)
            conn.execute(f"CREATE TABLE parts (id bigint PRIMARY KEY, title text, n int, v vector({PART_DIM})) "
                         "PARTITION BY RANGE (id)")
            for i in range(3):
                self._create_partition(conn, i)
            for k in range(1, rows + 1):
                self._insert(conn, "parts", k * 97 % (3 * PART_SPAN))
        self.mode = mode
        if mode == "single":
            self.entries = [Entry("c", table, "q1")]
        else:
            names = [n for n in POOL if _pool_allowed(POOL[n])]
            chosen = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=3, unique=True), "entries")
            self.entries = [POOL[n] for n in chosen]
        self.start()

    def _create_partition(self, conn, i: int) -> None:
        name = f"parts_{i}_{next(self.column_names)}"
        conn.execute(f"CREATE TABLE {name} PARTITION OF parts FOR VALUES FROM ({i * PART_SPAN}) "
                     f"TO ({(i + 1) * PART_SPAN})")
        self.partitions[i] = name

    # -- writes --------------------------------------------------------------------------------

    def _vec(self, table: str):
        dim = 512 if table == "items" else PART_DIM
        return vector_literal(self.rng.normal(size=dim).astype(np.float32))

    def _insert(self, cur, table: str, k: int) -> None:
        if table == "items":
            cur.execute(INSERT, _row(self.rng, k))
        else:
            cur.execute("INSERT INTO parts VALUES (%s, %s, %s, %s)", (k, f"p {k}", k % 7, self._vec(table)))
        for column in self.extra_columns if table == "items" else ():
            cur.execute(f"UPDATE items SET {column} = %s WHERE id = %s", (f"{column} of {k}", k))

    def _new_id(self, table: str, data, existing: set) -> int | None:
        if table == "parts":
            if not self.partitions:
                return None
            i = data.draw(st.sampled_from(sorted(self.partitions)), "partition")
            k = data.draw(st.integers(i * PART_SPAN, (i + 1) * PART_SPAN - 1), "new id")
        else:
            k = data.draw(st.integers(1, 3000), "new id")
        return None if k in existing else k

    def _one(self, cur, kind: str, data) -> str:
        table = data.draw(st.sampled_from(self._tables()), "table")
        cur.execute(f"SELECT id FROM {table} ORDER BY id")
        ids = [r[0] for r in cur.fetchall()]
        if kind == "truncate":
            if table == "parts" and self.partitions and data.draw(st.booleans(), "one partition"):
                i = data.draw(st.sampled_from(sorted(self.partitions)), "partition")
                cur.execute(f"TRUNCATE {self.partitions[i]}")
                table_desc = self.partitions[i]
            else:
                cur.execute(f"TRUNCATE {table}")
                table_desc = table
            reload = data.draw(st.integers(0, 4), "reload rows")
            done = 0
            for _ in range(reload):
                cur.execute(f"SELECT id FROM {table}")
                k = self._new_id(table, data, {r[0] for r in cur.fetchall()})
                if k is not None:
                    self._insert(cur, table, k)
                    done += 1
            return f"TRUNCATE {table_desc} + {done} rows"
        if kind == "insert" or not ids:
            k = self._new_id(table, data, set(ids))
            if k is None:
                return "insert skipped (id taken / no partition)"
            self._insert(cur, table, k)
            return f"INSERT {table} {k}"
        k = data.draw(st.sampled_from(ids), "id")
        if kind == "payload":  # the vector is not touched: sent as unchanged TOAST
            extra = "".join(f", {c} = {c} || '+'" for c in self.extra_columns) if table == "items" else ""
            title = data.draw(st.sampled_from([None, "a", "b", "c"]), "title")
            cur.execute(f"UPDATE {table} SET title = %s, n = coalesce(n, 0) + 1{extra} WHERE id = %s", (title, k))
        elif kind == "vector":
            cur.execute(f"UPDATE {table} SET v = %s WHERE id = %s", (self._vec(table), k))
        elif kind == "null":
            columns = ["title", "n", "v"] + (["tags", "meta", "mac", "mood"] + self.extra_columns
                                             if table == "items" else [])
            column = data.draw(st.sampled_from(columns), "column")
            cur.execute(f"UPDATE {table} SET {column} = NULL WHERE id = %s", (k,))
            return f"UPDATE {table} SET {column} = NULL WHERE id = {k}"
        elif kind == "delete":
            cur.execute(f"DELETE FROM {table} WHERE id = %s", (k,))
        elif kind == "key":
            new = self._new_id(table, data, set(ids))
            if new is None:
                return "key change skipped"
            cur.execute(f"UPDATE {table} SET id = %s WHERE id = %s", (new, k))
            return f"UPDATE {table} SET id = {new} WHERE id = {k}"
        return f"{kind} {table} {k}"

    @rule(kinds=st.lists(st.sampled_from(["insert", "payload", "vector", "null", "delete", "key"]
                                         + (["truncate"] if on("truncate") else [])), min_size=1, max_size=4),
          data=st.data())
    def write(self, kinds, data):
        """One transaction of one to four changes."""
        done = []
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            for kind in kinds:
                done.append(self._one(cur, kind, data))
        data.draw(st.just(done), "done")  # shown in a failing sequence's steps

    # -- the sync process ----------------------------------------------------------------------

    @precondition(lambda self: on("restart") and self.proc is None and not self.slot_lost)
    @rule()
    def start_sync(self):
        self.start()

    @precondition(lambda self: on("restart") and self.proc is not None)
    @rule(wait=st.sampled_from([0.0, 0.5, 2.0]))
    def stop_sync(self, wait):
        time.sleep(wait)  # 0: maybe before sync has even started streaming
        self.stop()

    @precondition(lambda self: on("restart") and self.proc is not None)
    @rule(wait=st.sampled_from([0.0, 0.5, 2.0]))
    def kill_sync(self, wait):
        time.sleep(wait)
        self.kill()

    @precondition(lambda self: on("kill_copy") and not self.slot_lost)
    @rule(wait=st.sampled_from([0.2, 0.8, 1.5, 2.5]))
    def kill_during_initial_copy(self, wait):
        """sync --sync.initial-copy SIGKILLed after ``wait`` s (during the copy, or just after it)."""
        if self.proc is not None:
            self.kill()
        self.copy_pending = True
        self.start()
        time.sleep(wait)
        self.kill()

    @precondition(lambda self: on("slot_drop") and not self.slot_lost)
    @rule()
    def lose_slot(self):
        """Someone drops the slot while sync is down; writes made meanwhile are gone from the stream."""
        if self.proc is not None:
            self.kill()
        with self._conn() as conn:
            for _ in range(50):  # the walsender of the killed process may still hold it a moment
                try:
                    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                 "WHERE slot_name = %s", (self.slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
        self.slot_lost = True

    @precondition(lambda self: self.slot_lost)
    @rule()
    def recover_lost_slot(self):
        self.recover()

    def recover(self) -> None:
        """docs/sync-production.md, "A lost slot": `sync drop`, then `sync --sync.initial-copy`."""
        if self.mode == "config":
            args = ["sync", "--config", str(self._write_file()), "drop"]
        else:
            (e,) = self.entries
            args = ["sync", "drop", "--pg.url", self.db.url, "--qdrant.collection", e.collection,
                    "--sync.slot", self.slot]
        r = run_cli(*args, env=env_for(self.db))
        assert r.exit_code == 0, f"sync drop: exit {r.exit_code}\n{r.output}"
        self.slot_lost = False
        self.copy_pending = True
        self.start()

    # -- migration file ------------------------------------------------------------------------

    @precondition(lambda self: self.mode == "config")
    @rule(data=st.data())
    def edit_file(self, data):
        """Between runs: an entry added to or removed from the file."""
        if self.proc is not None:
            self.stop()
        names = [e.name for e in self.entries]
        floor = 1 if on("config_shrink") else 2
        absent = [n for n in POOL if n not in names and _pool_allowed(POOL[n])]
        choices = (["add"] if absent else []) + (["remove"] if len(names) > floor else [])
        if not choices:
            return
        if data.draw(st.sampled_from(choices), "edit") == "add":
            self.entries.append(POOL[data.draw(st.sampled_from(absent), "add entry")])
        else:
            name = data.draw(st.sampled_from(names), "remove entry")
            self.entries = [e for e in self.entries if e.name != name]
        self._write_file()

    # -- DDL -----------------------------------------------------------------------------------

    @precondition(lambda self: on("ddl") and any(e.table == "items" for e in self.entries))
    @rule(kind=st.sampled_from(["add", "add default", "drop", "rename"]))
    def alter_column(self, kind):
        with self._conn() as conn:
            if kind.startswith("add") or not self.extra_columns:
                name = f"x{next(self.column_names)}"
                default = " DEFAULT 'dflt'" if kind == "add default" else ""
                conn.execute(f"ALTER TABLE items ADD COLUMN {name} text{default}")
                self.extra_columns.append(name)
            elif kind == "drop":
                conn.execute(f"ALTER TABLE items DROP COLUMN {self.extra_columns.pop(0)}")
            else:
                old, new = self.extra_columns[0], f"x{next(self.column_names)}"
                conn.execute(f"ALTER TABLE items RENAME COLUMN {old} TO {new}")
                self.extra_columns[0] = new

    # -- partitions ----------------------------------------------------------------------------

    @precondition(lambda self: on("partition") and any(e.table == "parts" for e in self.entries))
    @rule(kind=st.sampled_from(["detach", "attach", "drop", "create"]), data=st.data())
    def change_partitions(self, kind, data):
        with self._conn() as conn:
            if kind == "detach" and self.partitions:
                i = data.draw(st.sampled_from(sorted(self.partitions)), "partition")
                name = self.partitions.pop(i)
                conn.execute(f"ALTER TABLE parts DETACH PARTITION {name}")
                self.detached[i] = name
            elif kind == "attach" and self.detached:
                i = data.draw(st.sampled_from(sorted(self.detached)), "partition")
                name = self.detached.pop(i)
                conn.execute(f"ALTER TABLE parts ATTACH PARTITION {name} FOR VALUES FROM ({i * PART_SPAN}) "
                             f"TO ({(i + 1) * PART_SPAN})")
                self.partitions[i] = name
            elif kind == "drop" and self.partitions:
                i = data.draw(st.sampled_from(sorted(self.partitions)), "partition")
                conn.execute(f"DROP TABLE {self.partitions.pop(i)}")
            elif kind == "create":
                free = [i for i in range(5) if i not in self.partitions and i not in self.detached]
                if free:
                    i = data.draw(st.sampled_from(free), "partition")
                    self._create_partition(conn, i)
                    for k in range(i * PART_SPAN, i * PART_SPAN + 3):
                        self._insert(conn, "parts", k)

    # -- the invariant -------------------------------------------------------------------------

    @rule()
    def check(self):
        self.check_invariant()

    def check_invariant(self) -> None:
        """Catch up with sync running, then every collection equals a fresh migrate of its table."""
        if self.slot_lost:
            self.recover()
        if self.proc is None:
            self.start()
        try:
            # The slot is active (and its position already "caught up") during the initial copy:
            # first wait until this run says it streams.
            self._wait_log("Streaming changes", CATCH_UP_S)
            wait_streaming(self.db.url, self.slot, timeout=CATCH_UP_S, proc=self.proc)
            wait_caught_up(self.db.url, self.slot, timeout=CATCH_UP_S, proc=self.proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- sync log ---\n{self._tail()}") from None
        self.copy_pending = False
        self.checks += 1
        snapshot = self.dir / f"check{self.checks}"
        for folder in sorted({e.folder for e in self.entries}):
            # sync holds its folder's lock: read a copy (everything acknowledged is in it)
            shutil.copytree(self.folder(folder), snapshot / "synced" / folder,
                            ignore=shutil.ignore_patterns(".lock"))
        problems = []
        for e in self.entries:
            fresh = snapshot / "fresh" / e.name
            args = ["migrate", "--pg.url", self.db.url, "--pg.table", e.table, "--qdrant.url", f"local:{fresh}",
                    "--qdrant.collection", e.collection, *MIGRATE_FLAGS, *(["--pg.where", e.where] if e.where else [])]
            r = run_cli(*args)
            assert r.exit_code == 0, f"fresh migrate of {e}: exit {r.exit_code}\n{r.output}"
            synced = read_points(snapshot / "synced" / e.folder, e.collection)
            expected = read_points(fresh, e.collection)
            lines = diff_points(synced, expected)
            if lines:
                problems.append(f"collection {e.collection!r} ({e.table}{' WHERE ' + e.where if e.where else ''}, "
                                f"folder {e.folder}): {len(synced)} synced points, {len(expected)} migrated\n"
                                + "\n".join(lines))
        shutil.rmtree(snapshot)
        assert not problems, ("sync's collections differ from a fresh migrate:\n" + "\n".join(problems)
                              + f"\n--- sync log ---\n{self._tail()}")

    def teardown(self):
        try:
            if sys.exc_info()[0] is None:  # the sequence passed so far: its end is a check too
                self.check_invariant()
                if self.proc is not None:
                    self.stop()
        finally:
            if self.proc is not None:
                self.kill()
            self.log.close()
            drop_database_slots(self.db)
            with psycopg.connect(self.server.url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db.name}" WITH (FORCE)')
            shutil.rmtree(self.dir, ignore_errors=True)
            RUNS["sequences"] += 1
            RUNS["checks"] += self.checks


RUNS = {"sequences": 0, "steps": 0, "checks": 0}


def test_sync_equals_a_fresh_migrate_after_random_sequences(pg_server, tmp_path):
    SyncModel.server, SyncModel.workdir = pg_server, tmp_path
    RUNS.update(sequences=0, steps=0, checks=0)  # counted per server
    profile = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                       derandomize=SEED is None, database=None, print_blob=True,
                       phases=list(Phase) if SHRINK else [p for p in Phase if p is not Phase.shrink],
                       suppress_health_check=list(HealthCheck))
    machine = SyncModel
    if SEED is not None:
        machine = type("SyncModelSeeded", (SyncModel,), {"_hypothesis_internal_use_seed": int(SEED)})
    pending = sorted(set(PENDING_FAMILIES) - ENABLED)
    if pending:  # said on every run, so that nothing is left out silently
        warnings.warn(f"sync model: families left out until their fixes are merged: {', '.join(pending)} "
                      "(PENDING_FAMILIES; PG2QDRANT_MODEL_FAMILIES=all runs them)", stacklevel=1)
    started = time.monotonic()
    try:
        run_state_machine_as_test(machine, settings=profile)
    finally:
        print(f"\nsync model on {pg_server.bindir}: families {sorted(ENABLED)}; {RUNS['sequences']} sequences, "
              f"{RUNS['steps']} steps, {RUNS['checks']} checks in {time.monotonic() - started:.0f} s")
