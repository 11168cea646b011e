"""Framework layouts with the real frameworks: the framework writes documents into PostgreSQL,
pg2qdrant migrates (the layout detected by itself), and the framework's own Qdrant store, opened
with its default arguments, answers queries exactly as its PostgreSQL store did: same ids, texts,
metadata, order, and scores (within float tolerance).

Embeddings are LangChain's DeterministicFakeEmbedding (hash-seeded, no model download).
Supabase vecs and pgai tables are created by SQL of the shape those libraries write.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid

import numpy as np
import pytest

from conftest import migrate_args  # noqa: F401  (fixtures live in conftest)
from helpers import vector_literal

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

DIM = 16
TEXTS = [f"document {i} about {topic}" for i, topic in enumerate(
    ["cats", "dogs", "birds", "fish", "trees", "rivers", "mountains", "cities", "music", "food", "rain", "stars"])]
QUERIES = ["animals", "nature", "document 3", "a city with music", "weather"]


def _embedding():
    from langchain_core.embeddings import DeterministicFakeEmbedding
    return DeterministicFakeEmbedding(size=DIM)


def _migrate(cli, db, qdrant_path, *extra):
    r = cli("migrate", "--pg.url", db.url, "--qdrant.url", f"local:{qdrant_path}", "--migration.num-workers", "1",
            *extra)
    assert r.exit_code == 0, r.output
    return r


# --- LangChain PGVector (langchain-postgres) ----------------------------------------------------

def _langchain_store(db, collection: str):
    from langchain_postgres import PGVector
    url = db.url.replace("postgresql://", "postgresql+psycopg://", 1)
    return PGVector(embeddings=_embedding(), collection_name=collection, connection=url, use_jsonb=True)


def _langchain_docs(n: int, prefix: str, text_ids: bool):
    from langchain_core.documents import Document
    return [Document(page_content=f"{prefix} {TEXTS[i]}", id=(f"{prefix}-{i}" if text_ids else str(uuid.uuid4())),
                     metadata={"i": i, "topic": TEXTS[i].split()[-1], "tags": ["a", str(i)], "big": 2**53 + i,
                               "nested": {"x": i / 3}})
            for i in range(n)]


def _strip(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if k not in ("_id", "_collection_name")}


def test_langchain_pgvector_collections_open_in_langchain_qdrant_with_defaults(db, qdrant_path, cli, open_qdrant):
    from langchain_qdrant import QdrantVectorStore
    stores = {"docs": _langchain_store(db, "docs"), "notes": _langchain_store(db, "notes")}
    stores["docs"].add_documents(_langchain_docs(12, "docs", text_ids=False))
    stores["notes"].add_documents(_langchain_docs(7, "notes", text_ids=True))
    r = cli("inspect", "--pg.url", db.url, "--pg.table", "langchain_pg_embedding")
    assert r.exit_code == 0, r.output
    assert "'langchain' layout, which langchain-qdrant's QdrantVectorStore opens with its default arguments; " \
        in r.output and "--layout plain" in r.output and "docs, notes" in r.output
    _migrate(cli, db, qdrant_path, "--pg.table", "langchain_pg_embedding", "--verify", "--verify.queries", "3")
    client = open_qdrant(qdrant_path)
    assert {c.name for c in client.get_collections().collections} >= {"docs", "notes"}
    for name, pg in stores.items():
        qdrant = QdrantVectorStore(client=client, collection_name=name, embedding=_embedding())
        assert client.count(name).count == (12 if name == "docs" else 7)
        for query in QUERIES:
            expected = pg.similarity_search_with_score(query, k=5)
            got = qdrant.similarity_search_with_score(query, k=5)
            assert [d.page_content for d, _ in got] == [d.page_content for d, _ in expected]
            assert [_strip(d.metadata) for d, _ in got] == [d.metadata for d, _ in expected]
            # PGVector returns the cosine distance, Qdrant the cosine similarity.
            np.testing.assert_allclose([s for _, s in got], [1 - s for _, s in expected], atol=1e-5)
            if name == "docs":  # UUID ids stay the point IDs
                assert [d.metadata["_id"] for d, _ in got] == [d.id for d, _ in expected]
    # One LangChain collection chosen by name.
    client.close()
    other = qdrant_path.parent / "one"
    _migrate(cli, db, other, "--pg.table", "langchain_pg_embedding", "--qdrant.collection", "notes")
    client = open_qdrant(other)
    assert [c.name for c in client.get_collections().collections if not c.name.startswith("_")] == ["notes"]


def test_langchain_table_in_plain_layout_keeps_todays_mapping(db, qdrant_path, cli, open_qdrant):
    _langchain_store(db, "docs").add_documents(_langchain_docs(3, "docs", text_ids=False))
    _migrate(cli, db, qdrant_path, "--pg.table", "langchain_pg_embedding", "--layout", "plain",
             "--qdrant.collection", "c")
    client = open_qdrant(qdrant_path)
    point = client.scroll("c", limit=1, with_vectors=True)[0][0]
    assert set(point.payload) == {"id", "collection_id", "document", "cmetadata"} and "embedding" in point.vector


def test_forced_layout_on_another_shape_is_refused(db, qdrant_path, cli):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(3))")
    def refusal(layout: str) -> str:
        r = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", f"local:{qdrant_path}",
                "--layout", layout, "--qdrant.collection", "c")
        assert r.exit_code == 2, r.output
        return " ".join(r.output.split())

    assert ("public.t does not have the shape LlamaIndex PGVectorStore writes: its name t does not start with "
            "data_; no column text (varchar or text); no column metadata_ (json or jsonb); no column node_id "
            "(varchar or text); no column embedding (vector or halfvec); column id is integer, not int8") \
        in refusal("llamaindex")
    assert ("public.t does not have the shape Supabase vecs writes: it is in schema public, not vecs; no column vec "
            "(vector or halfvec); no column metadata (json or jsonb)") in refusal("vecs")
    assert ("public.t does not have the shape pgai vectorizer writes: it is not a view (pgai's is "
            "<source>_embedding over its store table); its name t does not end with _embedding; no column "
            "embedding_uuid (uuid)") in refusal("pgai")
    assert "there is no public.t_store" in refusal("pgai")
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", f"local:{qdrant_path}",
            "--layout", "langchain")
    assert r.exit_code == 2, r.output
    assert ("public.t does not have the shape LangChain PGVector (langchain-postgres) writes: it is named t, not "
            "langchain_pg_embedding; no column collection_id (uuid); no column embedding (vector or halfvec); no "
            "column document (varchar or text); no column cmetadata (json or jsonb); column id is integer, not "
            "varchar or text; other columns: v; there is no public.langchain_pg_collection.") in r.output
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", f"local:{qdrant_path}")
    assert r.exit_code == 2 and "--qdrant.collection" in r.output, r.output


# --- LlamaIndex PGVectorStore ----------------------------------------------------------------

def _llama_pg_store(db, table: str):
    from llama_index.vector_stores.postgres import PGVectorStore
    u = urllib.parse.urlsplit(db.url)
    return PGVectorStore.from_params(host=u.hostname, port=str(u.port), database=u.path.lstrip("/"),
                                     user=u.username, password=u.password or "", table_name=table, embed_dim=DIM)


def _assert_llama_stores_answer_alike(pg, qdrant, emb, queries, *, k: int) -> None:
    """LlamaIndex's PostgreSQL and Qdrant stores return the same nodes (ids, text, metadata,
    source document) in the same order, with the same similarities, for every query."""
    from llama_index.core.vector_stores import VectorStoreQuery
    for query in queries:
        q = VectorStoreQuery(query_embedding=emb.embed_query(query), similarity_top_k=k)
        expected, got = pg.query(q), qdrant.query(q)
        assert got.ids == expected.ids
        assert [n.get_content() for n in got.nodes] == [n.get_content() for n in expected.nodes]
        assert [n.metadata for n in got.nodes] == [n.metadata for n in expected.nodes]
        assert [n.ref_doc_id for n in got.nodes] == [n.ref_doc_id for n in expected.nodes]
        np.testing.assert_allclose(got.similarities, expected.similarities, atol=1e-5)


def test_llamaindex_table_opens_in_llamaindex_qdrant_with_defaults(db, qdrant_path, cli, open_qdrant):
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    emb = _embedding()
    pg = _llama_pg_store(db, "docs")
    nodes = [TextNode(text=text, metadata={"i": i, "topic": text.split()[-1]}, embedding=emb.embed_query(text),
                      relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i % 3}")})
             for i, text in enumerate(TEXTS)]
    pg.add(nodes)
    r = _migrate(cli, db, qdrant_path, "--pg.table", "data_docs", "--verify", "--verify.queries", "3")
    assert "'llamaindex' layout" in r.output
    client = open_qdrant(qdrant_path)
    qdrant = QdrantVectorStore(client=client, collection_name="docs")
    _assert_llama_stores_answer_alike(pg, qdrant, emb, QUERIES, k=5)
    # doc_id filtering works as LlamaIndex's delete(ref_doc_id) uses it.
    qdrant.delete("doc-1")
    assert client.count("docs").count == len([n for n in nodes if n.ref_doc_id != "doc-1"])


# --- Supabase vecs and pgai (tables of the shape those libraries create) ---------------------

def test_vecs_collection_spreads_metadata_and_keeps_ids(db, qdrant_path, cli, open_qdrant):
    db.execute(f"CREATE SCHEMA vecs; CREATE TABLE vecs.docs (id character varying PRIMARY KEY, vec vector({DIM}) "
               "NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb);"
               "CREATE INDEX ix_vector_l2_ops_hnsw_m16_efc64_abc ON vecs.docs USING hnsw (vec vector_l2_ops)")
    rng = np.random.default_rng(1)
    for i in range(5):
        db.execute("INSERT INTO vecs.docs VALUES (%s, %s, %s)",
                   (f"vec{i}", vector_literal(rng.normal(size=DIM)), f'{{"year": {2000 + i}, "genre": "g{i}"}}'))
    # A metadata key named like the record's id field: kept (under metadata.id, its path in the row).
    db.execute("INSERT INTO vecs.docs VALUES ('vec7', %s, '{\"id\": \"doc-7\", \"x\": 1}')",
               (vector_literal(rng.normal(size=DIM)),))
    _migrate(cli, db, qdrant_path, "--pg.table", "vecs.docs", "--verify", "--verify.queries", "3")
    client = open_qdrant(qdrant_path)
    info = client.get_collection("docs").config.params.vectors
    assert info.distance.value == "Euclid"  # from the index's operator class
    points = {p.payload["id"]: p.payload for p in client.scroll("docs", limit=10)[0]}
    assert points["vec2"] == {"id": "vec2", "year": 2002, "genre": "g2"}
    assert points["vec7"] == {"id": "vec7", "x": 1, "metadata": {"id": "doc-7"}}


def test_vecs_metadata_key_that_has_no_free_place_is_an_error_not_a_loss():
    from types import SimpleNamespace

    from pg2qdrant.core.errors import DataError
    from pg2qdrant.core.layouts import shape_payloads
    plan = SimpleNamespace(payload_keys=(("metadata", "*"),), payload_shape="vecs")
    row = {"id": "r1", "metadata": {"id": "doc-7", "metadata": {"k": 1}}}
    with pytest.raises(DataError, match="--qdrant.payload-key id=record_id"):
        shape_payloads(plan, [row])
    renamed = SimpleNamespace(payload_keys=(("metadata", "*"), ("id", "record_id")), payload_shape="vecs")
    assert shape_payloads(renamed, [row]) == [{"record_id": "r1", "id": "doc-7", "metadata": {"k": 1}}]


def _pgai_tables(db):
    """A pgai vectorizer's tables: the source, the store, and the view joining them."""
    db.execute(f"""
        CREATE TABLE blog (id int PRIMARY KEY, title text, author text);
        CREATE TABLE blog_embedding_store (embedding_uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            id int NOT NULL REFERENCES blog ON DELETE CASCADE, chunk_seq int NOT NULL, chunk text NOT NULL,
            embedding vector({DIM}) NOT NULL, UNIQUE (id, chunk_seq));
        CREATE VIEW blog_embedding AS SELECT t.embedding_uuid, t.chunk_seq, t.chunk, t.embedding, t.id, s.title,
            s.author FROM blog_embedding_store t LEFT JOIN blog s ON t.id = s.id;
        INSERT INTO blog VALUES (1, 'first', 'ann'), (2, 'second', 'bob');""")
    for blog, seq in [(1, 0), (1, 1), (2, 0)]:
        _pgai_chunk(db, blog, seq)


def _pgai_chunk(db, blog: int, seq: int):
    rng = np.random.default_rng(blog * 100 + seq)
    db.execute("INSERT INTO blog_embedding_store (id, chunk_seq, chunk, embedding) VALUES (%s, %s, %s, %s)",
               (blog, seq, f"chunk {blog}.{seq}", vector_literal(rng.normal(size=DIM))))


def _pgai_expected(db) -> dict:
    """Point ID -> (payload, vector) the pgai layout gives each row of the view, read from PostgreSQL."""
    rows = db.execute("SELECT embedding_uuid, chunk_seq, chunk, id, title, author, embedding::text "
                      "FROM blog_embedding")
    return {str(u): ({"embedding_uuid": str(u), "chunk_seq": s, "chunk": c, "id": i, "title": t, "author": a},
                     np.array(e.strip("[]").split(","), dtype=np.float32))
            for u, s, c, i, t, a, e in rows}


def test_pgai_embedding_view_migrates_chunks_with_source_columns(db, qdrant_path, cli, open_qdrant):
    _pgai_tables(db)
    r = _migrate(cli, db, qdrant_path, "--pg.table", "blog_embedding", "--verify", "--verify.queries", "3")
    assert ("migrating it in the 'pgai' layout, shaped for qdrant-client queries as it is (pgai has no Qdrant "
            "store); to copy it column by column instead, pass --layout plain. Collection(s): blog_embedding;") \
        in r.output
    client = open_qdrant(qdrant_path)
    stored = {str(u): (s, c) for u, s, c in db.execute(
        "SELECT embedding_uuid, chunk_seq, chunk FROM blog_embedding_store")}
    points = client.scroll("blog_embedding", limit=10)[0]
    assert {str(p.id) for p in points} == set(stored)
    p = next(p for p in points if p.payload["chunk"] == "chunk 1.1")
    assert p.payload == {"embedding_uuid": str(p.id), "chunk_seq": 1, "chunk": "chunk 1.1", "id": 1,
                         "title": "first", "author": "ann"}


# --- LangChain PGVectorStore (v2): table of the shape langchain-postgres v2 creates ------------

def test_langchain_v2_table_merges_metadata_columns_as_langchain_does(db, qdrant_path, cli, open_qdrant):
    from langchain_qdrant import QdrantVectorStore
    emb = _embedding()
    db.execute(f"CREATE TABLE notes (langchain_id uuid PRIMARY KEY, content text NOT NULL, embedding vector({DIM}) "
               "NOT NULL, lang text, year int, langchain_metadata json)")
    for i, text in enumerate(TEXTS[:6]):
        db.execute("INSERT INTO notes VALUES (%s, %s, %s, %s, %s, %s)",
                   (str(uuid.uuid4()), text, vector_literal(emb.embed_query(text)), ["en", "fr"][i % 2],
                    2000 + i, None if i == 0 else f'{{"src": "s{i}", "lang": "overridden"}}'))
    _migrate(cli, db, qdrant_path, "--pg.table", "notes", "--verify", "--verify.queries", "3")
    # The layout chose the key, and the plan says what is written: the key is the point ID only.
    r = cli("inspect", "--pg.url", db.url, "--pg.table", "notes")
    assert "│ key        │ langchain_id (from the langchain-v2 layout)" in r.stdout
    assert "│ payload    │ langchain_id: (not in the payload)" in r.stdout
    assert "│ (not in the payload) │ uuid" in r.stdout
    client = open_qdrant(qdrant_path)
    assert set(client.scroll("notes", limit=1)[0][0].payload) == {"page_content", "metadata"}
    store = QdrantVectorStore(client=client, collection_name="notes", embedding=emb)
    doc, score = store.similarity_search_with_score(TEXTS[3], k=1)[0]
    assert doc.page_content == TEXTS[3] and score == pytest.approx(1.0, abs=1e-5)
    assert _strip(doc.metadata) == {"src": "s3", "lang": "fr", "year": 2003}
    doc = store.similarity_search(TEXTS[0], k=1)[0]
    assert _strip(doc.metadata) == {"lang": "en", "year": 2000}


def test_langchain_v2_table_with_text_ids_and_its_own_column_names_is_recognised(db, qdrant_path, cli, open_qdrant):
    """PGEngine.init_vectorstore_table lets each column be named and the id be any type: such a table
    (made by the real package) is found by --layout auto, and a TEXT id stays in the payload."""
    from langchain_core.documents import Document
    from langchain_postgres import Column, PGEngine, PGVectorStore
    from langchain_qdrant import QdrantVectorStore
    emb = _embedding()
    engine = PGEngine.from_connection_string(db.url.replace("postgresql://", "postgresql+psycopg://", 1))
    names = dict(content_column="body", embedding_column="vec", metadata_json_column="meta")
    engine.init_vectorstore_table("kb", DIM, id_column=Column("langchain_id", "TEXT"),
                                  metadata_columns=[Column("lang", "TEXT")], **names)
    pg = PGVectorStore.create_sync(engine, emb, "kb", id_column="langchain_id", metadata_columns=["lang"], **names)
    pg.add_documents([Document(page_content=TEXTS[i], id=f"doc-{i}", metadata={"lang": "en", "i": i})
                      for i in range(6)])
    r = _migrate(cli, db, qdrant_path, "--pg.table", "kb", "--verify", "--verify.queries", "3")
    assert "migrating it in the 'langchain-v2' layout" in r.output
    client = open_qdrant(qdrant_path)
    qdrant = QdrantVectorStore(client=client, collection_name="kb", embedding=emb)
    for query in QUERIES:
        got, expected = qdrant.similarity_search(query, k=3), pg.similarity_search(query, k=3)
        assert [(d.page_content, _strip(d.metadata)) for d in got] == \
            [(d.page_content, d.metadata) for d in expected]
    engine._run_as_sync(engine.close())  # PGEngine has no public sync close
    point = client.scroll("kb", limit=1)[0][0]
    assert set(point.payload) == {"page_content", "metadata", "langchain_id"}  # the text id is kept
    client.close()
    r = cli("inspect", "--pg.url", db.url, "--pg.table", "kb")
    assert "│ key        │ langchain_id (from the langchain-v2 layout)" in r.stdout
    assert "the key value is kept in the payload under its column name" in r.stdout


@pytest.mark.parametrize("table, differs", [
    ("CREATE TABLE t (id int PRIMARY KEY, body text, v vector(3) NOT NULL)", "no content (text NOT NULL) column"),
    ("CREATE TABLE t (langchain_id uuid PRIMARY KEY, content int, embedding vector(3))",
     "column content is integer, not text"),
    ("CREATE TABLE t (id text PRIMARY KEY, a text NOT NULL, b text NOT NULL, v vector(3) NOT NULL)",
     "several columns could be the content column (a, b)"),
    ("CREATE TABLE t (id text PRIMARY KEY, content text NOT NULL, v vector(3) NOT NULL, w vector(3))",
     "a second vector column (w): PGVectorStore has one"),
], ids=["no-content", "content-type", "two-contents", "two-vectors"])
def test_forced_langchain_v2_layout_names_what_differs(db, qdrant_path, cli, table, differs):
    db.execute(table)
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", f"local:{qdrant_path}",
            "--layout", "langchain-v2")
    assert r.exit_code == 2, r.output
    assert ("--layout langchain-v2: public.t does not have the shape LangChain PGVectorStore (langchain-postgres "
            f"v2) writes: {differs}.") in r.output


# --- Sync ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _sync(cli, db, path, table: str, *extra):
    """``run(*flags)`` runs `pg2qdrant sync` of ``table`` into ``path`` (asserting success); slot and
    publication are dropped afterwards."""
    import psycopg
    base = ["sync", "--pg.url", db.url, "--pg.table", table, "--qdrant.url", f"local:{path}",
            "--sync.slot", f"s_{db.name}", "--migration.num-workers", "1", *extra]

    def run(*flags):
        r = cli(*base, *flags)
        assert r.exit_code == 0, r.output
        return r
    try:
        yield run
    finally:
        cli("sync", "drop", *base[1:])
        with psycopg.connect(db.server.url(), autocommit=True) as conn:
            for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s "
                                        "AND NOT active", (db.name,)).fetchall():
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_langchain_documents_added_edited_deleted_in_postgres_show_up_through_langchain_qdrant(
        db, tmp_path, cli, open_qdrant):
    """CDC sync of one LangChain collection of a table holding two."""
    from langchain_core.documents import Document
    from langchain_qdrant import QdrantVectorStore
    docs, notes = _langchain_store(db, "docs"), _langchain_store(db, "notes")
    docs.add_documents(_langchain_docs(6, "docs", text_ids=False))
    notes.add_documents(_langchain_docs(3, "notes", text_ids=False))
    path = tmp_path / "q"
    with _sync(cli, db, path, "langchain_pg_embedding", "--qdrant.collection", "docs") as sync:
        sync("--sync.initial-copy", "--sync.once")
        existing = [d.id for d, _ in docs.similarity_search_with_score("x", k=6)]
        docs.add_documents([Document(page_content="a new document about whales", metadata={"i": 99},
                                     id=str(uuid.uuid4()))])
        docs.add_documents([Document(page_content="an edited document", metadata={"i": -1}, id=existing[0])])
        docs.delete(ids=[existing[1]])
        notes.add_documents([Document(page_content="a note that must stay out", metadata={}, id=str(uuid.uuid4()))])
        sync("--sync.once")
        client = open_qdrant(path)
        qdrant = QdrantVectorStore(client=client, collection_name="docs", embedding=_embedding())
        assert client.count("docs").count == 6
        for query in QUERIES + ["whales", "edited"]:
            expected = docs.similarity_search_with_score(query, k=6)
            got = qdrant.similarity_search_with_score(query, k=6)
            assert [(d.metadata["_id"], d.page_content, _strip(d.metadata)) for d, _ in got] == \
                [(d.id, d.page_content, d.metadata) for d, _ in expected]
            np.testing.assert_allclose([s for _, s in got], [1 - s for _, s in expected], atol=1e-5)
        client.close()


def _llama_nodes(texts, emb, offset=0):
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    return [TextNode(text=text, metadata={"i": offset + i, "topic": text.split()[-1]}, embedding=emb.embed_query(text),
                     relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{offset + i}")})
            for i, text in enumerate(texts)]


def test_llamaindex_nodes_added_edited_deleted_in_postgres_show_up_through_llamaindex_qdrant(
        db, tmp_path, cli, open_qdrant):
    from llama_index.core.vector_stores import VectorStoreQuery
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    emb = _embedding()
    pg = _llama_pg_store(db, "docs")
    nodes = _llama_nodes(TEXTS[:6], emb)
    pg.add(nodes)
    # Point IDs are node_id, the primary key is id: deletes must carry node_id (sync says so otherwise).
    db.execute("ALTER TABLE data_docs REPLICA IDENTITY FULL")
    path = tmp_path / "q"
    with _sync(cli, db, path, "data_docs") as sync:
        sync("--sync.initial-copy", "--sync.once")
        pg.add(_llama_nodes(["a new node about whales"], emb, offset=50))  # added
        edited = nodes[2].model_copy(update={"text": "an edited node about storms", "metadata": {"i": -2}})
        edited.embedding = emb.embed_query(edited.text)
        pg.delete(nodes[2].ref_doc_id)  # edited: LlamaIndex replaces a node (delete + add) ...
        pg.add([edited])
        db.execute("UPDATE data_docs SET text = 'edited in place about rivers' WHERE node_id = %s",
                   (nodes[3].node_id,))  # ... or an UPDATE edits it in place
        pg.delete(nodes[4].ref_doc_id)  # deleted
        sync("--sync.once")
        client = open_qdrant(path)
        qdrant = QdrantVectorStore(client=client, collection_name="docs")
        assert client.count("docs").count == 6
        _assert_llama_stores_answer_alike(pg, qdrant, emb, QUERIES + ["whales", "storms"], k=6)
        assert "edited in place about rivers" in {n.get_content() for n in qdrant.query(
            VectorStoreQuery(query_embedding=emb.embed_query("x"), similarity_top_k=6)).nodes}
        client.close()


def test_langchain_v2_rows_added_edited_deleted_show_up_through_langchain_qdrant(db, tmp_path, cli, open_qdrant):
    from langchain_qdrant import QdrantVectorStore
    emb = _embedding()
    db.execute(f"CREATE TABLE notes (langchain_id uuid PRIMARY KEY, content text NOT NULL, embedding vector({DIM}) "
               "NOT NULL, lang text, year int, langchain_metadata json)")
    ids = [str(uuid.uuid4()) for _ in range(4)]
    insert = "INSERT INTO notes VALUES (%s, %s, %s, %s, %s, %s)"
    for i, text in enumerate(TEXTS[:4]):
        db.execute(insert, (ids[i], text, vector_literal(emb.embed_query(text)), "en", 2000 + i, '{"src": "s"}'))
    path = tmp_path / "q"
    with _sync(cli, db, path, "notes") as sync:
        sync("--sync.initial-copy", "--sync.once")
        new = str(uuid.uuid4())
        db.execute(insert, (new, "a new note about whales", vector_literal(emb.embed_query("whales")), "fr", 2024,
                            None))
        db.execute("UPDATE notes SET content = 'edited', year = NULL, langchain_metadata = '{\"src\": \"e\"}' "
                   "WHERE langchain_id = %s", (ids[1],))
        db.execute("DELETE FROM notes WHERE langchain_id = %s", (ids[2],))
        sync("--sync.once")
        client = open_qdrant(path)
        store = QdrantVectorStore(client=client, collection_name="notes", embedding=emb)
        got = {d.metadata["_id"]: (d.page_content, _strip(d.metadata))
               for d in store.similarity_search("x", k=10)}
        assert got == {ids[0]: (TEXTS[0], {"src": "s", "lang": "en", "year": 2000}),
                       ids[1]: ("edited", {"src": "e", "lang": "en", "year": None}),
                       ids[3]: (TEXTS[3], {"src": "s", "lang": "en", "year": 2003}),
                       new: ("a new note about whales", {"lang": "fr", "year": 2024})}
        doc, score = store.similarity_search_with_score("whales", k=1)[0]
        assert doc.metadata["_id"] == new and score == pytest.approx(1.0, abs=1e-5)
        client.close()


def test_vecs_records_added_edited_deleted_show_up_with_their_metadata(db, tmp_path, cli, open_qdrant):
    db.execute(f"CREATE SCHEMA vecs; CREATE TABLE vecs.docs (id character varying PRIMARY KEY, vec vector({DIM}) "
               "NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb)")
    rng = np.random.default_rng(3)
    vectors = {f"vec{i}": rng.normal(size=DIM) for i in range(5)}
    for key in list(vectors)[:3]:
        db.execute("INSERT INTO vecs.docs VALUES (%s, %s, %s)", (key, vector_literal(vectors[key]), '{"year": 2000}'))
    path = tmp_path / "q"
    with _sync(cli, db, path, "vecs.docs") as sync:
        sync("--sync.initial-copy", "--sync.once")
        db.execute("INSERT INTO vecs.docs VALUES ('vec3', %s, '{\"genre\": \"new\"}')", (vector_literal(vectors["vec3"]),))
        db.execute("UPDATE vecs.docs SET metadata = '{\"year\": 2001, \"genre\": \"edited\"}', vec = %s "
                   "WHERE id = 'vec1'", (vector_literal(vectors["vec4"]),))
        db.execute("DELETE FROM vecs.docs WHERE id = 'vec2'")
        db.execute("INSERT INTO vecs.docs VALUES ('vec7', %s, '{\"id\": \"doc-7\", \"x\": 1}')",
                   (vector_literal(vectors["vec4"] + 1),))  # metadata with an id of its own ...
        db.execute("UPDATE vecs.docs SET metadata = '{\"id\": 7, \"year\": 2000}' WHERE id = 'vec0'")  # ... edited in
        sync("--sync.once")
        client = open_qdrant(path)
        points = {p.payload["id"]: p for p in client.scroll("docs", limit=10, with_vectors=True)[0]}
        assert {k: p.payload for k, p in points.items()} == {
            "vec0": {"id": "vec0", "year": 2000, "metadata": {"id": 7}},
            "vec1": {"id": "vec1", "year": 2001, "genre": "edited"},
            "vec3": {"id": "vec3", "genre": "new"}, "vec7": {"id": "vec7", "x": 1, "metadata": {"id": "doc-7"}}}
        hit = client.query_points("docs", query=vectors["vec4"].tolist(), limit=1).points[0]
        assert hit.payload["id"] == "vec1"
        client.close()


def test_pgai_chunks_added_edited_deleted_in_the_store_follow_through_the_view(db, tmp_path, cli, open_qdrant):
    """The view cannot be published: sync follows blog_embedding_store and reads each changed row
    through the view (with the source table's columns as they are then)."""
    _pgai_tables(db)
    path = tmp_path / "q"
    with _sync(cli, db, path, "blog_embedding") as sync:
        sync("--sync.initial-copy", "--sync.once")
        _pgai_chunk(db, 2, 1)  # added
        db.execute("UPDATE blog SET title = 'renamed' WHERE id = 1")  # seen with the next change of its chunks
        db.execute("UPDATE blog_embedding_store SET chunk = 'edited', embedding = %s WHERE id = 1 AND chunk_seq = 0",
                   (vector_literal(np.ones(DIM)),))  # edited
        db.execute("DELETE FROM blog_embedding_store WHERE id = 1 AND chunk_seq = 1")  # deleted
        r = sync("--sync.once")
        assert "does not send column" not in r.output
        client = open_qdrant(path)
        points = client.scroll("blog_embedding", limit=10, with_vectors=True)[0]
        expected = _pgai_expected(db)
        assert {str(p.id): p.payload for p in points} == {k: payload for k, (payload, _) in expected.items()}
        for p in points:
            np.testing.assert_allclose(p.vector, expected[str(p.id)][1], rtol=1e-6)
        assert any(payload["chunk"] == "edited" and payload["title"] == "renamed" for payload, _ in expected.values())
        client.close()
        db.execute("TRUNCATE blog_embedding_store")
        sync("--sync.once")
        client = open_qdrant(path)
        assert client.count("blog_embedding").count == 0
        client.close()


# --- --qdrant.hybrid: the BM25 sparse vector a framework's hybrid mode reads -------------------

def _bm25_query(text: str):
    import qdrant_edge
    v = qdrant_edge.Bm25().embed_query(text)  # Qdrant's BM25, the model of --qdrant.bm25 (defaults)
    return list(v.indices), list(v.values)


def test_langchain_hybrid_mode_finds_documents_by_keyword(db, qdrant_path, cli, open_qdrant):
    """langchain-qdrant's HYBRID (and SPARSE) retrieval over the migrated collection, its sparse
    queries from qdrant_edge.Bm25.embed_query: the document holding the keyword is found."""
    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from langchain_qdrant.sparse_embeddings import SparseEmbeddings, SparseVector

    class EdgeBm25(SparseEmbeddings):
        def embed_documents(self, texts):
            return [self.embed_query(t) for t in texts]

        def embed_query(self, text):
            return SparseVector(indices=_bm25_query(text)[0], values=_bm25_query(text)[1])

    _langchain_store(db, "docs").add_documents(_langchain_docs(12, "docs", text_ids=False))
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "langchain_pg_embedding", "--qdrant.url", "local:/x",
            "--qdrant.hybrid", "--layout", "plain", "--qdrant.collection", "c")
    assert r.exit_code == 2 and "--qdrant.bm25 COLUMN" in r.output, r.output
    r = cli("inspect", "--pg.url", db.url, "--pg.table", "langchain_pg_embedding", "--qdrant.hybrid")
    assert r.exit_code == 0 and "langchain-sparse" in r.stdout and "--qdrant.hybrid" in r.stdout, r.output
    _migrate(cli, db, qdrant_path, "--pg.table", "langchain_pg_embedding", "--qdrant.hybrid")
    client = open_qdrant(qdrant_path)
    for mode in (RetrievalMode.SPARSE, RetrievalMode.HYBRID):
        store = QdrantVectorStore(client=client, collection_name="docs", embedding=_embedding(),
                                  retrieval_mode=mode, sparse_embedding=EdgeBm25())
        for i in (4, 6, 9):  # trees, mountains, food
            found = [d.page_content for d in store.similarity_search(TEXTS[i].split()[-1], k=3)]
            assert f"docs {TEXTS[i]}" in found, (mode, found)
            if mode is RetrievalMode.SPARSE:
                assert found[0] == f"docs {TEXTS[i]}"


def test_llamaindex_hybrid_table_answers_in_llamaindex_hybrid_mode(db, qdrant_path, cli, open_qdrant):
    """A hybrid LlamaIndex table (text_search_tsv) with --qdrant.hybrid: LlamaIndex's Qdrant store in
    hybrid mode, its sparse queries from qdrant_edge.Bm25 (its default encoder is a SPLADE model,
    which does not match BM25 vectors), finds the node holding the keyword."""
    import urllib.parse as up

    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
    from llama_index.vector_stores.postgres import PGVectorStore
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    emb = _embedding()
    u = up.urlsplit(db.url)
    pg = PGVectorStore.from_params(host=u.hostname, port=str(u.port), database=u.path.lstrip("/"), user=u.username,
                                   password=u.password or "", table_name="docs", embed_dim=DIM, hybrid_search=True)
    pg.add([TextNode(text=text, embedding=emb.embed_query(text)) for text in TEXTS])
    r = cli("inspect", "--pg.url", db.url, "--pg.table", "data_docs")
    assert "pass --qdrant.hybrid" in r.output, r.output
    _migrate(cli, db, qdrant_path, "--pg.table", "data_docs", "--qdrant.hybrid")
    client = open_qdrant(qdrant_path)

    def encode(texts):
        pairs = [_bm25_query(t) for t in texts]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    store = QdrantVectorStore(client=client, collection_name="docs", enable_hybrid=True, sparse_doc_fn=encode,
                              sparse_query_fn=encode)
    assert store.sparse_vector_name == "text-sparse-new"
    for i in (4, 6, 9):
        word = TEXTS[i].split()[-1]
        for mode in (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SPARSE):
            got = store.query(VectorStoreQuery(query_embedding=emb.embed_query(word), query_str=word,
                                               similarity_top_k=3, sparse_top_k=3, mode=mode))
            texts = [n.get_content() for n in got.nodes]
            assert TEXTS[i] in texts, (mode, texts)
