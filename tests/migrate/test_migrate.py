"""`pg2qdrant migrate` against a real PostgreSQL + pgvector and a real (local-mode) collection."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from conftest import migrate_args


def all_points(client: QdrantClient, collection: str = "c") -> dict:
    out, offset = {}, None
    while True:
        recs, offset = client.scroll(collection, limit=500, offset=offset, with_payload=True, with_vectors=True)
        out.update({r.id: r for r in recs})
        if offset is None:
            return out


def vector_text(v) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def f32(v) -> bytes:
    return np.asarray(v, dtype=np.float32).tobytes()


# --- the reference tool's own integration case ---------------------------------------------------

def test_reference_case_100_rows_dot_distance_all_values_exact(db, qdrant_path, cli, open_qdrant):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(100, 384)).astype(np.float32)
    db.execute("CREATE TABLE items (id integer PRIMARY KEY, title text, count integer, "
               "score double precision, active boolean, embedding vector(384))")
    with db.connect() as conn, conn.cursor() as cur:
        for i in range(100):
            cur.execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s::vector)",
                        (i + 1, f"item {i + 1}", i * 3, i / 7, i % 2 == 0, vector_text(vecs[i])))
    # The flags as the reference test passes them.
    r = cli("pg", "--pg.url", db.url, "--pg.table", "items", "--pg.key-column", "id",
            "--qdrant.url", f"local:{qdrant_path}", "--qdrant.collection", "items",
            "--qdrant.distance-metric", "embedding=dot")
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    info = client.get_collection("items")
    assert info.config.params.vectors["embedding"].size == 384
    assert info.config.params.vectors["embedding"].distance == models.Distance.DOT
    points = all_points(client, "items")
    assert sorted(points) == list(range(1, 101))
    for i in range(100):
        p = points[i + 1]
        assert p.payload == {"id": i + 1, "title": f"item {i + 1}", "count": i * 3, "score": i / 7,
                             "active": i % 2 == 0}
        assert type(p.payload["count"]) is int and type(p.payload["score"]) is float
        assert f32(p.vector["embedding"]) == vecs[i].tobytes()  # bit-exact float32
    assert "100 rows in the snapshot" in r.stdout


def test_command_pasted_from_qdrant_docs_works(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE your_embeddings_table (id bigint PRIMARY KEY, title text, category text, "
               "extra text, embedding vector(3))")
    db.execute("INSERT INTO your_embeddings_table SELECT i, 't' || i, 'c', 'x', '[1,2,3]' "
               "FROM generate_series(1, 10) i")
    # From the docs page, `docker run ... qdrant-migration` replaced by `pg2qdrant`, URL made local.
    args = ["pg", "--pg.url", db.url, "--pg.table", "your_embeddings_table", "--pg.key-column", "id",
            "--pg.columns", "id,embedding,title,category",
            "--qdrant.url", f"local:{qdrant_path}", "--qdrant.api-key", "your-qdrant-api-key",
            "--qdrant.collection", "your-collection"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    points = all_points(open_qdrant(qdrant_path), "your-collection")
    assert len(points) == 10
    assert points[3].payload == {"id": 3, "title": "t3", "category": "c"}
    assert "your-qdrant-api-key" not in r.output


# --- vectors ------------------------------------------------------------------------------------

def test_every_pgvector_type_with_its_index_distance(db, qdrant_path, cli, open_qdrant):
    db.execute("""
        CREATE TABLE vt (id int PRIMARY KEY, v vector(5), h halfvec(4), s sparsevec(20), b bit(10));
        CREATE INDEX ON vt USING hnsw (v vector_l2_ops);
        CREATE INDEX ON vt USING hnsw (h halfvec_cosine_ops);
        CREATE INDEX ON vt USING hnsw (s sparsevec_ip_ops);
        CREATE INDEX ON vt USING hnsw (b bit_hamming_ops);
        INSERT INTO vt VALUES
          (1, '[0.1,0.2,0.3,0.4,0.5]', '[0.1,-2.5,65504,0.000061]', '{1:0.5,20:-2}/20', B'1000000001'),
          (2, '[1e-30,3.4e38,-1,0,1]', '[1,2,3,4]', '{}/20', B'0110000000'),
          (3, NULL, NULL, NULL, NULL);
    """)
    r = cli(*migrate_args(db, "vt", qdrant_path))
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    params = client.get_collection("c").config.params
    v, h, b = params.vectors["v"], params.vectors["h"], params.vectors["b"]
    assert (v.size, v.distance, v.datatype in (None, models.Datatype.FLOAT32)) == (5, models.Distance.EUCLID, True)
    assert (h.size, h.distance, h.datatype) == (4, models.Distance.COSINE, models.Datatype.FLOAT16)
    assert (b.size, b.distance, b.datatype) == (10, models.Distance.MANHATTAN, models.Datatype.UINT8)
    assert set(params.sparse_vectors) == {"s"}
    pts = all_points(client)
    assert f32(pts[1].vector["v"]) == f32([0.1, 0.2, 0.3, 0.4, 0.5])
    assert f32(pts[2].vector["v"]) == f32([1e-30, 3.4e38, -1, 0, 1])
    half = np.asarray(pts[1].vector["h"], dtype=np.float32)
    expected_half = np.array([0.1, -2.5, 65504, 0.000061], dtype=np.float16).astype(np.float32)
    norm = np.linalg.norm(expected_half.astype(np.float64))
    assert np.allclose(half / np.linalg.norm(half), expected_half / norm, rtol=1e-3)
    assert pts[1].vector["s"].indices == [0, 19] and pts[1].vector["s"].values == [0.5, -2.0]
    assert pts[2].vector["s"].indices == [] if "s" in pts[2].vector else True
    assert pts[1].vector["b"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert pts[2].vector["b"] == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert pts[3].vector == {} or pts[3].vector is None  # NULL vectors: the point lacks them
    assert set(pts[3].payload) == {"id"}


def test_distance_comes_from_each_operator_class(db, qdrant_path, cli, open_qdrant):
    db.execute("""
        CREATE TABLE d (id int PRIMARY KEY, v_l2 vector(3), v_ip vector(3), v_cos vector(3), v_l1 vector(3),
                        h_ip halfvec(3), h_l1 halfvec(3), b_jac bit(8), v_none vector(3), v_over vector(3));
        CREATE INDEX ON d USING ivfflat (v_l2 vector_l2_ops) WITH (lists = 1);
        CREATE INDEX ON d USING hnsw (v_ip vector_ip_ops);
        CREATE INDEX ON d USING ivfflat (v_cos vector_cosine_ops) WITH (lists = 1);
        CREATE INDEX ON d USING hnsw (v_l1 vector_l1_ops);
        CREATE INDEX ON d USING hnsw (h_ip halfvec_ip_ops);
        CREATE INDEX ON d USING hnsw (h_l1 halfvec_l1_ops);
        CREATE INDEX ON d USING hnsw (b_jac bit_jaccard_ops);
        CREATE INDEX ON d USING hnsw (v_over vector_cosine_ops);
        INSERT INTO d VALUES (1, '[1,2,3]', '[1,2,3]', '[1,2,3]', '[1,2,3]', '[1,2,3]', '[1,2,3]', B'10101010',
                              '[1,2,3]', '[1,2,3]');
    """)
    r = cli(*migrate_args(db, "d", qdrant_path), "--qdrant.distance-metric", "v_over=euclid")
    assert r.exit_code == 0, r.output
    vectors = open_qdrant(qdrant_path).get_collection("c").config.params.vectors
    got = {name: vp.distance.value for name, vp in vectors.items()}
    assert got == {"v_l2": "Euclid", "v_ip": "Dot", "v_cos": "Cosine", "v_l1": "Manhattan", "h_ip": "Dot",
                   "h_l1": "Manhattan", "b_jac": "Manhattan", "v_none": "Cosine", "v_over": "Euclid"}
    assert "v_none: no HNSW or IVFFlat index" in r.stderr  # the default is announced
    assert "bit_jaccard_ops has no Qdrant equivalent" in r.stderr


def test_inspect_says_which_source_decided_the_distance(db, cli):
    db.execute("CREATE TABLE d (id int PRIMARY KEY, a vector(3), b vector(3));"
               "CREATE INDEX a_idx ON d USING hnsw (a vector_ip_ops)")
    r = cli("inspect", "--pg.url", db.url, "--pg.table", "d", "--qdrant.distance-metric", "b=manhattan")
    assert r.exit_code == 0, r.output
    assert "a_idx" in r.stdout and "vector_ip_ops" in r.stdout and "--qdrant.distance-metric" in r.stdout


def test_vector_without_dimension_takes_it_from_the_data(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE u (id int PRIMARY KEY, v vector); "
               "INSERT INTO u VALUES (1, '[1,2,3,4]'), (2, '[5,6,7,8]'), (3, NULL)")
    r = cli(*migrate_args(db, "u", qdrant_path))
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    assert client.get_collection("c").config.params.vectors["v"].size == 4
    assert client.count("c").count == 3


def test_vector_without_dimension_and_disagreeing_rows_is_a_clear_error(db, qdrant_path, cli):
    db.execute("CREATE TABLE u (id int PRIMARY KEY, v vector); "
               "INSERT INTO u VALUES (1, '[1,2,3,4]'), (2, '[5,6,7]')")
    r = cli(*migrate_args(db, "u", qdrant_path))
    assert r.exit_code == 2
    assert "different dimensions: 3, 4" in r.stderr and "Fix:" in r.stderr
    assert "Traceback" not in r.output
    assert not (qdrant_path / "collection" / "c").exists()  # nothing written


# --- keys and IDs -----------------------------------------------------------------------------

@pytest.mark.parametrize("pgtype,values,expected_ids", [
    ("integer", ["1", "2147483647"], [1, 2147483647]),
    ("bigint", ["0", "9223372036854775807", "-5"], [0, 9223372036854775807,
                                                     str(uuid.uuid5(uuid.NAMESPACE_URL, "-5"))]),
    ("smallint", ["7"], [7]),
    ("text", ["'abc'", "'550E8400-E29B-41D4-A716-446655440000'"],
     [str(uuid.uuid5(uuid.NAMESPACE_URL, "abc")), "550e8400-e29b-41d4-a716-446655440000"]),
    ("uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"], ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
])
def test_key_types_become_these_point_ids(db, qdrant_path, cli, open_qdrant, pgtype, values, expected_ids):
    db.execute(f"CREATE TABLE k (id {pgtype} PRIMARY KEY, v vector(2))")
    for v in values:
        db.execute(f"INSERT INTO k VALUES ({v}, '[1,1]')")
    r = cli(*migrate_args(db, "k", qdrant_path))
    assert r.exit_code == 0, r.output
    pts = all_points(open_qdrant(qdrant_path))
    assert sorted(map(str, pts)) == sorted(map(str, expected_ids))
    for p in pts.values():
        assert "id" in p.payload  # the key is kept in the payload


def test_reference_id_mode_hashes_integer_keys_like_qdrant_migration(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE k (id int PRIMARY KEY, v vector(2)); INSERT INTO k VALUES (42, '[1,1]')")
    r = cli(*migrate_args(db, "k", qdrant_path), "--migration.id-mode", "reference")
    assert r.exit_code == 0, r.output
    assert list(all_points(open_qdrant(qdrant_path))) == ["5c2b23de-4bad-58ee-a4b3-f22f3b9cfd7d"]


def test_composite_primary_key(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE ck (tenant text, doc int, v vector(2), PRIMARY KEY (tenant, doc)); "
               "INSERT INTO ck VALUES ('a_b', 1, '[1,1]'), ('a', 1, '[2,2]')")
    r = cli(*migrate_args(db, "ck", qdrant_path))
    assert r.exit_code == 0, r.output
    pts = all_points(open_qdrant(qdrant_path))
    assert set(pts) == {str(uuid.uuid5(uuid.NAMESPACE_URL, '["a_b","1"]')),
                        str(uuid.uuid5(uuid.NAMESPACE_URL, '["a","1"]'))}
    assert {(p.payload["tenant"], p.payload["doc"]) for p in pts.values()} == {("a_b", 1), ("a", 1)}


def test_duplicate_keys_stop_before_any_write_and_name_the_values(db, qdrant_path, cli):
    db.execute("CREATE TABLE dup (name text, v vector(2)); "
               "INSERT INTO dup VALUES ('x', '[1,1]'), ('x', '[2,2]'), ('y', '[3,3]'), ('z', '[1,2]'), ('z', '[0,1]')")
    r = cli(*migrate_args(db, "dup", qdrant_path), "--pg.key-column", "name")
    assert r.exit_code == 2, r.output
    assert "not unique" in r.stderr and "'x' (2 rows)" in r.stderr and "'z' (2 rows)" in r.stderr
    assert "Traceback" not in r.output
    assert not (qdrant_path / "collection" / "c").exists()


def test_null_keys_stop_before_any_write(db, qdrant_path, cli):
    db.execute("CREATE TABLE nk (name text, v vector(2)); INSERT INTO nk VALUES ('x', '[1,1]'), (NULL, '[2,2]')")
    r = cli(*migrate_args(db, "nk", qdrant_path), "--pg.key-column", "name")
    assert r.exit_code == 2, r.output
    assert "NULL in 1 row" in r.stderr
    assert not (qdrant_path / "collection" / "c").exists()


def test_missing_key_column_without_primary_key_suggests_candidates(db, qdrant_path, cli):
    db.execute("CREATE TABLE nopk (id int, v vector(2))")
    r = cli(*migrate_args(db, "nopk", qdrant_path))
    assert r.exit_code == 2 and "--pg.key-column" in r.stderr and "candidates: id" in r.stderr


# --- tables ---------------------------------------------------------------------------------

def test_schema_qualified_and_quoted_names(db, qdrant_path, cli, open_qdrant):
    db.execute('CREATE SCHEMA "My Schema"; CREATE TABLE "My Schema"."Items" (id int PRIMARY KEY, v vector(2)); '
               'INSERT INTO "My Schema"."Items" VALUES (1, \'[1,1]\');'
               'CREATE SCHEMA app; CREATE TABLE app.items (id int PRIMARY KEY, v vector(2)); '
               "INSERT INTO app.items VALUES (1, '[1,1]'), (2, '[2,2]');"
               'CREATE TABLE "MixedCase" (id int PRIMARY KEY, v vector(2)); INSERT INTO "MixedCase" VALUES (5, \'[1,1]\')')
    assert cli(*migrate_args(db, '"My Schema"."Items"', qdrant_path, "a")).exit_code == 0
    assert cli(*migrate_args(db, "app.items", qdrant_path, "b")).exit_code == 0
    # The reference quotes the whole name, so a bare MixedCase keeps its case.
    assert cli(*migrate_args(db, "MixedCase", qdrant_path, "m")).exit_code == 0
    client = open_qdrant(qdrant_path)
    assert client.count("a").count == 1 and client.count("b").count == 2 and client.count("m").count == 1


def test_missing_table_lists_tables_with_vectors(db, qdrant_path, cli):
    db.execute("CREATE TABLE documents (id int PRIMARY KEY, v vector(2))")
    r = cli(*migrate_args(db, "documnets", qdrant_path))
    assert r.exit_code == 2
    assert "'documnets' was not found" in r.stderr and "public.documents" in r.stderr


def test_partitioned_table_reads_every_partition(db, qdrant_path, cli, open_qdrant):
    db.execute("""
        CREATE TABLE p (id int, region text, v vector(2), PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE p_eu PARTITION OF p FOR VALUES IN ('eu');
        CREATE TABLE p_us PARTITION OF p FOR VALUES IN ('us') PARTITION BY RANGE (id);
        CREATE TABLE p_us_low PARTITION OF p_us FOR VALUES FROM (0) TO (500);
        CREATE TABLE p_us_high PARTITION OF p_us FOR VALUES FROM (500) TO (MAXVALUE);
        CREATE TABLE p_other PARTITION OF p DEFAULT;
        INSERT INTO p SELECT i, (ARRAY['eu','us','asia'])[1 + i % 3], '[1,2]' FROM generate_series(1, 999) i;
    """)
    r = cli(*migrate_args(db, "p", qdrant_path))
    assert r.exit_code == 0, r.output
    pts = all_points(open_qdrant(qdrant_path))
    assert len(pts) == 999
    assert sorted(p.payload["id"] for p in pts.values()) == list(range(1, 1000))


def test_inheritance_children_are_read(db, qdrant_path, cli, open_qdrant):
    db.execute("""
        CREATE TABLE parent (id int PRIMARY KEY, v vector(2));
        CREATE TABLE child (extra text) INHERITS (parent);
        INSERT INTO parent VALUES (1, '[1,1]'); INSERT INTO child VALUES (2, '[2,2]', 'e');
    """)
    r = cli(*migrate_args(db, "parent", qdrant_path), "--pg.key-column", "id")
    assert r.exit_code == 0, r.output
    assert sorted(all_points(open_qdrant(qdrant_path))) == [1, 2]


def test_empty_table_creates_an_empty_collection(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE e (id int PRIMARY KEY, v vector(4))")
    r = cli(*migrate_args(db, "e", qdrant_path))
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    assert client.count("c").count == 0 and client.get_collection("c").config.params.vectors["v"].size == 4


def test_pg_columns_selects_payload_and_adds_the_key(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE sel (id int PRIMARY KEY, a text, b text, c int, v vector(2), w vector(2)); "
               "INSERT INTO sel VALUES (1, 'a', 'b', 3, '[1,1]', '[2,2]')")
    r = cli(*migrate_args(db, "sel", qdrant_path), "--pg.columns", "a", "--pg.columns", "c,v")
    assert r.exit_code == 0, r.output
    p = all_points(open_qdrant(qdrant_path))[1]
    assert p.payload == {"id": 1, "a": "a", "c": 3}
    assert set(p.vector) == {"v"}


def test_pg_columns_with_unknown_column_is_an_input_error(db, qdrant_path, cli):
    db.execute("CREATE TABLE sel (id int PRIMARY KEY, v vector(2))")
    r = cli(*migrate_args(db, "sel", qdrant_path), "--pg.columns", "id,nope,v")
    assert r.exit_code == 2 and "'nope'" in r.stderr and "columns of public.sel are: id, v" in r.stderr


def test_table_without_vector_column(db, qdrant_path, cli):
    db.execute("CREATE TABLE plain (id int PRIMARY KEY, title text)")
    r = cli(*migrate_args(db, "plain", qdrant_path))
    assert r.exit_code == 2 and "no vector column" in r.stderr


# --- existing collections ----------------------------------------------------------------------

def test_existing_collection_that_mismatches_stops_before_writing(db, qdrant_path, cli):
    db.execute("CREATE TABLE m (id int PRIMARY KEY, v vector(3)); CREATE INDEX ON m USING hnsw (v vector_ip_ops);"
               "INSERT INTO m VALUES (1, '[1,2,3]')")
    client = QdrantClient(path=str(qdrant_path))
    client.create_collection("c", vectors_config={"v": models.VectorParams(size=4, distance=models.Distance.COSINE)})
    client.close()
    r = cli(*migrate_args(db, "m", qdrant_path))
    assert r.exit_code == 2, r.output
    assert "vector 'v' has size 4 in the collection, 3 in the table" in r.stderr
    assert "vector 'v' uses Cosine in the collection, the plan says Dot" in r.stderr
    client = QdrantClient(path=str(qdrant_path))
    try:
        assert client.count("c").count == 0
    finally:
        client.close()


def test_rerun_into_matching_collection_is_idempotent(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE m (id int PRIMARY KEY, t text, v vector(3)); "
               "INSERT INTO m SELECT i, 't', '[1,2,3]' FROM generate_series(1, 50) i")
    assert cli(*migrate_args(db, "m", qdrant_path)).exit_code == 0
    r = cli(*migrate_args(db, "m", qdrant_path))
    assert r.exit_code == 0 and "already complete" in r.stderr and "--migration.restart" in r.stderr
    r = cli(*migrate_args(db, "m", qdrant_path), "--migration.restart")
    assert r.exit_code == 0 and "matches the plan" in r.stderr and "50 rows in the snapshot" in r.stdout
    assert open_qdrant(qdrant_path).count("c").count == 50


def test_create_collection_false_and_missing_collection(db, qdrant_path, cli):
    db.execute("CREATE TABLE m (id int PRIMARY KEY, v vector(3))")
    r = cli(*migrate_args(db, "m", qdrant_path), "--migration.create-collection=false")
    assert r.exit_code == 2 and "does not exist" in r.stderr
