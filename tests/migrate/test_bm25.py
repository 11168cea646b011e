"""`--qdrant.bm25`: a sparse vector (IDF modifier) holding Qdrant's BM25 of a text column.

The plan's checks (text column, free name, the column migrated), what `inspect` shows, and the
collection every target gets: the same points, whose BM25 vectors equal ``qdrant_edge.Bm25``'s
output exactly, answering hybrid queries (dense + sparse prefetch, RRF fusion).
"""

from __future__ import annotations

import numpy as np
import pytest
import qdrant_edge
from qdrant_client import models

from conftest import migrate_args
from helpers import vector_literal

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems


def make_docs(db, texts: list[str | None], name: str = "docs") -> None:
    import numpy as np
    rng = np.random.default_rng(7)
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text, title varchar(40), n int, "
                     "embedding vector(4))")
        for i, text in enumerate(texts):
            conn.execute(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s::vector)",
                         (i, text, f"title {i}", i, vector_literal(rng.random(4).tolist())))


def test_plan_checks_and_inspect(db, cli, qdrant_path):
    make_docs(db, ["hello world"])
    inspect = ["inspect", "--pg.url", db.url, "--pg.table", "docs", "--qdrant.collection", "c"]
    r = cli(*inspect, "--qdrant.bm25", "body", "--qdrant.bm25", "title=t", "--qdrant.bm25-language", "german")
    assert r.exit_code == 0, r.output
    assert "body-bm25" in r.stdout and "BM25 of body (german" in r.stdout and "IDF" in r.stdout
    assert "BM25 of title" in r.stdout
    for flags, words in [
        (("--qdrant.bm25", "nope"), ["no column 'nope'", "columns of"]),
        (("--qdrant.bm25", "n"), ["n is integer", "text column", "body, title"]),
        (("--qdrant.bm25", "body=embedding"), ["already taken", "--qdrant.bm25 body=OTHER_NAME"]),
        (("--qdrant.bm25", "body=x", "--qdrant.bm25", "title=x"), ["'x' is already taken"]),
        (("--qdrant.bm25", "body", "--pg.columns", "id,embedding"), ["not migrated", "add body to --pg.columns"]),
        (("--qdrant.bm25", "body", "--qdrant.bm25-language", "klingon"), ["klingon", "--qdrant.bm25-language"]),
        (("--qdrant.bm25", "body", "--qdrant.bm25-b", "2"), ["--qdrant.bm25-b"]),
    ]:
        r = cli(*inspect, *flags)
        assert r.exit_code == 2, (flags, r.output)
        assert "Traceback" not in r.output
        for word in words:
            assert word in r.output, (flags, word, r.output)


LONG = "lorem ipsum dolor " * 2000 + "needle"
TEXTS = [
    "PostgreSQL logical replication streams every change",
    "Qdrant stores vectors and payloads",
    "Hybrid search mixes keywords and embeddings",
    "Ünïcödé façade, café naïve; 東京 タワー",
    "!!! ... ???",  # punctuation only: no token, no vector
    "",  # empty: no vector
    None,  # NULL: no vector
    "the and of",  # stopwords only (english): no vector
    LONG,
    "Die schnellen braunen Füchse springen über den faulen Hund",
    "Le renard brun rapide saute par-dessus le chien paresseux",
    "Быстрая коричневая лиса прыгает через ленивую собаку",
    "emoji 🎉 party 🎉 zebra",
    "zebra xylophone quartz",
] + [f"filler document number {i} about nothing" for i in range(20)]
ZEBRA = 13  # the one row with all of "zebra xylophone quartz"


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32, signed as mmh3.hash (and so FastEmbed's Qdrant/bm25) returns it; written
    here (mmh3 is not a dependency) as an independent check of the token ids."""
    c1, c2, h, n = 0xCC9E2D51, 0x1B873593, seed & 0xFFFFFFFF, len(data)
    for i in range(0, n - n % 4, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * c1) & 0xFFFFFFFF
        k = (((k << 15) | (k >> 17)) & 0xFFFFFFFF) * c2 & 0xFFFFFFFF
        h ^= k
        h = (((h << 13) | (h >> 19)) & 0xFFFFFFFF) * 5 + 0xE6546B64 & 0xFFFFFFFF
    tail, k = data[n - n % 4:], 0
    for j, byte in enumerate(tail):
        k |= byte << (8 * j)
    if tail:
        k = (k * c1) & 0xFFFFFFFF
        h ^= (((k << 15) | (k >> 17)) & 0xFFFFFFFF) * c2 & 0xFFFFFFFF
    h ^= n
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


def test_token_ids_are_abs_murmur3():
    words = ["zebra", "xylophone", "café", "東京", "postgresql", "a1b2", "the"]
    plain = qdrant_edge.Bm25(qdrant_edge.Bm25Config(stemmer=qdrant_edge.DisabledStemmer(),
                                                    stopwords=qdrant_edge.StopwordsSet()))
    from pg2qdrant.core.options import Bm25Options
    from pg2qdrant.destination.bm25 import query_encoder
    ours = query_encoder(Bm25Options(stemming=False, stopwords=False))(" ".join(words))
    expected = sorted(abs(murmur3_32(w.encode())) for w in words)
    assert sorted(plain.embed_query(" ".join(words)).indices) == expected
    assert sorted(ours.indices.tolist()) == expected


def expected_vectors(config: qdrant_edge.Bm25Config) -> dict[int, tuple[list[int], np.ndarray] | None]:
    bm25 = qdrant_edge.Bm25(config)
    out = {}
    for i, text in enumerate(TEXTS):
        v = bm25.embed_document(text) if text else None
        out[i] = (list(v.indices), np.asarray(v.values, dtype=np.float32)) if v and len(v.indices) else None
    return out


def check_points(points, config: qdrant_edge.Bm25Config) -> None:
    """Every point's BM25 vector is qdrant_edge.Bm25's, exactly; NULL/empty/token-less: none."""
    expected = expected_vectors(config)
    assert sorted(p.id for p in points) == list(range(len(TEXTS)))
    for p in points:
        got = (p.vector or {}).get("body-bm25")
        want = expected[p.id]
        assert p.payload["body"] == TEXTS[p.id]  # the text stays in the payload
        if want is None:
            assert got is None, p.id
            continue
        order = np.argsort(got.indices)
        want_order = np.argsort(want[0])
        assert [got.indices[i] for i in order] == [want[0][i] for i in want_order], p.id
        assert np.array_equal(np.asarray(got.values, dtype=np.float32)[order], want[1][want_order]), p.id
    assert expected[ZEBRA] is not None and expected[4] is None and expected[5] is None and expected[6] is None


def hybrid_query(client, collection: str, dense: list[float], text: str) -> list[int]:
    q = qdrant_edge.Bm25().embed_query(text)
    sparse = models.SparseVector(indices=list(q.indices), values=list(q.values))
    fused = client.query_points(collection, prefetch=[
        models.Prefetch(query=dense, using="embedding", limit=10),
        models.Prefetch(query=sparse, using="body-bm25", limit=10),
    ], query=models.FusionQuery(fusion=models.Fusion.RRF), limit=5).points
    keyword = client.query_points(collection, query=sparse, using="body-bm25", limit=3).points
    assert keyword[0].id == ZEBRA  # the keyword-only query ranks the matching row first
    return [p.id for p in fused]


@pytest.fixture
def docs(db):
    make_docs(db, TEXTS)
    return db


def _dense_of(db, row: int) -> list[float]:
    return [float(x) for x in db.execute("SELECT embedding::text FROM docs WHERE id = %s", (row,))[0][0]
            .strip("[]").split(",")]


def test_local_mode(docs, cli, qdrant_path, open_qdrant):
    r = cli(*migrate_args(docs, "docs", qdrant_path, "c", "--qdrant.bm25", "body", "--migration.num-workers", "2",
                          "--migration.range-rows", "10"))
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    info = client.get_collection("c").config.params.sparse_vectors["body-bm25"]
    assert info.modifier == models.Modifier.IDF
    points = client.scroll("c", limit=100, with_vectors=True)[0]
    check_points(points, qdrant_edge.Bm25Config())
    assert expected_vectors(qdrant_edge.Bm25Config())[7] is None  # english stopwords only: no vector
    hits = hybrid_query(client, "c", _dense_of(docs, ZEBRA), "zebra xylophone quartz")
    assert hits[0] == ZEBRA


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_server(docs, cli, qdrant_path, front):
    from qdrant_endpoint import QdrantEndpoint
    with QdrantEndpoint() as endpoint:
        args = migrate_args(docs, "docs", qdrant_path, "c", "--qdrant.bm25", "body", "--migration.num-workers",
                            "2" if front == "grpc" else "1", "--migration.range-rows", "10")
        args[args.index("--qdrant.url") + 1] = endpoint.target_url(front)
        r = cli(*args)
        assert r.exit_code == 0, r.output
        client = endpoint.client(grpc=front == "grpc")
        try:
            info = client.get_collection("c").config.params.sparse_vectors["body-bm25"]
            assert info.modifier == models.Modifier.IDF
            check_points(client.scroll("c", limit=100, with_vectors=True)[0], qdrant_edge.Bm25Config())
            assert hybrid_query(client, "c", _dense_of(docs, ZEBRA), "zebra xylophone quartz")[0] == ZEBRA
        finally:
            client.close()


def test_edge_with_a_language(docs, cli, tmp_path):
    folder = tmp_path / "edge"
    args = migrate_args(docs, "docs", folder, "c", "--qdrant.bm25", "body", "--qdrant.bm25-language", "german",
                        "--qdrant.bm25-ascii-folding")
    args[args.index("--qdrant.url") + 1] = f"edge:{folder}"
    r = cli(*args)
    assert r.exit_code == 0, r.output
    config = qdrant_edge.Bm25Config(language="german", ascii_folding=True)
    shard = qdrant_edge.EdgeShard.load(str(folder / "c"))
    try:
        records = shard.retrieve(list(range(len(TEXTS))), with_payload=True, with_vector=True)
        points = [models.Record(id=r.id, payload=r.payload, vector={
            k: models.SparseVector(indices=list(v.indices), values=list(v.values))
            for k, v in (r.vector or {}).items() if isinstance(v, qdrant_edge.SparseVector)}) for r in records]
        check_points(points, config)
        german = qdrant_edge.Bm25(config)
        assert german.embed_document(TEXTS[9]).indices != qdrant_edge.Bm25().embed_document(TEXTS[9]).indices
        q = german.embed_query("Fuchse springt")  # stemmed and folded like the document
        hybrid = shard.query(qdrant_edge.QueryRequest(limit=3, prefetches=[
            qdrant_edge.Prefetch(limit=10, query=qdrant_edge.Query.Nearest(_dense_of(docs, 0), using="embedding")),
            qdrant_edge.Prefetch(limit=10, query=qdrant_edge.Query.Nearest(q, using="body-bm25")),
        ], query=qdrant_edge.Fusion.Rrf(k=60)))
        keyword = shard.query(qdrant_edge.QueryRequest(limit=3, query=qdrant_edge.Query.Nearest(q, using="body-bm25")))
        assert keyword[0].id == 9
        assert {h.id for h in hybrid} >= {0, 9}
    finally:
        shard.close()


def test_migration_file_keys(db, cli, tmp_path, open_qdrant):
    """The flags as migration-file keys (a list, a table of settings)."""
    make_docs(db, ["zebra text", "other words"])
    folder = tmp_path / "q"
    config = tmp_path / "m.toml"
    config.write_text(f'''
migration.num-workers = 1

[qdrant]
url = "local:{folder}"
bm25 = ["body", "title=t"]
bm25-language = "french"
bm25-stemming = false

[[table]]
pg.table = "docs"
qdrant.collection = "c"
''')
    r = cli("migrate", "--config", str(config), "--pg.url", db.url)
    assert r.exit_code == 0, r.output
    points = {p.id: p for p in open_qdrant(folder).scroll("c", limit=10, with_vectors=True)[0]}
    bm25 = qdrant_edge.Bm25(qdrant_edge.Bm25Config(language="french", stemmer=qdrant_edge.DisabledStemmer()))
    assert sorted(points[0].vector["body-bm25"].indices) == sorted(bm25.embed_document("zebra text").indices)
    assert sorted(points[1].vector["t"].indices) == sorted(bm25.embed_document("title 1").indices)
