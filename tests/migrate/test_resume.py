"""Never lose a row: SIGKILL and rerun, interrupt and resume, PostgreSQL dropping connections."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from conftest import migrate_args
from helpers import assert_collection_equals_table, assert_local_collection_equals_table, create_items_table
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.edge import EdgeTarget


def edge_args(db, table, path, *extra):
    args = migrate_args(db, table, path, "c", *extra)
    args[args.index("--qdrant.url") + 1] = f"edge:{path}"
    return args


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pg2qdrant", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def table_50k(db):
    create_items_table(db, 50_000)
    return db


@pytest.mark.one_server  # our processes and resume state, not PostgreSQL's: the other resume tests run on both
def test_sigkill_at_ten_random_moments_then_rerun_loses_nothing(table_50k, tmp_path):
    db = table_50k
    args = edge_args(db, "t", tmp_path, "--migration.range-rows", "2500", "--migration.num-workers", "2")
    rnd = random.Random(42)
    kills = 0
    while kills < 10:
        proc = spawn(args)
        time.sleep(rnd.uniform(0.8, 3.0))
        if proc.poll() is not None:  # finished before the kill: start over to keep killing mid-copy
            out = proc.communicate()
            assert proc.returncode == 0, out
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    final = subprocess.run([sys.executable, "-m", "pg2qdrant", *args], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert kills >= 5, "the copy finished too fast to be killed mid-way"
    target = EdgeTarget(parse_target_url(f"edge:{tmp_path}"))
    try:
        # Count, every ID, payload and vector; no extra point (Edge: floats within 2 ULP, see test_edge).
        assert assert_collection_equals_table(db.url, "t", target, float_ulps=2) == 50_000
    finally:
        target.close()


@pytest.mark.one_server  # our processes and resume state, not PostgreSQL's: the other resume tests run on both
def test_sigterm_stops_quickly_saves_progress_and_the_rerun_resumes(db, qdrant_path):
    create_items_table(db, 3000)
    args = migrate_args(db, "t", qdrant_path, "c", "--migration.range-rows", "300", "-b", "50",
                        "--migration.batch-delay", "300", "--migration.num-workers", "2")  # ~18 s unloaded
    proc = spawn(args)
    _wait_until_copying(db.url, proc)
    lines = _stderr_lines(proc)
    _wait_for_rows(lines, proc, 900)  # 900 acknowledged, at most 2 x 300 in open ranges: one range is saved
    assert proc.poll() is None, "the copy finished before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    proc.wait(timeout=30)
    lines.reader.join(timeout=30)
    err = "".join(lines)
    assert time.monotonic() - sent < 10, "did not stop within a few seconds"
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    r = subprocess.run([sys.executable, "-m", "pg2qdrant", *args[:-2]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Resuming the migration" in r.stderr and "by earlier runs" in r.stdout
    assert assert_local_collection_equals_table(db.url, "t", qdrant_path) == 3000


class _Lines(list):
    reader: threading.Thread


def _stderr_lines(proc: subprocess.Popen) -> _Lines:
    """The process's stderr lines as they come (read by a thread, so the pipe never fills)."""
    lines = _Lines()
    lines.reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    lines.reader.start()
    return lines


def _wait_for_rows(lines: list[str], proc: subprocess.Popen, rows: int, timeout: float = 120) -> None:
    """Until a progress line reports at least ``rows`` rows copied (plain lines every few seconds),
    not a fixed sleep: on a loaded machine the copy can be several times slower."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        done = [int(m.group(1).replace(",", "")) for m in map(re.compile(r"([\d,]+) / [\d,]+ rows").search, list(lines)) if m]
        if done and max(done) >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"no progress line reached {rows} rows: {''.join(lines)[-2000:]}")


def _wait_until_copying(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until a reader issued its COPY: the process is past start-up (its signal handlers are set)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg2qdrant' "
                            "AND query LIKE 'COPY%'").fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the copy did not start")


def test_state_file_list_and_clear(db, qdrant_path, tmp_path, cli):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(2)); INSERT INTO t SELECT i, '[1,1]' "
               "FROM generate_series(1, 20) i")
    state_file = tmp_path / "state.json"
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.state-file", str(state_file))
    assert r.exit_code == 0, r.output
    assert state_file.exists() and "password" not in state_file.read_text()
    listed = cli("state", "list", "--migration.state-file", str(state_file), "--qdrant.url", f"local:{qdrant_path}")
    assert listed.exit_code == 0 and "public.t" in listed.stdout and "complete" in listed.stdout
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.state-file", str(state_file))
    assert "already complete" in r.stderr
    cleared = cli("state", "clear", "--all", "--migration.state-file", str(state_file),
                  "--qdrant.url", f"local:{qdrant_path}")
    assert cleared.exit_code == 0 and "Removed" in cleared.stderr
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.state-file", str(state_file))
    assert r.exit_code == 0 and "20 rows in the snapshot" in r.stdout and "already complete" not in r.stderr


def test_state_in_the_target_by_default_and_other_runs_untouched(db, qdrant_path, cli):
    db.execute("CREATE TABLE a (id int PRIMARY KEY, v vector(2)); CREATE TABLE b (id int PRIMARY KEY, v vector(2));"
               "INSERT INTO a VALUES (1, '[1,1]'); INSERT INTO b VALUES (1, '[1,1]')")
    assert cli(*migrate_args(db, "a", qdrant_path, "ca")).exit_code == 0
    assert cli(*migrate_args(db, "b", qdrant_path, "cb")).exit_code == 0
    listed = cli("state", "list", "--qdrant.url", f"local:{qdrant_path}")
    assert "public.a" in listed.stdout and "public.b" in listed.stdout
    # Restarting one migration leaves the other's record alone.
    assert cli(*migrate_args(db, "a", qdrant_path, "ca"), "--migration.restart").exit_code == 0
    assert "already complete" in cli(*migrate_args(db, "b", qdrant_path, "cb")).stderr


def _terminate_readers(url: str, stop: threading.Event, times: int) -> None:
    killed = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while killed < times and not stop.is_set():
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                "application_name = 'pg2qdrant' AND query LIKE 'COPY%'"
                                ).fetchall()
            killed += len(rows)
            time.sleep(0.3 if rows else 0.05)


def _copy_while_terminating_readers(db, qdrant_path, cli, kills: int, rows: int, *extra: str):
    """Migrate a table of ``rows`` while another connection terminates the readers' backends."""
    create_items_table(db, rows)
    stop = threading.Event()
    killer = threading.Thread(target=_terminate_readers, args=(db.url, stop, kills))
    killer.start()
    try:
        return cli(*migrate_args(db, "t", qdrant_path), "-b", "50", "--migration.batch-delay", "20", *extra)
    finally:
        stop.set()
        killer.join()


def _assert_local_collection_equals_table(db, qdrant_path, rows: int) -> None:
    assert assert_local_collection_equals_table(db.url, "t", qdrant_path) == rows


def test_dropped_postgres_connections_are_retried_range_by_range(db, qdrant_path, cli):
    r = _copy_while_terminating_readers(db, qdrant_path, cli, 3, 4000, "--migration.range-rows", "400",
                                        "--migration.num-workers", "2")
    assert r.exit_code == 0, r.output
    assert "retrying the range" in r.stderr
    _assert_local_collection_equals_table(db, qdrant_path, 4000)


def test_postgres_failing_beyond_the_retry_budget_leaves_a_resumable_state(db, qdrant_path, cli):
    r = _copy_while_terminating_readers(db, qdrant_path, cli, 1000, 3000, "--migration.range-rows", "300",
                                        "--migration.num-workers", "1", "--migration.max-retries", "1")
    assert r.exit_code == 1, r.output
    assert "rerun the same command to resume" in r.stderr and "Traceback" not in r.output
    r = cli(*migrate_args(db, "t", qdrant_path))
    assert r.exit_code == 0, r.output
    _assert_local_collection_equals_table(db, qdrant_path, 3000)


def test_postgres_restart_during_the_copy(db, qdrant_path, cli, pg_server):
    create_items_table(db, 3000)

    def restart_soon():
        time.sleep(2.0)
        pg_server.restart()

    restarter = threading.Thread(target=restart_soon)
    restarter.start()
    try:
        r = cli(*migrate_args(db, "t", qdrant_path), "--migration.range-rows", "300", "-b", "50",
                "--migration.batch-delay", "25", "--migration.num-workers", "2")
    finally:
        restarter.join()
    assert r.exit_code == 0, r.output
    _assert_local_collection_equals_table(db, qdrant_path, 3000)


def _workers_of(proc: subprocess.Popen, count: int, timeout: float = 60):
    """The coordinator's reader processes, as soon as ``count`` of them exist."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        workers = []
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    workers.append(child)
            except psutil.Error:  # a short-lived helper process, already gone
                pass
        if len(workers) >= count:
            return workers
        time.sleep(0.01)
    raise AssertionError("the reader processes did not start")


@pytest.mark.parametrize("where", ["local", "server"])
@pytest.mark.parametrize("moment", ["starting", "copying"])
def test_sigkilled_coordinator_leaves_no_worker(db, qdrant_path, where, moment):
    """Reader processes die with a SIGKILLed coordinator (no orphans left sleeping, holding connections),
    whether it dies while they are still starting or while they copy."""
    import psutil

    from qdrant_endpoint import QdrantEndpoint

    create_items_table(db, 3000)
    with QdrantEndpoint() as endpoint:
        args = migrate_args(db, "t", qdrant_path, "c", "--migration.range-rows", "300", "-b", "20",
                            "--migration.batch-delay", "200", "--migration.num-workers", "2")
        if where == "server":
            args[args.index("--qdrant.url") + 1] = endpoint.grpc_url
        # No pipes: an orphan holding them would keep the test waiting for their end.
        proc = subprocess.Popen([sys.executable, "-m", "pg2qdrant", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            if moment == "copying":
                _wait_until_copying(db.url, proc)
            workers = _workers_of(proc, 2)
            children = psutil.Process(proc.pid).children(recursive=True)
        finally:
            proc.kill()
            proc.wait()
        assert {w.pid for w in workers} <= {c.pid for c in children}
        gone, alive = psutil.wait_procs(children, timeout=5)
        for p in alive:  # do not leave them behind for the next tests
            p.kill()
        assert not alive, [p.pid for p in alive]
