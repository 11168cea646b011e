"""Resume against a server: migrate over gRPC (and REST for one case) on the test endpoint.

The endpoint (tests/qdrant_endpoint: Qdrant's APIs over Qdrant Edge) runs in this test
process, so it outlives the migrate subprocess that is killed or stopped. Progress is
the state record pg2qdrant keeps on the server, in ``_pg2qdrant_state``; the reruns read
it from there. Vectors use Euclid distance (Qdrant normalises Cosine vectors on write)
so they compare bit-exact; payload floats compare within 2 ULP, Qdrant Edge's known
re-parsing of float payload values (docs/targets.md).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from test_parallel import TABLES

from helpers import (
    EndpointReader,
    assert_collection_equals_table,
    create_items_table,
    endpoint_state_records,
    fill_items,
)
from qdrant_endpoint import UPSERT, Delay, QdrantEndpoint, wrong_input

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

ROWS = 1200


def migrate_command(db, url: str, *extra: str) -> list[str]:
    return ["migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", url, "--qdrant.collection", "c",
            "--qdrant.distance-metric", "v=euclid", "--migration.range-rows", "100", "-b", "50", *extra]


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pg2qdrant", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def assert_collection_is_table(q: QdrantEndpoint, db, rows: int, table: str = "t") -> None:
    """Every row is a point with its payload and bit-exact vector, and no other point (read from the engine)."""
    assert assert_collection_equals_table(db.url, table, EndpointReader(q), float_ulps=2, key_columns=["id"],
                                          distance_overrides={"v": "Euclid"}) == rows


def served(u) -> bool:
    """Written: answered OK (a Delay fault serves the request, then counts as a fault)."""
    return u.status in ("OK", 200)


def wait_for_upserts(q: QdrantEndpoint, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(served(u) for u in q.upserts("c")) < n:
        if proc.poll() is not None:
            raise AssertionError(f"migrate ended early ({proc.returncode}): {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} upserts in {timeout} s")
        time.sleep(0.02)


def settle(q: QdrantEndpoint, quiet_s: float = 0.5) -> None:
    """Until the endpoint has received nothing for ``quiet_s``: a reader process may outlive its killed
    coordinator for a moment (its death signal is asynchronous), and an upsert it sent may land late."""
    seen = -1
    while len(q.seen()) != seen:
        seen = len(q.seen())
        time.sleep(quiet_s)


def the_state(q: QdrantEndpoint) -> dict:
    records = endpoint_state_records(q)
    assert len(records) == 1, records
    return records[0]


def rows_sent(q: QdrantEndpoint) -> int:
    return sum(len(u.ids) for u in q.upserts("c") if served(u))


@pytest.fixture
def table(db):
    create_items_table(db, ROWS)
    return db


def test_sigkill_mid_copy_then_rerun_over_grpc_loses_nothing(table, cli):
    with QdrantEndpoint() as q:
        # A slow answer per write keeps the copy running while it is killed.
        q.faults.add(UPSERT, collection="c", times=None, action=Delay(0.05))
        args = migrate_command(table, q.grpc_url, "--migration.num-workers", "2")
        done_before = 0
        for upserts in (3, 12):  # killed twice, the second time further in
            proc = spawn(args)
            wait_for_upserts(q, upserts, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            state = the_state(q)
            assert state["status"] == "running" and len(state["ranges"]) > 4
            assert sum(state["done"].values()) >= done_before  # progress kept on the server only grows
            done_before = sum(state["done"].values())
        assert 0 < done_before < ROWS
        settle(q)  # a killed run's last request may still be on its way: it is not the rerun's
        q.faults.clear()
        q.clear_log()
        r = cli(*args)
        assert r.exit_code == 0, r.output
        assert "Resuming the migration" in r.stderr and "by earlier runs" in r.stdout
        # Completed ranges are not copied again: the rerun sends exactly the rows of the others.
        assert rows_sent(q) == ROWS - done_before
        assert the_state(q)["status"] == "complete"
        assert_collection_is_table(q, table, ROWS)


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_sigterm_saves_progress_on_the_server_and_the_rerun_resumes(table, cli, front):
    with QdrantEndpoint() as q:
        q.faults.add(UPSERT, collection="c", times=None, action=Delay(0.05))
        args = migrate_command(table, q.target_url(front), "--migration.num-workers", "2")
        proc = spawn(args)
        wait_for_upserts(q, 8, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "rerun the same command to resume" in err and "Traceback" not in err
        state = the_state(q)
        done = sum(state["done"].values())
        assert state["status"] == "running" and 0 < done < ROWS
        assert "password" not in str(state) and table.url not in str(state)
        # The state on the server is what `state list` shows, read over the same protocol.
        listed = cli("state", "list", "--qdrant.url", q.target_url(front))
        assert listed.exit_code == 0, listed.output
        assert "public.t" in listed.stdout and "running" in listed.stdout
        assert {x.front for x in q.seen(collection="_pg2qdrant_state")} == {front}
        q.faults.clear()
        q.clear_log()
        r = cli(*args)
        assert r.exit_code == 0, r.output
        assert "Resuming the migration" in r.stderr and f"+{done:,} by earlier runs" in r.stdout
        assert rows_sent(q) == ROWS - done
        assert_collection_is_table(q, table, ROWS)
        cleared = cli("state", "clear", "--all", "--qdrant.url", q.target_url(front))
        assert cleared.exit_code == 0 and "Removed" in cleared.stderr, cleared.output
        assert endpoint_state_records(q) == []


def test_permanent_error_then_resume_from_the_server_state_over_grpc(table, cli):
    secret = "api-Key-For-Resume-31"
    with QdrantEndpoint(api_key=secret) as q:
        fault = q.faults.add(UPSERT, collection="c", times=1, skip=10,
                             action=wrong_input("Vector dimension error: boom"))
        args = migrate_command(table, q.grpc_url, "--qdrant.api-key", secret, "--migration.num-workers", "2")
        r = cli(*args)
        assert r.exit_code == 1, r.output
        assert fault.fired == 1 and "Vector dimension error: boom" in r.stderr
        assert "rerun the same command to resume" in r.stderr and "Traceback" not in r.output
        state = the_state(q)
        done = sum(state["done"].values())
        assert state["status"] == "running" and 0 < done < ROWS
        assert secret not in r.output and secret not in str(state)
        q.clear_log()
        r = cli(*args)
        assert r.exit_code == 0, r.output
        assert f"+{done:,} by earlier runs" in r.stdout and secret not in r.output
        assert rows_sent(q) == ROWS - done
        assert_collection_is_table(q, table, ROWS)


@pytest.mark.parametrize("kind", ["text_key", "partitioned", "no_key_index"])
def test_parallel_copy_over_grpc_is_exact(db, cli, kind):
    """Four workers writing at once over gRPC; key and page ranges, partitions."""
    db.execute(TABLES[kind])
    with db.connect() as conn:
        fill_items(conn, "t", 800, key="text" if kind == "text_key" else "bigint")
        conn.execute("ANALYZE t")
    with QdrantEndpoint() as q:
        r = cli(*migrate_command(db, q.grpc_url, "--migration.num-workers", "4", "--pg.key-column", "id"))
        assert r.exit_code == 0, r.output
        assert "4 / " in r.stdout
        assert {u.front for u in q.upserts("c")} == {"grpc"}
        assert_collection_is_table(q, db, 800)
