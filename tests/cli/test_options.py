"""Generic options of framework layouts, on their own: --pg.where, --qdrant.vector-name,
--qdrant.payload-key and --qdrant.tenant-column (real PostgreSQL, local-mode Qdrant)."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from qdrant_client import models

from conftest import migrate_args
from helpers import vector_literal
from pg2qdrant.core.errors import InputError
from pg2qdrant.source.where import check_where

DIM = 8


def _docs(db, rows: int = 30) -> None:
    db.execute("CREATE TABLE docs (id bigint PRIMARY KEY, lang text, tenant text, title text, meta jsonb, "
               f"v vector({DIM}))")
    rng = np.random.default_rng(5)
    with db.connect() as conn:
        for k in range(1, rows + 1):
            conn.execute("INSERT INTO docs VALUES (%s, %s, %s, %s, %s, %s)",
                         (k, "en" if k % 3 else "fr", f"t{k % 2}", f"title {k}",
                          psycopg.types.json.Jsonb({"src": f"s{k}", "n": k}),
                          vector_literal(rng.normal(size=DIM))))


def _ids(client, collection: str) -> set:
    return {p.id for p in client.scroll(collection, limit=1000)[0]}


def test_where_migrates_verifies_and_inspects_only_matching_rows(db, qdrant_path, cli, open_qdrant):
    _docs(db)
    args = migrate_args(db, "docs", qdrant_path, "c", "--pg.where", "lang = 'en' AND id <> 4",
                        "--migration.num-workers", "2", "--migration.range-rows", "8")
    r = cli(*args, "--verify")
    assert r.exit_code == 0, r.output
    expected = {k for k in range(1, 31) if k % 3 and k != 4}
    r = cli("verify", *args[1:], "--verify.queries", "5")
    assert r.exit_code == 0, r.output
    r = cli("inspect", *args[1:])
    assert r.exit_code == 0 and "only WHERE lang = 'en' AND id <> 4" in r.stdout, r.output
    client = open_qdrant(qdrant_path)
    assert _ids(client, "c") == expected


@pytest.mark.parametrize("expr, said", [
    ("true) UNION SELECT 1 FROM pg_authid WHERE (true", "closes a parenthesis"),
    ("true; DROP TABLE docs", "contains ';'"),
    ("lang = 'en' -- and more", "comment"),
    ("lang = 'en", "not closed"),
    ("(lang = 'en'", "parenthesis open"),
    ("nosuchcolumn = 1", "is not a condition PostgreSQL accepts"),
    ("id + 1", "is not a condition PostgreSQL accepts"),  # not boolean
])
def test_where_that_is_not_one_condition_is_refused_before_anything_is_written(db, qdrant_path, cli, expr, said):
    _docs(db, 3)
    r = cli(*migrate_args(db, "docs", qdrant_path, "c", "--pg.where", expr))
    assert r.exit_code == 2, r.output
    assert said in r.output and "Traceback" not in r.output
    assert db.execute("SELECT count(*) FROM docs") == [(3,)]
    assert not (qdrant_path / "collection" / "c").exists()


def test_where_scanner_keeps_literals_and_quoted_names_whole():
    assert check_where(" title = 'a ) ; -- b' AND \"odd)\" IS NULL ") == "title = 'a ) ; -- b' AND \"odd)\" IS NULL"
    assert check_where("title = $x$ ) ; $x$ OR title = E'\\' )'") == "title = $x$ ) ; $x$ OR title = E'\\' )'"
    with pytest.raises(InputError):
        check_where("title = $x$ unclosed")


def test_vector_name_and_payload_keys_shape_points_and_verify_passes(db, qdrant_path, cli, open_qdrant):
    _docs(db, 10)
    args = migrate_args(db, "docs", qdrant_path, "c", "--qdrant.vector-name", "v=",
                        "--qdrant.payload-key", "title=page_content,meta=metadata,lang=metadata.lang",
                        "--qdrant.payload-key", "tenant=group", "--qdrant.tenant-column", "tenant")
    r = cli(*args, "--verify", "--verify.queries", "5")
    assert r.exit_code == 0, r.output
    assert f"Created collection 'c': unnamed vector: {DIM}-d Cosine float32;" in r.output
    assert f"vectors match the plan: unnamed vector: {DIM}-d Cosine float32" in r.output
    client = open_qdrant(qdrant_path)
    assert isinstance(client.get_collection("c").config.params.vectors, models.VectorParams)  # unnamed
    point = client.retrieve("c", [3], with_vectors=True)[0]
    assert point.payload == {"id": 3, "page_content": "title 3", "group": "t1",
                             "metadata": {"src": "s3", "n": 3, "lang": "fr"}}
    assert isinstance(point.vector, list) and len(point.vector) == DIM
    r = cli("inspect", *args[1:])
    assert r.exit_code == 0, r.output
    assert "│ unnamed vector │" in r.stdout and "metadata.lang" in r.stdout and "group" in r.stdout
    assert "tenant" in r.stdout and "--qdrant.tenant-column" in r.stdout


def test_payload_spread_and_bad_option_values(db, qdrant_path, cli, open_qdrant):
    _docs(db, 4)
    r = cli(*migrate_args(db, "docs", qdrant_path, "c", "--qdrant.payload-key", "meta=*,tenant="))
    assert r.exit_code == 0, r.output
    client = open_qdrant(qdrant_path)
    assert client.retrieve("c", [2])[0].payload == {"id": 2, "lang": "en", "title": "title 2",
                                                    "src": "s2", "n": 2}
    client.close()
    for flag, value, said in [("--qdrant.payload-key", "title=*", "only a json/jsonb column"),
                              ("--qdrant.payload-key", "nope=x", "not a migrated payload column"),
                              ("--qdrant.vector-name", "title=x", "not a migrated vector column"),
                              ("--qdrant.payload-key", "title", "column=name"),
                              ("--qdrant.tenant-column", "nope", "not a migrated payload column"),
                              ("--qdrant.tenant-column", "id", "keyword index")]:
        r = cli(*migrate_args(db, "docs", qdrant_path, "d", flag, value))
        assert r.exit_code == 2 and said in r.output, r.output


def test_cdc_sync_applies_the_filter_to_each_change(db, tmp_path, cli, open_qdrant):
    """A row updated out of the filter is deleted from Qdrant, one updated into it is written."""
    _docs(db, 12)
    url = f"local:{tmp_path / 'q'}"
    base = ["sync", "--pg.url", db.url, "--pg.table", "docs", "--qdrant.url", url, "--qdrant.collection", "c",
            "--sync.slot", f"s_{db.name}", "--migration.num-workers", "1", "--pg.where", "lang = 'en'"]
    try:
        r = cli(*base, "--sync.initial-copy", "--sync.once")
        assert r.exit_code == 0, r.output
        with db.connect() as conn:
            conn.execute("UPDATE docs SET lang = 'fr' WHERE id = 1")  # leaves the filter
            conn.execute("UPDATE docs SET lang = 'en' WHERE id = 3")  # enters it
            conn.execute("UPDATE docs SET title = 'moved' WHERE id = 6")  # fr, stays out
            conn.execute("UPDATE docs SET title = 'edited' WHERE id = 2")  # en, stays in
            conn.execute("INSERT INTO docs VALUES (100, 'fr', 't', 'x', NULL, %s)", (vector_literal([1] * DIM),))
            conn.execute("INSERT INTO docs VALUES (101, 'en', 't', 'y', NULL, %s)", (vector_literal([1] * DIM),))
            conn.execute("DELETE FROM docs WHERE id = 4")
        r = cli(*base, "--sync.once")
        assert r.exit_code == 0, r.output
        expected = {k for (k,) in db.execute("SELECT id FROM docs WHERE lang = 'en'")}
        assert 1 not in expected and 3 in expected
        client = open_qdrant(tmp_path / "q")
        assert _ids(client, "c") == expected
        assert client.retrieve("c", [2])[0].payload["title"] == "edited"
        client.close()
        r = cli("verify", *[a for a in base[1:] if not a.startswith("--sync.slot") and a != f"s_{db.name}"],
                "--verify.queries", "3")
        assert r.exit_code == 0, r.output
    finally:
        cli("sync", "drop", *base[1:])
