"""`sync --config FILE` stays exact whatever the file's entries (issue 18).

Once sync has caught up, every collection equals a fresh `migrate` of its table with the same
flags: with two entries on one table (two where clauses; one collection name on two targets; a
parent and one of its partitions), with a file shrunk to one entry (still the file's slot), with
a pgai view (followed through its store table), and with a table removed and added back.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import psycopg
from test_config_file import env_for, no_password
from test_sync import sdb, wait_caught_up  # noqa: F401 (sdb: fixture)
from test_sync_many import SLOT, Workload, _create, _slots, tables  # noqa: F401 (tables: fixture)

from helpers import source_plan
from pg2qdrant.destination import open_target
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.verify.compare import compare_points
from pg2qdrant.verify.source_rows import fetch_source_batch


def write_entries(db, tmp_path, entries: list[dict], top: str = "") -> str:
    """A migration file ``tables.toml`` (its slot: SLOT) with these [[table]] entries (TOML keys -> values)."""
    text = f'pg.url = "{no_password(db.url)}"\nmigration.num-workers = 1\n{top}'
    for entry in entries:
        text += "\n[[table]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    path = tmp_path / "tables.toml"
    path.write_text(text)
    return str(path)


def entry(name: str, table: str, collection: str, folder, where: str | None = None) -> dict:
    values = {"name": name, "pg.table": table, "qdrant.collection": collection, "qdrant.url": f"local:{folder}"}
    return {**values, "pg.where": where} if where else values


def assert_entries_equal_tables(db, entries: list[dict]) -> None:
    """Each entry's collection equals its table read with that entry's own where clause."""
    for e in entries:
        target = open_target(parse_target_url(e["qdrant.url"]))
        try:
            plan = dataclasses.replace(source_plan(db.url, e["pg.table"], e["qdrant.collection"]),
                                       where=e.get("pg.where"))
            with psycopg.connect(db.url, autocommit=True) as conn:
                expected = fetch_source_batch(conn, plan)
            ids = list(expected.ids)
            records = target.retrieve(e["qdrant.collection"], ids) if ids else []
            mismatches = compare_points(plan, expected, records)
            assert not mismatches, (e["name"], [m.describe() for m in mismatches[:5]])
            assert target.count(e["qdrant.collection"]) == len(ids), e["name"]
        finally:
            target.close()


def sync(cli, db, path, *flags):
    r = cli("sync", "--config", path, *flags, env=env_for(db))
    assert r.exit_code == 0, r.output
    return r


def test_two_entries_on_one_table_both_receive_its_changes(tables, tmp_path, cli):
    """Two where clauses on one table, one collection name on two folders, a parent and its partition."""
    q1, q2 = tmp_path / "q1", tmp_path / "q2"
    entries = [entry("low", "docs", "docs_low", q1, "n < 100"), entry("high", "docs", "docs_high", q1, "n >= 100"),
               entry("notes1", "notes", "notes", q1), entry("notes2", "notes", "notes", q2),
               entry("parts", "parts", "parts", q1), entry("parts_a", "parts_a", "parts_a", q1)]
    path = write_entries(tables, tmp_path, entries)
    sync(cli, tables, path, "--sync.initial-copy", "--sync.once")
    Workload(tables.url, ["docs", "notes", "parts"], seed=11, truncate="parts").run(2.0)
    with psycopg.connect(tables.url, autocommit=True) as conn:
        conn.execute("UPDATE docs SET n = CASE WHEN n < 100 THEN 150 ELSE 50 END WHERE id IN (10, 11, 50, 51)")
        conn.execute("UPDATE parts SET title = 'after the truncate' WHERE id < 100")
        conn.execute("INSERT INTO parts (id, title, n, v) SELECT i, 'a', i, array_fill(0.5, ARRAY[16])::vector "
                     "FROM generate_series(1, 4) i ON CONFLICT (id) DO UPDATE SET title = 'b'")
    sync(cli, tables, path, "--sync.once")
    assert _slots(tables) == [SLOT]
    assert_entries_equal_tables(tables, entries)


def test_two_entries_into_one_collection_are_refused_however_the_url_is_spelled(tables, tmp_path, cli):
    entries = [entry("a", "docs", "c", tmp_path / "q"), entry("b", "notes", "c", f"{tmp_path}/./q/")]
    r = cli("sync", "--config", write_entries(tables, tmp_path, entries), "--sync.initial-copy", env=env_for(tables))
    assert r.exit_code == 2 and "write the same collection 'c'" in r.output, r.output
    assert _slots(tables) == []


def test_one_collection_name_on_two_targets_keeps_two_markers(tables, tmp_path, cli):
    """With --migration.state-file both entries' markers live in one file: the second entry joins with a
    copy of its own (the first entry's marker says nothing about it)."""
    q1, q2 = tmp_path / "q1", tmp_path / "q2"
    top = f'migration.state-file = "{tmp_path / "state.json"}"\n'
    first = [entry("notes1", "notes", "notes", q1)]
    sync(cli, tables, write_entries(tables, tmp_path, first + [entry("docs", "docs", "docs", q1)], top),
         "--sync.initial-copy", "--sync.once")
    both = first + [entry("notes2", "notes", "notes", q2)]
    path = write_entries(tables, tmp_path, both, top)
    r = sync(cli, tables, path, "--sync.once")
    assert "Joining public.notes to slot" in r.output, r.output
    with psycopg.connect(tables.url, autocommit=True) as conn:
        conn.execute("DELETE FROM notes WHERE id IN ('key-1', 'key-2')")
        conn.execute("UPDATE notes SET title = 'edited' WHERE id = 'key-3'")
    r = sync(cli, tables, path, "--sync.once")
    assert "Joining" not in r.output, r.output  # each entry reads its own marker
    assert_entries_equal_tables(tables, both)


def test_a_file_shrunk_to_one_entry_keeps_the_files_slot(tables, tmp_path, cli):
    q = tmp_path / "q"
    docs = entry("docs", "docs", "docs", q)
    alone = ["--pg.url", tables.url, "--pg.table", "docs", "--qdrant.collection", "docs", "--qdrant.url", f"local:{q}"]
    r = cli("sync", *alone, "--sync.initial-copy", "--sync.once")  # docs synced alone before
    assert r.exit_code == 0 and _slots(tables) == ["pg2qdrant_docs"], r.output
    r = sync(cli, tables, write_entries(tables, tmp_path, [docs, entry("notes", "notes", "notes", q)]),
             "--sync.initial-copy", "--sync.once")
    assert "replication slot 'pg2qdrant_docs' of an earlier sync of public.docs alone exists" in r.output, r.output
    r = cli("sync", *alone, "drop")
    assert r.exit_code == 0 and _slots(tables) == [SLOT], r.output
    with psycopg.connect(tables.url, autocommit=True) as conn:  # waiting in the file's slot
        conn.execute("DELETE FROM docs WHERE id IN (1, 2)")
        conn.execute("UPDATE docs SET title = 'edited' WHERE id = 3")
    path = write_entries(tables, tmp_path, [docs])
    r = sync(cli, tables, path, "--sync.once")
    assert "no longer in the file" in r.output, r.output
    assert _slots(tables) == [SLOT]
    assert_entries_equal_tables(tables, [docs])
    r = sync(cli, tables, path, "status")
    assert SLOT in r.stdout, r.output
    r = sync(cli, tables, path, "drop")
    assert SLOT in r.output and "dropped" in r.output, r.output
    assert _slots(tables) == []


def assert_pgai_view(db, folder) -> None:
    """The view's collection holds what the pgai layout gives each row of the view now."""
    from qdrant_client import QdrantClient
    from test_layouts import _pgai_expected
    client = QdrantClient(path=str(folder))
    try:
        points = client.scroll("blog_embedding", limit=100, with_vectors=True)[0]
    finally:
        client.close()
    expected = _pgai_expected(db)
    assert {str(p.id): p.payload for p in points} == {k: payload for k, (payload, _) in expected.items()}
    for p in points:
        np.testing.assert_allclose(p.vector, expected[str(p.id)][1], rtol=1e-6)


def test_a_pgai_view_in_a_file_follows_its_store_table(sdb, tmp_path, cli):  # noqa: F811
    from test_layouts import _pgai_chunk, _pgai_tables
    _pgai_tables(sdb)
    _create(sdb, "notes")
    _create(sdb, "docs")
    q = tmp_path / "q"
    view, notes = entry("blog", "blog_embedding", "blog_embedding", q), entry("notes", "notes", "notes", q)
    others = [notes, entry("docs", "docs", "docs", q)]
    path = write_entries(sdb, tmp_path, [view, *others])
    sync(cli, sdb, path, "--sync.initial-copy", "--sync.once")
    _pgai_chunk(sdb, 2, 1)  # added
    sdb.execute("UPDATE blog SET title = 'renamed' WHERE id = 1")  # seen with the next change of its chunks
    sdb.execute("UPDATE blog_embedding_store SET chunk = 'edited' WHERE id = 1 AND chunk_seq = 0")
    sdb.execute("DELETE FROM blog_embedding_store WHERE id = 1 AND chunk_seq = 1")
    sdb.execute("DELETE FROM notes WHERE id = 'key-5'")
    r = sync(cli, sdb, path, "--sync.once")
    assert "Joining" not in r.output and "no longer in the file" not in r.output, r.output
    assert_entries_equal_tables(sdb, others)
    assert_pgai_view(sdb, q)
    # the view leaves the file (its store table leaves the publication) and comes back
    path = write_entries(sdb, tmp_path, others)
    r = sync(cli, sdb, path, "--sync.once")
    assert "blog_embedding_store is no longer in the file" in r.output, r.output
    _pgai_chunk(sdb, 2, 2)
    path = write_entries(sdb, tmp_path, [view, *others])
    r = sync(cli, sdb, path, "--sync.once")
    assert "Joining public.blog_embedding to slot" in r.output, r.output
    sdb.execute("DELETE FROM blog_embedding_store WHERE id = 2 AND chunk_seq = 0")
    sync(cli, sdb, path, "--sync.once")
    assert_entries_equal_tables(sdb, others)
    assert_pgai_view(sdb, q)


def test_a_table_removed_and_added_back_is_copied_without_orphans(tables, tmp_path, cli):
    q = tmp_path / "q"
    docs, notes = entry("docs", "docs", "docs", q), entry("notes", "notes", "notes", q)
    sync(cli, tables, write_entries(tables, tmp_path, [docs, notes]), "--sync.initial-copy", "--sync.once")
    r = sync(cli, tables, write_entries(tables, tmp_path, [docs]), "--sync.once")
    assert "no longer in the file" in r.output, r.output
    with psycopg.connect(tables.url, autocommit=True) as conn:  # while notes is out of the file
        conn.execute("DELETE FROM notes WHERE id IN ('key-1', 'key-2')")
        conn.execute("UPDATE notes SET title = 'edited' WHERE id = 'key-3'")
    path = write_entries(tables, tmp_path, [docs, notes])
    r = sync(cli, tables, path, "--sync.once")
    assert "Joining public.notes to slot" in r.output, r.output
    wait_caught_up(tables.url, SLOT)
    assert_entries_equal_tables(tables, [docs, notes])
