"""`--qdrant.bm25`: a sparse vector (IDF modifier) holding Qdrant's BM25 of a text column.

The plan's checks (text column, free name, the column migrated), what `inspect` shows, and the
collection every target gets: the same points, whose BM25 vectors equal ``qdrant_edge.Bm25``'s
output exactly, answering hybrid queries (dense + sparse prefetch, RRF fusion).
"""

from __future__ import annotations

import pytest

from conftest import migrate_args  # noqa: F401
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
