"""Older pgvector: a vector-only table migrates on pgvector 0.6, and what needs 0.7 is explained.

The server is the ``pgserver`` 0.1.4 wheel (PostgreSQL 16.2 with pgvector 0.6.2),
started by :class:`pg2qdrant.localpg.LocalPostgres` for this module only. pgvector
0.6 has ``vector`` only: ``halfvec`` and ``sparsevec`` arrived in 0.7, and so did
binary vectors (``bit(n)`` with Hamming/Jaccard distances and indexes).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from qdrant_client import models

from conftest import Database, migrate_args
from helpers import assert_local_collection_equals_table, vector_literal
from pg2qdrant.localpg import LocalPostgres, LocalPostgresError, server_problem

PGSERVER_REQUIREMENT = "pgserver==0.1.4"

def test_second_integration_server_is_installed():
    """Every integration test also runs on PostgreSQL 15 + pgvector 0.8.0 (tests/conftest.py) where installed."""
    problem = server_problem("pg15")
    if problem:
        message = f"the integration tests ran on the embedded PostgreSQL 18 only, not on PostgreSQL 15: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def pgvector06() -> Iterator[LocalPostgres]:
    if sys.version_info >= (3, 13):
        pytest.skip(f"{PGSERVER_REQUIREMENT} has wheels for CPython 3.12 and older only")
    try:
        server = LocalPostgres(flavor="pgserver")
    except LocalPostgresError as exc:
        message = f"{exc} (the test extra should list {PGSERVER_REQUIREMENT!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def old_db(pgvector06: LocalPostgres) -> Iterator[Database]:
    name = f"compat_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pgvector06.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(pgvector06, name)
    db.execute("CREATE EXTENSION vector")
    yield db
    with psycopg.connect(pgvector06.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def collections_in(path: Path) -> list[str]:
    from qdrant_client import QdrantClient

    if not path.exists():
        return []
    client = QdrantClient(path=str(path))
    try:
        return [c.name for c in client.get_collections().collections]
    finally:
        client.close()


def assert_explained(result, column: str, declared: str) -> None:
    """Exit 2 before anything is written, with a message naming the column, both versions and a fix."""
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"{column}" in message and declared in message, message
    assert "pgvector 0.7" in message and "0.6.2" in message, message
    assert "Fix:" in message, message
    assert "Traceback" not in result.output


def test_the_server_really_is_pgvector_0_6(old_db):
    [(server_version, pgvector)] = old_db.execute(
        "SELECT current_setting('server_version'), extversion FROM pg_extension WHERE extname = 'vector'")
    assert server_version.startswith("16.") and pgvector == "0.6.2"
    for missing in ("halfvec", "sparsevec"):
        assert old_db.execute("SELECT to_regtype(%s)", (missing,)) == [(None,)]


def test_vector_only_table_migrates_on_pgvector_0_6(old_db, qdrant_path, cli, open_qdrant):
    rng = np.random.default_rng(6)
    rows = 500
    emb = rng.normal(size=(rows, 64)).astype(np.float32)
    small = rng.normal(size=(rows, 3)).astype(np.float32)
    old_db.execute("CREATE TABLE docs (id bigint PRIMARY KEY, title text, n integer, "
                   "embedding vector(64), small vector(3))")
    with old_db.connect() as conn, conn.cursor() as cur:
        with cur.copy("COPY docs FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row((i + 1, None if i % 9 == 0 else f"doc {i + 1}", i * 2, vector_literal(emb[i]),
                                None if i % 11 == 0 else vector_literal(small[i])))
    old_db.execute("CREATE INDEX ON docs USING hnsw (embedding vector_ip_ops)")
    old_db.execute("CREATE INDEX ON docs USING ivfflat (small vector_l2_ops) WITH (lists = 4)")
    old_db.execute("ANALYZE docs")

    inspected = cli("inspect", "--pg.url", old_db.url, "--pg.table", "docs", "--qdrant.collection", "c")
    assert inspected.exit_code == 0, inspected.output

    r = cli(*migrate_args(old_db, "docs", qdrant_path))
    assert r.exit_code == 0, r.output
    assert f"{rows} rows in the snapshot" in r.stdout
    # Every row is a point with the same payload and bit-exact float32 vectors, and nothing else.
    assert assert_local_collection_equals_table(old_db.url, "docs", qdrant_path) == rows
    client = open_qdrant(qdrant_path)
    vectors = client.get_collection("c").config.params.vectors
    assert (vectors["embedding"].size, vectors["embedding"].distance) == (64, models.Distance.DOT)
    assert (vectors["small"].size, vectors["small"].distance) == (3, models.Distance.EUCLID)
    point = client.retrieve("c", [2], with_vectors=True)[0]
    assert np.asarray(point.vector["embedding"], dtype=np.float32).tobytes() == emb[1].tobytes()
    assert "small" not in client.retrieve("c", [1], with_vectors=True)[0].vector  # NULL vector: absent



def test_vector_without_dimension_on_pgvector_0_6(old_db, qdrant_path, cli, open_qdrant):
    old_db.execute("CREATE TABLE loose (id int PRIMARY KEY, v vector)")
    old_db.execute("INSERT INTO loose VALUES (1, '[0.1,2,3]'), (2, '[4,5.5,-6]'), (3, NULL)")
    r = cli(*migrate_args(old_db, "loose", qdrant_path), "--qdrant.distance-metric", "v=manhattan")
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    v = client.get_collection("c").config.params.vectors["v"]
    assert (v.size, v.distance) == (3, models.Distance.MANHATTAN)
    points = {p.id: p for p in client.retrieve("c", [1, 2, 3], with_vectors=True)}
    assert np.asarray(points[1].vector["v"], dtype=np.float32).tobytes() == np.float32([0.1, 2, 3]).tobytes()
    assert np.asarray(points[2].vector["v"], dtype=np.float32).tobytes() == np.float32([4, 5.5, -6]).tobytes()
    assert "v" not in (points[3].vector or {})  # NULL vector: the point lacks it

@pytest.mark.parametrize("missing_type", ["halfvec", "sparsevec"])
def test_halfvec_and_sparsevec_need_pgvector_0_7(old_db, qdrant_path, cli, missing_type):
    # pgvector 0.6 cannot create such a column at all (the type does not exist), so the
    # table a user brings from a newer server is imitated: a stand-in type with that name,
    # made a member of the 0.6 extension, is what the catalog would show.
    old_db.execute(f"CREATE TYPE {missing_type} AS (x real)")
    old_db.execute(f"ALTER EXTENSION vector ADD TYPE {missing_type}")
    old_db.execute(f"CREATE TABLE t (id int PRIMARY KEY, embedding vector(3), other {missing_type})")
    old_db.execute("INSERT INTO t VALUES (1, '[1,2,3]', ROW(1))")
    for command in (migrate_args(old_db, "t", qdrant_path), ["inspect", "--pg.url", old_db.url, "--pg.table", "t"]):
        assert_explained(cli(*command), "other", missing_type)
    assert "c" not in collections_in(qdrant_path)


def test_halfvec_column_left_out_with_pg_columns_migrates(old_db, qdrant_path, cli):
    """The explanation's fix (leave the column out with --pg.columns) works."""
    old_db.execute("CREATE TYPE halfvec AS (x real)")
    old_db.execute("ALTER EXTENSION vector ADD TYPE halfvec")
    old_db.execute("CREATE TABLE t (id int PRIMARY KEY, embedding vector(3), other halfvec)")
    old_db.execute("INSERT INTO t VALUES (1, '[1,2,3]', ROW(1))")
    r = cli(*migrate_args(old_db, "t", qdrant_path), "--pg.columns", "embedding")
    assert r.exit_code == 0, r.output


def test_bit_vectors_need_pgvector_0_7(old_db, qdrant_path, cli, open_qdrant):
    # bit(n) is a core type, so the column exists on 0.6, but pgvector has no binary
    # vectors before 0.7 (no Hamming distance, no bit_hamming_ops index): say so instead
    # of silently turning the column into a second vector.
    old_db.execute("CREATE TABLE t (id int PRIMARY KEY, embedding vector(3), flags bit(8))")
    old_db.execute("INSERT INTO t VALUES (1, '[1,2,3]', B'10101010'), (2, '[4,5,6]', B'00000001')")
    assert_explained(cli(*migrate_args(old_db, "t", qdrant_path)), "flags", "bit(8)")
    assert "c" not in collections_in(qdrant_path)
    # The fix the message gives: leave the column out.
    r = cli(*migrate_args(old_db, "t", qdrant_path), "--pg.columns", "embedding")
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    assert set(client.get_collection("c").config.params.vectors) == {"embedding"}
    assert client.count("c").count == 2
