"""HNSW and quantization planned from the pgvector indexes reach every target: a tuned HNSW index's
m / ef_construction, a binary_quantize(col) index's binary quantization; `inspect` says where each
value came from."""

from __future__ import annotations

import json

import pytest
from qdrant_client import models

from conftest import migrate_args
from qdrant_endpoint import QdrantEndpoint
from qdrant_endpoint.faults import QUERY

TABLE = """
CREATE TABLE t (id int PRIMARY KEY, v vector(3), w vector(3));
INSERT INTO t SELECT i, ARRAY[i, 1, i % 5]::real[]::vector(3), ARRAY[1, -i, i % 3 - 1]::real[]::vector(3)
FROM generate_series(1, 200) i;
CREATE INDEX t_v_idx ON t USING hnsw (v vector_cosine_ops) WITH (m = 24, ef_construction = 120);
CREATE INDEX t_w_bq ON t USING hnsw ((binary_quantize(w)::bit(3)) bit_hamming_ops);
CREATE INDEX t_w_ivf ON t USING ivfflat (w vector_l2_ops) WITH (lists = 4);
"""


@pytest.fixture
def table(db):
    db.execute(TABLE)
    return db


def test_inspect_shows_where_each_setting_came_from(table, cli):
    r = cli("inspect", "--pg.url", table.url, "--pg.table", "t")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "24 (from index t_v_idx)" in out and "120 (from index t_v_idx)" in out
    assert "16 (from index t_w_bq (pgvector's default m))" in out
    assert "64 (from index t_w_bq (pgvector's default ef_construction))" in out
    assert "binary (from index t_w_bq (binary_quantize(w)))" in out and "rescore=true" in out
    assert "index t_w_ivf is IVFFlat (lists=4)" in out and "Qdrant's HNSW may return better results" in out
    assert "Euclid" in out  # w's distance from the IVFFlat index, not Hamming from the binary_quantize one
    r = cli("inspect", "--pg.url", table.url, "--pg.table", "t", "--qdrant.hnsw-m", "8",
            "--qdrant.quantization", "int8")
    out = " ".join(r.output.split())
    assert r.exit_code == 0 and "8 (--qdrant.hnsw-m)" in out and "120 (from index t_v_idx)" in out
    assert "int8 (--qdrant.quantization (wins over index t_w_bq on binary_quantize))" in out


@pytest.mark.one_server
def test_local_mode_collection_gets_the_index_settings(table, cli, qdrant_path, open_qdrant):
    r = cli(*migrate_args(table, "t", qdrant_path, "c", "--pg.columns", "id,v"))
    assert r.exit_code == 0, r.output
    assert "HNSW m=24 ef_construct=120" in r.output
    both = cli(*migrate_args(table, "t", qdrant_path, "both"))
    assert both.exit_code == 0, both.output
    client = open_qdrant(qdrant_path)
    # local mode keeps no collection-wide HNSW or quantization (it reports Qdrant's defaults): each
    # vector records its own
    hnsw = client.get_collection("c").config.params.vectors["v"].hnsw_config
    assert (hnsw.m, hnsw.ef_construct) == (24, 120)
    vectors = client.get_collection("both").config.params.vectors
    assert (vectors["v"].hnsw_config.m, vectors["v"].hnsw_config.ef_construct) == (24, 120)
    assert (vectors["w"].hnsw_config.m, vectors["w"].hnsw_config.ef_construct) == (16, 64)
    assert isinstance(vectors["w"].quantization_config, models.BinaryQuantization)
    assert vectors["v"].quantization_config is None


@pytest.mark.one_server
def test_server_collection_gets_the_index_settings_over_grpc(table, cli):
    with QdrantEndpoint(keep_bodies=True) as q:
        url = q.target_url("grpc")
        for collection, extra in (("c", ("--pg.columns", "id,v")), ("both", ())):
            r = cli("migrate", "--pg.url", table.url, "--pg.table", "t", "--qdrant.url", url,
                    "--qdrant.collection", collection, "--migration.num-workers", "1", *extra)
            assert r.exit_code == 0, r.output
        client = q.client(grpc=True)
        info = client.get_collection("c")
        assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (24, 120)
        assert info.indexed_vectors_count == 200  # built once m was restored after the load (over 1 KiB)
        both = client.get_collection("both").config
        v, w = both.params.vectors["v"], both.params.vectors["w"]
        assert (v.hnsw_config.m, v.hnsw_config.ef_construct) == (24, 120)  # v's own, w's differ
        assert (w.hnsw_config.m, w.hnsw_config.ef_construct) == (16, 64)
        assert isinstance(w.quantization_config, models.BinaryQuantization) and v.quantization_config is None
        # verify's approximate searches re-rank a quantized vector with the originals (rescore + oversampling)
        r = cli("verify", "--pg.url", table.url, "--pg.table", "t", "--qdrant.url", url,
                "--qdrant.collection", "both")
        assert r.exit_code == 0, r.output
        approximate = [x.body.params for x in q.seen(QUERY, "both") if not x.body.params.exact]
        assert approximate and all(p.quantization.rescore and p.quantization.oversampling == 2.0 for p in approximate)


@pytest.mark.one_server
def test_edge_shard_gets_the_index_settings(table, cli, tmp_path):
    r = cli("migrate", "--pg.url", table.url, "--pg.table", "t", "--qdrant.url", f"edge:{tmp_path}",
            "--qdrant.collection", "both")
    assert r.exit_code == 0, r.output
    vectors = json.loads((tmp_path / "both" / "edge_config.json").read_text())["vectors"]
    assert {k: vectors["v"]["hnsw_config"][k] for k in ("m", "ef_construct")} == {"m": 24, "ef_construct": 120}
    assert {k: vectors["w"]["hnsw_config"][k] for k in ("m", "ef_construct")} == {"m": 16, "ef_construct": 64}
    assert "binary" in vectors["w"]["quantization_config"] and "quantization_config" not in vectors["v"]
