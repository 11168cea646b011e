"""Parallel, snapshot-consistent copy: exact results with 1, 2 and 4 workers, even under concurrent writes."""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest

from conftest import migrate_args
from helpers import ITEMS_TABLE, assert_collection_equals_table, fill_items
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.qdrant import QdrantTarget
from pg2qdrant.migrate import copy as pipeline
from pg2qdrant.runtime import session


@pytest.fixture
def small_ranges(monkeypatch):
    """Many small ranges, so that even small test tables are split across workers."""
    monkeypatch.setattr(pipeline, "ROWS_PER_RANGE", 150)
    monkeypatch.setattr(pipeline, "READ_BATCH_ROWS", 64)


def open_local(path) -> QdrantTarget:
    return QdrantTarget(parse_target_url(f"local:{path}"))


TABLES = {
    "plain": ITEMS_TABLE,
    "text_key": "CREATE TABLE t (id text PRIMARY KEY, title text, n int, score float8, v vector(16))",
    # No index on the key: physical (ctid) ranges instead of key ranges.
    "no_key_index": "CREATE TABLE t (id bigint NOT NULL, title text, n int, score float8, v vector(16))",
    "partitioned": """
        CREATE TABLE t (id bigint, title text, n int, score float8, v vector(16), PRIMARY KEY (id))
            PARTITION BY RANGE (id);
        CREATE TABLE t_a PARTITION OF t FOR VALUES FROM (MINVALUE) TO (700);
        CREATE TABLE t_b PARTITION OF t FOR VALUES FROM (700) TO (1500);
        CREATE TABLE t_c PARTITION OF t FOR VALUES FROM (1500) TO (MAXVALUE);
    """,
}


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("kind", sorted(TABLES))
def test_parallel_copy_is_exact(db, qdrant_path, cli, small_ranges, kind, workers):
    db.execute(TABLES[kind])
    with db.connect() as conn:
        fill_items(conn, "t", 2000, key="text" if kind == "text_key" else "bigint")
        conn.execute("ANALYZE t")
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.num-workers", str(workers), "-b", "100",
            "--pg.key-column", "id")
    assert r.exit_code == 0, r.output
    assert f"{workers} / " in r.stdout  # workers / ranges line of the summary
    assert ("page ranges" if kind == "no_key_index" else "key ranges") in r.stdout
    target = open_local(qdrant_path)
    try:
        assert assert_collection_equals_table(db.url, "t", target, key_columns=["id"]) == 2000
    finally:
        target.close()


def _wait_for_copy(url: str, timeout: float = 120.0) -> None:
    """Until a pg2qdrant reader has issued its COPY (so the snapshot has been taken); the readers are spawned
    processes whose imports alone take seconds on a loaded machine."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            # The last statement of a reader (it may already wait, idle in its transaction).
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg2qdrant' "
                             "AND query LIKE 'COPY%'").fetchone()[0]
            if n:
                return
            time.sleep(0.02)
    raise AssertionError(f"the copy never started within {timeout} s")


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_writes_do_not_leak_into_the_copy(db, qdrant_path, cli, small_ranges, workers):
    """Inserts, updates and deletes committed while the copy runs are not in the result: it is the snapshot."""
    db.execute(TABLES["plain"])
    with db.connect() as conn:
        fill_items(conn, "t", 1500)
        conn.execute("ANALYZE t")
        conn.execute("CREATE TABLE before_copy AS TABLE t")  # the state the copy must reproduce
    changed = threading.Event()

    def application():
        _wait_for_copy(db.url)
        with db.connect() as conn:
            with conn.transaction():
                conn.execute("INSERT INTO t SELECT id + 100000, 'new', 0, 0, v FROM t WHERE id <= 300")
                conn.execute("UPDATE t SET title = 'changed', v = '[9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9]' "
                             "WHERE id % 3 = 0")
                conn.execute("DELETE FROM t WHERE id % 5 = 0")
        changed.set()

    app = threading.Thread(target=application)
    app.start()
    # A delay per request keeps the copy running while the application writes.
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.num-workers", str(workers), "-b", "50",
            "--migration.batch-delay", "40")
    app.join()
    assert r.exit_code == 0, r.output
    assert changed.is_set()
    live = db.execute("SELECT count(*) FROM t")[0][0]
    assert live != 1500  # the application really changed the table
    target = open_local(qdrant_path)
    try:
        assert assert_collection_equals_table(db.url, "before_copy", target, key_columns=["id"]) == 1500
    finally:
        target.close()


def test_dry_run_reads_everything_and_writes_nothing(db, qdrant_path, cli, small_ranges):
    db.execute(TABLES["plain"])
    with db.connect() as conn:
        fill_items(conn, "t", 700)
        conn.execute("ANALYZE t")
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.dry-run", "--migration.num-workers", "2")
    assert r.exit_code == 0, r.output
    assert "Dry run summary" in r.stdout and "700" in r.stdout
    assert not qdrant_path.exists()


def test_dry_run_finds_a_bad_row_while_reading(db, qdrant_path, cli, small_ranges, monkeypatch):
    monkeypatch.setattr(session, "DIMENSION_PRECHECK_MAX_ROWS", 0)  # as for a huge table
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector)")
    db.execute("INSERT INTO t SELECT i, '[1,2,3]' FROM generate_series(1, 500) i")
    db.execute("INSERT INTO t VALUES (501, '[1,2]')")
    db.execute("ANALYZE t")
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.dry-run", "--migration.num-workers", "2")
    assert r.exit_code == 2, r.output
    assert "id=501 has 2" in r.stderr and "Traceback" not in r.output


def test_dry_run_builds_the_requests_and_stops_at_a_point_too_large_for_any(db, qdrant_path, cli):
    """The dry run writes through the real run's Writer into DryRunTarget: requests sliced by points
    and bytes and built, then dropped; for a server URL a point over the request limit stops it with
    the fix, as it would stop the real run (before, the dry run only encoded points and passed);
    local mode sends no request, so there it passes, as the real run would."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(3), body text)")
    db.execute("INSERT INTO t SELECT i, '[1,2,3]', 'x' FROM generate_series(1, 300) i")
    db.execute("INSERT INTO t VALUES (301, '[1,2,3]', repeat('y', 17 * 1024 * 1024))")
    db.execute("ANALYZE t")
    # the dry run connects to no Qdrant: gRPC requests with one worker, REST (JSON) with two
    for url, workers in (("http://127.0.0.1:6334", "1"), ("http://127.0.0.1:6333", "2")):
        r = cli(*migrate_args(db, "t", qdrant_path), "--qdrant.url", url, "--migration.dry-run",
                "--migration.num-workers", workers)
        assert r.exit_code != 0, r.output
        assert "Point 301 is about 17.0 MiB" in r.stderr and "--pg.columns" in r.stderr, r.stderr
        assert "Traceback" not in r.output
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.dry-run", "--migration.num-workers", "2")
    assert r.exit_code == 0, r.output
    assert re.search(r"\b301\b", r.stdout) and not qdrant_path.exists()


def test_dry_run_builds_the_wire_of_its_target_only(db, qdrant_path, cli, monkeypatch):
    """The dry run encodes requests for a server URL (gRPC, or REST), as that real run would, and
    none for local mode or Edge, whose real runs hand points over in process (so a value only the
    wire refuses cannot stop their dry run)."""
    from pg2qdrant.destination import wire
    encoded: list[str] = []
    real_encode = wire.encode
    monkeypatch.setattr(wire, "encode", lambda batch, fmt: encoded.append(fmt) or real_encode(batch, fmt))
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(3))")
    db.execute("INSERT INTO t SELECT i, '[1,2,3]' FROM generate_series(1, 50) i")
    for url, expected in (("http://127.0.0.1:6334", {wire.GRPC}), ("http://127.0.0.1:6333", {wire.REST}),
                          (f"local:{qdrant_path}", set()), (f"edge:{qdrant_path}", set())):
        encoded.clear()
        r = cli(*migrate_args(db, "t", qdrant_path), "--qdrant.url", url, "--migration.dry-run",
                "--migration.num-workers", "1")  # a thread of this process: the patch applies
        assert r.exit_code == 0, r.output
        assert set(encoded) == expected, url


class _Target:
    """Just what the Writer reads (no Qdrant involved): for request slicing."""

    def __init__(self, max_bytes):
        from pg2qdrant.destination.base import Capabilities
        self.capabilities = Capabilities(in_process=False, max_in_flight=1, max_request_bytes=max_bytes,
                                         hnsw=True, payload_indexes=True, encodes_wire=False)
        self.requests = []

    def upsert(self, collection, batch, wait=True):
        self.requests.append(len(batch))

    def apply(self, collection, operations, wait=True):
        self.requests.append(list(operations))


def _batch(n, payload_size):
    import numpy as np

    from pg2qdrant.core.mapping.batch import PointBatch
    from pg2qdrant.core.mapping.vectors import DenseColumn
    return PointBatch(ids=list(range(n)), payloads=[{"t": "x" * payload_size} for _ in range(n)],
                      dense={"v": DenseColumn(np.zeros((n, 8), np.float32), np.ones(n, bool))})


def test_writer_bounds_requests_by_points_and_bytes():
    from pg2qdrant.destination.writer import Writer
    written = []
    target = _Target(max_bytes=10_000)
    w = Writer(target, "c", batch_size=50, delay_s=0, on_written=lambda r, n: written.append(n))
    w.write(0, _batch(120, 10))  # small points: bounded by count
    assert target.requests == [50, 50, 20]
    target.requests.clear()
    w.write(0, _batch(30, 3000))  # ~3 KB points: 3 per 10 KB request
    assert target.requests == [3] * 10
    assert sum(written) == 150


def test_writer_refuses_a_single_point_over_the_request_limit():
    from pg2qdrant.core.errors import DataError
    from pg2qdrant.destination.writer import Writer
    w = Writer(_Target(max_bytes=1000), "c", batch_size=50, delay_s=0, on_written=lambda r, n: None)
    with pytest.raises(DataError, match="larger than"):
        w.write(0, _batch(2, 5000))


def test_writer_applies_sync_operations_in_order_within_points_and_bytes():
    """Sync's operations go through the same bounds as the copy's upserts, in their order."""
    from pg2qdrant.destination import operations as ops
    from pg2qdrant.destination.writer import Writer
    target = _Target(max_bytes=10_000)
    w = Writer(target, "c", batch_size=50)
    sent = [ops.DeletePoints((1, 2)), ops.Upsert(_batch(120, 10)), ops.SetPayload(7, {"t": "y"}),
            ops.Upsert(_batch(30, 3000)), ops.DeleteVectors(8, ("v",))]
    w.apply(sent)
    for request in target.requests:
        assert sum(len(op.batch) if isinstance(op, ops.Upsert) else 1 for op in request) <= 50
        assert sum(ops.estimated_bytes(op) for op in request) <= 10_000
    flat = [op for request in target.requests for op in request]
    kinds = [type(op).__name__ for op in flat]
    assert kinds[0] == "DeletePoints" and kinds[-1] == "DeleteVectors" and kinds.count("SetPayload") == 1
    upserted = [pid for op in flat if isinstance(op, ops.Upsert) for pid in op.batch.ids]
    assert upserted == list(range(120)) + list(range(30))  # every point, in order


def test_writer_cuts_a_large_delete_to_the_points_per_request():
    """A DELETE of many rows is one DeletePoints: it is cut like upserts (strict mode's write rate limit
    charges every point a request touches), in order, every id once."""
    from pg2qdrant.destination import operations as ops
    from pg2qdrant.destination.writer import Writer
    target = _Target(max_bytes=None)
    Writer(target, "c", batch_size=4).apply([ops.DeletePoints(tuple(range(10))), ops.SetPayload(3, {"t": "y"})])
    assert [[type(op).__name__ for op in r] for r in target.requests] == [["DeletePoints"], ["DeletePoints"],
                                                                         ["DeletePoints", "SetPayload"]]
    assert [i for r in target.requests for op in r if isinstance(op, ops.DeletePoints) for i in op.ids] == \
        list(range(10))


class _SlowServer(_Target):
    """A server 30 ms away: each request's (start, end, points) is recorded; one may fail."""

    def __init__(self, in_flight=4, fail_on=None):
        super().__init__(max_bytes=None)
        from dataclasses import replace
        self.capabilities = replace(self.capabilities, max_in_flight=in_flight)
        self.fail_on = fail_on
        self.log = []
        self.lock = threading.Lock()

    def apply(self, collection, operations, wait=True):
        from pg2qdrant.destination.writer import _points_of
        start = time.monotonic()
        time.sleep(0.03)
        with self.lock:
            self.log.append((start, time.monotonic(), _points_of(operations)))
        if self.fail_on is not None and any(getattr(op, "point_id", None) == self.fail_on for op in operations):
            raise RuntimeError("refused")


def test_writer_sends_sync_requests_on_disjoint_points_together_and_waits_for_a_shared_one():
    """A server 30 ms away: requests on disjoint points are in flight together (not one round trip
    each); one touching a point of a request in flight, or clearing the collection, waits for it."""
    from pg2qdrant.destination import operations as ops
    from pg2qdrant.destination.writer import Writer
    target = _SlowServer()
    w = Writer(target, "c", batch_size=10)
    sent = [ops.Upsert(_batch(40, 10)),  # points 0-39: 4 requests
            ops.SetPayload(5, {"t": "y"}), *[ops.SetPayload(100 + i, {"t": "y"}) for i in range(9)],  # 5: shared
            ops.ClearCollection(), ops.DeletePoints((200,))]
    w.apply(sent)
    log = target.log
    assert len(log) == 6 and max(sum(s < e2 and s2 < e for s2, e2, _ in log) for s, e, _ in log) > 2  # overlapping
    first = next(r for r in target.log if r[2] == frozenset(range(10)))
    shared = next(r for r in target.log if 5 in r[2] and 100 in r[2])
    clear = next(r for r in target.log if r[2] is None)  # with DeletePoints((200,)): one request
    assert shared[0] >= first[1]  # point 5: after the upsert that wrote it
    assert all(clear[0] >= r[1] for r in target.log if r is not clear)  # the clear: after all the others


def test_writer_reports_a_failed_sync_request_once_none_is_in_flight():
    """A refused request stops apply only once the others have answered; one in flight: in order."""
    from pg2qdrant.destination import operations as ops
    from pg2qdrant.destination.writer import Writer
    target = _SlowServer(fail_on=3)
    w = Writer(target, "c", batch_size=1)
    with pytest.raises(RuntimeError, match="refused"):
        w.apply([ops.SetPayload(i, {"t": "y"}) for i in range(8)])
    ended = time.monotonic()
    assert all(end <= ended for _, end, _ in target.log)  # nothing left in flight
    target = _SlowServer(in_flight=1)
    Writer(target, "c", batch_size=1).apply([ops.SetPayload(i, {"t": "y"}) for i in range(3)])
    assert all(b[0] >= a[1] for a, b in zip(target.log, target.log[1:]))  # one at a time
