"""The catalog reads each pgvector index as the plan needs it: method, column or expression,
operator class and the settings given in WITH (...)."""

from __future__ import annotations

from pg2qdrant.source import catalog


def _indexes(db) -> dict:
    with db.connect() as conn:
        return {i.name: i for i in catalog.describe_table(conn, "t").vector_indexes}


def test_hnsw_ivfflat_and_expression_indexes_are_read(db):
    db.execute("""
        CREATE TABLE t (id int PRIMARY KEY, v vector(3), h halfvec(3), w vector(3));
        CREATE INDEX t_v_tuned ON t USING hnsw (v vector_cosine_ops) WITH (m = 24, ef_construction = 120);
        CREATE INDEX t_v_plain ON t USING hnsw (v vector_l2_ops);
        CREATE INDEX t_v_bq ON t USING hnsw ((binary_quantize(v)::bit(3)) bit_hamming_ops) WITH (m = 8);
        CREATE INDEX t_h_idx ON t USING hnsw (h halfvec_ip_ops) WITH (ef_construction = 80);
        CREATE INDEX t_w_ivf ON t USING ivfflat (w vector_l2_ops) WITH (lists = 7);
        CREATE INDEX t_w_ivf_default ON t USING ivfflat (w vector_ip_ops);
    """)
    ix = _indexes(db)
    tuned = ix["t_v_tuned"]
    assert (tuned.column, tuned.method, tuned.opclass, tuned.expression) == ("v", "hnsw", "vector_cosine_ops", None)
    assert (tuned.option("m"), tuned.option("ef_construction")) == (24, 120) and not tuned.binary_quantized
    plain = ix["t_v_plain"]
    assert plain.options == () and plain.option("m") is None
    assert (plain.setting("m"), plain.setting("ef_construction")) == (16, 64)  # pgvector's defaults
    bq = ix["t_v_bq"]
    assert (bq.column, bq.opclass, bq.binary_quantized) == ("v", "bit_hamming_ops", True)
    assert "binary_quantize(v)" in bq.expression and bq.option("m") == 8
    half = ix["t_h_idx"]
    assert (half.column, half.opclass, half.option("m"), half.option("ef_construction")) == ("h", "halfvec_ip_ops",
                                                                                              None, 80)
    assert (ix["t_w_ivf"].method, ix["t_w_ivf"].option("lists")) == ("ivfflat", 7)
    assert ix["t_w_ivf_default"].option("lists") is None and ix["t_w_ivf_default"].setting("lists") == 100
