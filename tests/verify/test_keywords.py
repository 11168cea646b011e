"""`verify`'s keyword check (6): PostgreSQL's full-text top-k against Qdrant's BM25 top-k.

A table whose rows hold words no other row has (plus one of a few shared words) gives both
rankings the row a rare keyword comes from, so the overlap at k is high; the LlamaIndex-like
``text_search_tsv`` column is the PostgreSQL side of its text, ``to_tsvector`` that of the other.
"""

from __future__ import annotations

import json

import pytest

from conftest import migrate_args
from helpers import vector_literal
from pg2qdrant.verify.keywords import overlap_at_k, pick_queries

pytestmark = pytest.mark.one_server

SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze"]
SHARED = ["harbor", "meadow", "lantern", "granite"]
ROWS = 48
ROWS_TIED = 600


def word(n: int) -> str:
    """A made-up word per number (no stopword, no digit): 'kalomi'..."""
    return "".join(SYLLABLES[int(d)] for d in f"{n:03d}") + "x"


def make_table(db) -> None:
    db.execute("CREATE TABLE kw (id bigint PRIMARY KEY, text text, title text, embedding vector(4), "
               "text_search_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)")
    with db.connect() as conn:
        for i in range(ROWS):
            text = " ".join([word(3 * i), SHARED[i % len(SHARED)], word(3 * i + 1), word(3 * i + 2)])
            title = f"{word(500 + i)} {word(600 + i)}"
            conn.execute("INSERT INTO kw (id, text, title, embedding) VALUES (%s, %s, %s, %s::vector)",
                         (i, text, title, vector_literal([i, 1, 0, 0.5])))


def run(cli, db, url: str, tmp_path, *extra: str) -> tuple[object, dict]:
    args = migrate_args(db, "kw", tmp_path / "q", "kw", "--pg.columns", "id,text,title,embedding",
                        "--qdrant.bm25", "text", "--qdrant.bm25", "title=t")
    args[args.index("--qdrant.url") + 1] = url
    r = cli(*args, "--migration.num-workers", "1")
    assert r.exit_code == 0, r.output
    args[0] = "verify"
    report = tmp_path / "r.json"
    r = cli(*args, "--verify.seed", "5", "--verify.queries", "20", "--verify.report", str(report), *extra)
    return r, json.loads(report.read_text())


def keyword_check(report: dict) -> dict:
    return next(c for c in report["checks"] if c["name"] == "Keyword search")


def assert_measured(r, report: dict) -> None:
    assert r.exit_code == 0, r.output
    check = keyword_check(report)
    assert check["number"] == 6 and check["verdict"] == "pass", check
    text, title = check["figures"]["text-bm25"], check["figures"]["t"]
    assert text["source"] == "column text_search_tsv, english"  # the table's own tsvector column
    assert title["source"] == "to_tsvector('english', title)"  # none for title: PostgreSQL's english
    for figures in (text, title):
        assert figures["k"] == 10 and figures["queries"] >= 15, figures
        assert 0.5 < figures["overlap mean"] <= 1 and 0 <= figures["overlap min"] <= figures["overlap mean"]
        assert figures["queries Qdrant found nothing"] == 0
    assert title["overlap mean"] == 1.0  # words only one row holds: both sides find that row
    assert any("not expected to be identical" in d and "IDF" in d for d in check["details"])
    assert "Keyword search" in r.stdout and "overlap@10 mean" in r.stdout


def test_local_mode(db, cli, tmp_path, open_qdrant):
    make_table(db)
    r, report = run(cli, db, f"local:{tmp_path / 'q'}", tmp_path)
    assert_measured(r, report)
    # Missing BM25 vectors: Qdrant answers keyword queries with nothing: a warning (the values check fails)
    client = open_qdrant(tmp_path / "q")
    client.delete_vectors("kw", vectors=["t"], points=list(range(ROWS)))
    client.close()
    args = migrate_args(db, "kw", tmp_path / "q", "kw", "--pg.columns", "id,text,title,embedding",
                        "--qdrant.bm25", "text", "--qdrant.bm25", "title=t", "--verify.seed", "5",
                        "--verify.queries", "5", "--verify.vector", "t")
    args[0] = "verify"
    r = cli(*args, "--verify.report", str(tmp_path / "w.json"))
    check = keyword_check(json.loads((tmp_path / "w.json").read_text()))
    assert check["verdict"] == "warn" and check["figures"]["t"]["queries Qdrant found nothing"] == 5, check
    assert "text-bm25" not in check["figures"]  # --verify.vector t: only t
    assert "returns no point" in r.stdout


def test_server_grpc(db, cli, tmp_path):
    from qdrant_endpoint import QdrantEndpoint
    make_table(db)
    with QdrantEndpoint() as endpoint:
        r, report = run(cli, db, endpoint.target_url("grpc"), tmp_path)
        assert {u.front for u in endpoint.seen(collection="kw")} == {"grpc"}
    assert_measured(r, report)


def test_queries_and_overlap():
    import random
    queries = pick_queries([["Harbor", "harbor", "kalox"], [], ["one"]], 5, random.Random(1))
    assert len(queries) == 2 and queries[1] == "one"
    assert set(queries[0].split()) <= {"harbor", "kalox"}
    assert pick_queries([["a"], ["b"]], 1, random.Random(1)) == ["a"]
    assert overlap_at_k([1, 2, 3, 4], [4, 9, 1], 10) == 0.5
    assert overlap_at_k([1], [2, 1], 1) == 0.0 and overlap_at_k([], [1], 3) is None
    assert overlap_at_k([1, 2, 3], [3, 1], 2) == 1.0  # 2 and 3 tied with PostgreSQL's 2nd: either counts


def test_rows_that_tie_count_whichever_side_returns_them(db, cli, tmp_path):
    """Texts that rank equally for most queries (a template filled with a number): which tied rows come first
    is arbitrary on both sides, so the overlap counts any of them (it read 0.000 when only PostgreSQL's
    first k by key counted)."""
    db.execute("CREATE TABLE kw (id bigint PRIMARY KEY, text text, embedding vector(4))")
    db.execute("INSERT INTO kw SELECT i, 'document number ' || i || ' about ' || (ARRAY['cats', 'dogs', 'harbors', "
               "'lanterns'])[1 + i %% 4], ARRAY[i, 1, 0, 0.5]::vector FROM generate_series(1, %s) i", (ROWS_TIED,))
    args = migrate_args(db, "kw", tmp_path / "q", "kw", "--qdrant.bm25", "text", "--migration.num-workers", "1")
    assert cli(*args).exit_code == 0
    args[0] = "verify"
    r = cli(*args, "--verify.seed", "3", "--verify.queries", "12", "--verify.report", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    figures = keyword_check(json.loads((tmp_path / "r.json").read_text()))["figures"]["text-bm25"]
    assert figures["queries"] >= 8 and figures["overlap min"] == 1.0, figures


def test_edge(db, cli, tmp_path):
    make_table(db)
    r, report = run(cli, db, f"edge:{tmp_path / 'edge'}", tmp_path)
    assert_measured(r, report)
