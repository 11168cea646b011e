"""Benchmark data: N rows of vector(768) plus a few payload columns, written with binary COPY.

Vectors are written with pgvector-python's binary dumper (psycopg adapter), so
generating 200,000 rows takes seconds rather than minutes of text formatting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

TABLE = "bench_items"
CATEGORIES = ["news", "docs", "code", "chat", "mail", "wiki"]


def create_table(url: str, rows: int, dim: int = 768, *, table: str = TABLE, seed: int = 1) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"""CREATE TABLE {table} (
            id bigint PRIMARY KEY, title text, category text, score double precision,
            created_at timestamptz, embedding vector({dim}))""")
        rng = np.random.default_rng(seed)
        created = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", "text", "float8", "timestamptz", "vector"])
                chunk = 10_000
                for start in range(0, rows, chunk):
                    n = min(chunk, rows - start)
                    vecs = rng.normal(size=(n, dim)).astype(np.float32)
                    scores = rng.random(n)
                    for i in range(n):
                        k = start + i
                        copy.write_row((k + 1, f"document number {k + 1}", CATEGORIES[k % len(CATEGORIES)],
                                        float(scores[i]), created + timedelta(seconds=k), vecs[i]))
        conn.execute(f"ANALYZE {table}")
