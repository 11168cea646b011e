"""HNSW and quantization planned from the pgvector indexes: the flags win, then the column's index,
then the defaults; each value says where it came from, and the collection spec puts per-vector
settings only where the vectors differ."""

from __future__ import annotations

from pg2qdrant.core import plan as p
from pg2qdrant.core import table as m

VECTOR = m.PgType(90001, "vector", "public", "b", "U", "vector")
INT4 = m.PgType(23, "int4", "pg_catalog", "b", "N", None)


def _plan(*indexes: m.VectorIndex, flags: p.CollectionOptions | None = None) -> p.Plan:
    columns = (m.Column("id", 1, "integer", 23, INT4, -1, True),
               m.Column("a", 2, "vector(3)", 90001, VECTOR, 3, False),
               m.Column("b", 3, "vector(3)", 90001, VECTOR, 3, False))
    table = m.TableInfo(1, "public", "t", "r", columns, ("id",), (("id",),), indexes, (),
                        (m.Leaf(1, "public", "t", "r", 1, 10),))
    return p.build_plan(table, m.ServerInfo(170000, "17", "db", "UTF8", "0.8.0", "1"), collection="c",
                        index_flags=flags)


TUNED = m.VectorIndex("a_idx", "a", "hnsw", "vector_cosine_ops", None, (("m", "24"), ("ef_construction", "120")))
PLAIN = m.VectorIndex("b_idx", "b", "hnsw", "vector_l2_ops")
BQ = m.VectorIndex("b_bq", "b", "hnsw", "bit_hamming_ops", "(binary_quantize(b))::bit(3)", (("m", "8"),))
IVF = m.VectorIndex("b_ivf", "b", "ivfflat", "vector_l2_ops", None, (("lists", "7"),))


def _settings(plan: p.Plan) -> dict:
    return {v.name: v.index for v in plan.vectors}


def test_two_vectors_with_different_indexes_get_their_own_hnsw():
    plan = _plan(TUNED, PLAIN)
    a, b = _settings(plan)["a"], _settings(plan)["b"]
    assert (a.m, a.m_source, a.ef_construct, a.ef_construct_source) == (24, "from index a_idx", 120,
                                                                          "from index a_idx")
    # an index without WITH (...) was built with pgvector's defaults: 16 and 64
    assert (b.m, b.ef_construct) == (16, 64) and b.ef_construct_source == (
        "from index b_idx (pgvector's default ef_construction)")
    spec = plan.collection_spec()
    assert spec.hnsw == (16, 100)  # the vectors differ: the collection keeps the defaults...
    assert [spec.vector_hnsw(v) for v in spec.dense_vectors] == [(24, 120), (16, 64)]  # ...each its own
    assert spec.builds_hnsw and spec.quantization is None


def test_one_index_sets_the_collection_and_a_vector_without_index_gets_the_defaults():
    plan = _plan(TUNED)
    b = _settings(plan)["b"]
    assert (b.m, b.m_source, b.ef_construct, b.ef_construct_source) == (16, "default", 100, "default")
    one = _plan(TUNED).collection_spec(p.CollectionOptions())
    assert one.hnsw == (16, 100) and one.vector_hnsw(one.dense_vectors[0]) == (24, 120)
    assert one.vector_hnsw(one.dense_vectors[1]) is None
    same = _plan(TUNED, m.VectorIndex("b_idx", "b", "hnsw", "vector_cosine_ops", None,
                                      (("m", "24"), ("ef_construction", "120")))).collection_spec()
    assert same.hnsw == (24, 120) and [same.vector_hnsw(v) for v in same.dense_vectors] == [None, None]


def test_flags_override_the_index():
    flags = p.CollectionOptions(hnsw_m=32, quantization="int8")
    plan = _plan(TUNED, BQ, flags=flags)
    a, b = _settings(plan)["a"], _settings(plan)["b"]
    assert (a.m, a.m_source, a.ef_construct, a.ef_construct_source) == (32, "--qdrant.hnsw-m", 120, "from index a_idx")
    assert b.quantization == "int8" and b.quantization_source.startswith("--qdrant.quantization (wins over index b_bq")
    spec = plan.collection_spec(flags)
    assert spec.quantization == "int8" and spec.hnsw == (32, 100)
    assert [spec.vector_hnsw(v) for v in spec.dense_vectors] == [(32, 120), (32, 64)]  # b: ef from b_bq
    # the flags win in the spec even when the plan was made without them
    off = _plan(TUNED).collection_spec(p.CollectionOptions(hnsw_m=0))
    assert off.hnsw[0] == 0 and not off.builds_hnsw


def test_binary_quantize_index_means_binary_quantization_and_not_a_distance():
    plan = _plan(BQ, IVF)
    b = _settings(plan)["b"]
    assert (b.quantization, b.quantization_source) == ("binary", "from index b_bq (binary_quantize(b))")
    assert (b.m, b.m_source) == (8, "from index b_bq")  # the only HNSW index of the column
    vb = next(v for v in plan.vectors if v.name == "b")
    assert (vb.distance, vb.distance_source) == ("Euclid", "index b_ivf (ivfflat, vector_l2_ops)")  # not Hamming
    spec = plan.collection_spec()
    assert spec.quantization is None and [spec.vector_quantization(v) for v in spec.dense_vectors] == [None, "binary"]
    notes = plan.index_notes
    assert any("rescore=true" in n for n in notes)
    assert any(n.startswith("b: index b_ivf is IVFFlat (lists=7)") and "Qdrant's HNSW may return better" in n
               for n in notes)
    only_bq = _plan(BQ)
    assert next(v for v in only_bq.vectors if v.name == "b").distance == "Cosine"
    assert any("index b_bq on binary_quantize(b) compares bits" in w for w in only_bq.warnings)
    # a plain index on the column comes before the binary_quantize one for HNSW
    assert _settings(_plan(BQ, PLAIN))["b"].m_source == "from index b_idx (pgvector's default m)"
