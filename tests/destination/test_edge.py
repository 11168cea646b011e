"""Qdrant Edge target (edge:DIR): same mapping and checks, HNSW built at the end, payload indexes first."""

from __future__ import annotations

import pytest

from conftest import migrate_args
from helpers import assert_collection_equals_table, fill_items
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.edge import EdgeTarget

qdrant_edge = pytest.importorskip("qdrant_edge")


def edge_args(db, table, path, *extra):
    args = migrate_args(db, table, path, "c", *extra)
    args[args.index("--qdrant.url") + 1] = f"edge:{path}"
    return args


@pytest.fixture
def items(db):
    db.execute("CREATE TABLE t (id text PRIMARY KEY, title text, n int, score float8, v vector(16), "
               "h halfvec(4), s sparsevec(50), b bit(9));"
               "CREATE INDEX ON t USING hnsw (v vector_ip_ops); CREATE INDEX t_n_idx ON t (n);")
    with db.connect() as conn:
        fill_items(conn, "t", 1200, key="text")
        conn.execute("UPDATE t SET h = '[1,2,3,4]', s = '{3:1.5,50:-2}/50', b = B'101000001' WHERE n % 2 = 0")
        conn.execute("ANALYZE t")
    return db


def test_edge_holds_exactly_the_table(items, tmp_path, cli):
    r = cli(*edge_args(items, "t", tmp_path), "--migration.num-workers", "2",
            "--qdrant.payload-index", "title:keyword")
    assert r.exit_code == 0, r.output
    target = EdgeTarget(parse_target_url(f"edge:{tmp_path}"))
    try:
        # Edge re-parses payload floats inexactly (upstream serde_json): see test below.
        assert assert_collection_equals_table(items.url, "t", target, float_ulps=2) == 1200
        info = target.shard("c").info()
        # Sparse vectors are always indexed (600 rows have one); HNSW adds the dense ones at the end.
        assert info.indexed_vectors_count > 600
        assert set(info.payload_schema) == {"title", "n"}  # the flag, and the btree index on n
        assert target.shape("c").dense["v"] == (16, "Dot", "float32")
        assert target.shape("c").dense["h"][2] == "float16" and target.shape("c").sparse == {"s"}
    finally:
        target.close()


def test_edge_without_hnsw_when_m_is_zero(items, tmp_path, cli):
    r = cli(*edge_args(items, "t", tmp_path), "--qdrant.hnsw-m", "0")
    assert r.exit_code == 0, r.output
    target = EdgeTarget(parse_target_url(f"edge:{tmp_path}"))
    try:
        assert target.count("c") == 1200
        assert target.shard("c").info().indexed_vectors_count == 600  # only the sparse index
    finally:
        target.close()


def test_existing_edge_shard_that_mismatches(items, tmp_path, cli):
    assert cli(*edge_args(items, "t", tmp_path)).exit_code == 0
    r = cli(*edge_args(items, "t", tmp_path), "--qdrant.distance-metric", "v=cosine")
    assert r.exit_code == 2, r.output
    assert "vector 'v' uses Dot in the collection, the plan says Cosine" in r.stderr
    # A matching rerun is an idempotent upsert.
    r = cli(*edge_args(items, "t", tmp_path))
    assert r.exit_code == 0, r.output
    target = EdgeTarget(parse_target_url(f"edge:{tmp_path}"))
    try:
        assert target.count("c") == 1200
    finally:
        target.close()


def test_known_limitation_edge_payload_floats_come_back_within_two_ulp(tmp_path):
    """Documents qdrant-edge-py 0.9's float payload round trip (docs/targets.md, known target limitations)."""
    import random

    from pg2qdrant.verify.compare import ulps_apart
    shard = qdrant_edge.EdgeShard.create(str(tmp_path / "s"), qdrant_edge.EdgeConfig(
        vectors={"d": qdrant_edge.EdgeVectorParams(size=1, distance=qdrant_edge.Distance.Dot)}))
    rnd = random.Random(1)
    values = [rnd.uniform(-1000, 1000) for _ in range(500)]
    shard.update(qdrant_edge.UpdateOperation.upsert_points(
        [qdrant_edge.Point(i, {"d": [1.0]}, {"x": v}) for i, v in enumerate(values)]))
    back = {r.id: r.payload["x"] for r in shard.retrieve(list(range(500)), with_payload=True, with_vector=False)}
    shard.close()
    assert max(ulps_apart(values[i], back[i]) for i in range(500)) <= 2
