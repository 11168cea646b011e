"""The demo's SQL (`pg2qdrant demo`): its database and documents table, the changes it makes
while syncing, and pgvector's exact search it compares Qdrant's with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pg2qdrant.source import connect

COLUMNS = ("title, body, topic, metadata, tags, views, rating, price, is_public, created_at, updated_at, "
           "embedding, summary_embedding, keywords")
METADATA = 3  # index of the jsonb column in COLUMNS


def schema(dim: int, sparse_dim: int) -> str:
    return f"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE documents (
    id          bigserial PRIMARY KEY,
    title       text NOT NULL,
    body        text,
    topic       text,
    metadata    jsonb,
    tags        text[],
    views       integer,
    rating      real,
    price       numeric(12, 2),
    is_public   boolean,
    created_at  timestamptz NOT NULL,
    updated_at  timestamp,
    embedding   vector({dim}),
    summary_embedding halfvec({dim}),
    keywords    sparsevec({sparse_dim})
);
"""


def create_database(url: str, name: str) -> None:
    with connect.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def create_table(url: str, rows: Iterable[tuple], *, dim: int, sparse_dim: int) -> None:
    """The documents table filled with ``rows`` (values in COLUMNS order), its indexes, and statistics."""
    with connect.connect(url, autocommit=True) as conn:
        conn.execute(schema(dim, sparse_dim))
        with conn.cursor() as cur, cur.copy(f"COPY documents ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                row = list(row)
                row[METADATA] = None if row[METADATA] is None else Jsonb(row[METADATA])
                copy.write_row(row)
        conn.execute("CREATE INDEX documents_embedding_idx ON documents USING hnsw (embedding vector_cosine_ops)")
        conn.execute("CREATE INDEX documents_topic_idx ON documents (topic)")
        conn.execute("ANALYZE documents")


def change_rows(url: str) -> int:
    """One insert (a copy of document 1), one title-only update (2), one delete (3): the new row's id."""
    with connect.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (title, topic, created_at, embedding) "
                     "SELECT 'A brand new document', topic, now(), embedding FROM documents WHERE id = 1")
        conn.execute("UPDATE documents SET title = 'Renamed document' WHERE id = 2")  # vector untouched
        conn.execute("DELETE FROM documents WHERE id = 3")
        return conn.execute("SELECT max(id) FROM documents").fetchone()[0]


def nearest_by_cosine(conn: psycopg.Connection, doc_id: int, k: int) -> tuple[str, list[Any]]:
    """(document ``doc_id``'s embedding as text, the ids of its ``k`` nearest documents by cosine
    distance, exact: index scans off, the ground truth)."""
    query = conn.execute("SELECT embedding::text FROM documents WHERE id = %s", (doc_id,)).fetchone()[0]
    conn.execute("SET enable_indexscan = off")
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM documents ORDER BY embedding <=> %s::vector, id LIMIT %s", (query, k))]
    return query, ids
