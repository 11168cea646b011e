"""Migration file (`--config FILE`, `--only`) and `--pg.table 'schema.*'` on the real PostgreSQL.

An entry is parsed by the command's own parser, so an entry and the same flags typed by hand
make the same options and the same plan; every entry is checked before any runs; a failure at
run time does not stop the others; one summary table; the exit code is the worst.
"""

from __future__ import annotations

import urllib.parse

import pytest

from helpers import assert_collection_equals_table, fill_items

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

ITEMS = "(id bigint PRIMARY KEY, title text, n int, score float8, v vector(16))"


@pytest.fixture
def tables(db):
    """docs (plain, HNSW dot index), parts (partitioned, two partitions), notes (text key)."""
    db.execute(f"CREATE TABLE docs {ITEMS}")
    db.execute("CREATE INDEX ON docs USING hnsw (v vector_ip_ops)")
    db.execute("CREATE TABLE parts (id bigint, title text, n int, score float8, v vector(16), PRIMARY KEY (id)) "
               "PARTITION BY RANGE (id)")
    db.execute("CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    db.execute("CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (100) TO (1000)")
    db.execute("CREATE TABLE notes (id text PRIMARY KEY, title text, n int, score float8, v vector(16))")
    with db.connect() as conn:
        fill_items(conn, "docs", 120)
        fill_items(conn, "parts", 150, seed=4)
        fill_items(conn, "notes", 40, key="text", seed=5)
        conn.execute("ANALYZE")
    return db


def no_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}").geturl()


def env_for(db) -> dict[str, str]:
    return {"PGPASSWORD": urllib.parse.urlsplit(db.url).password or ""}


FILE = """
# shared by every table: the nested form, a dotted key and a quoted key all name a flag
[pg]
url = "{url}"

[qdrant]
url = "{target}"

[migration]
num-workers = 1

[[table]]
name = "docs"
pg.table = "public.docs"
qdrant.collection = "documents"
pg.columns = ["title", "v"]
"qdrant.distance-metric" = {{ v = "euclid" }}
qdrant.payload-index = ["title:text"]
"migration.batch-size" = 33

[[table]]
pg.table = "parts"
qdrant.collection = "parts"

[[table]]
name = "notes"
pg.table = "notes"
qdrant.collection = "notes"
migration.id-mode = "hash"
"""


def write(tmp_path, text: str, name: str = "tables.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config(db, tmp_path, target: str = "local:{dir}") -> str:
    return write(tmp_path, FILE.format(url=no_password(db.url), target=target.format(dir=tmp_path / "qdrant")))


def test_an_entry_and_the_same_flags_make_the_same_plan(tables, tmp_path, cli):
    from pg2qdrant.cli.common import build_migration_options
    from pg2qdrant.cli.config_file import resolve
    from pg2qdrant.cli.main import program as main
    path = config(tables, tmp_path)
    flags = ["--pg.url", tables.url, "--qdrant.url", f"local:{tmp_path / 'qdrant'}", "--migration.num-workers", "1",
             "--pg.table", "public.docs", "--qdrant.collection", "documents", "--pg.columns", "title,v",
             "--qdrant.distance-metric", "v=euclid", "--qdrant.payload-index", "title:text", "-b", "33"]
    by_hand = cli("inspect", *flags)
    from_file = cli("inspect", "--config", path, "--only", "docs", env=env_for(tables))
    assert by_hand.exit_code == 0 and from_file.exit_code == 0, by_hand.output + from_file.output
    assert "Euclid" in by_hand.stdout and "title" in by_hand.stdout
    assert by_hand.stdout in from_file.stdout  # the whole plan, line for line

    # Every option, not only those the plan shows (batch size, workers...): the same MigrationOptions.
    import click
    command = main.commands["migrate"]
    flags[1] = no_password(tables.url)
    with click.Context(main) as parent:
        with command.make_context("migrate", list(flags), parent=parent) as ctx:
            expected = build_migration_options({k: v for k, v in ctx.params.items() if k not in ("config", "only")})
        with command.make_context("migrate", [], parent=parent) as ctx:
            entries = resolve(ctx, {}, path, ())
    assert [e.name for e in entries] == ["docs", "parts", "notes"]  # parts: named after its collection
    got = build_migration_options(entries[0].kw)
    assert got == expected
    assert got.batch_size == 33 and got.num_workers == 1 and got.distance_overrides == {"v": "Euclid"}


@pytest.mark.parametrize("target", [":memory:", "local:{dir}", "edge:{dir}"])
def test_migrate_a_file_of_three_tables_one_partitioned(tables, tmp_path, cli, target):
    if target.startswith("edge"):
        pytest.importorskip("qdrant_edge")
    path = config(tables, tmp_path, target)
    r = cli("migrate", "--config", path, env=env_for(tables))
    assert r.exit_code == 0, r.output
    summary = r.stdout[r.stdout.index("Summary: 3 entries, 3 ok, 0 failed"):]
    for entry, table, collection, rows in (("docs", "public.docs", "documents", 120), ("parts", "parts", "parts", 150),
                                           ("notes", "notes", "notes", 40)):
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"│ {entry} "))
        assert f"│ {table} " in line and f"│ {collection} " in line and f"{rows:,}" in line, line
        assert "the collection equals the table" in line and "rows/s" in line, line
    for n in (1, 2, 3):
        assert f"[{n}/3]" in r.stderr
    if target == ":memory:":
        return
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.edge import EdgeTarget
    from pg2qdrant.destination.qdrant import QdrantTarget
    url = target.format(dir=tmp_path / "qdrant")
    opened = (EdgeTarget if target.startswith("edge") else QdrantTarget)(parse_target_url(url))
    try:  # Edge re-parses payload floats inexactly (see test_edge): 2 ulps there
        ulps = 2 if target.startswith("edge") else 0
        assert assert_collection_equals_table(tables.url, "parts", opened, "parts", float_ulps=ulps) == 150
        assert assert_collection_equals_table(tables.url, "notes", opened, "notes", float_ulps=ulps,
                                              id_mode="hash") == 40
        assert opened.count("documents") == 120
    finally:
        opened.close()
    v = cli("verify", "--config", path, "--verify.queries", "3", env=env_for(tables))
    assert v.exit_code == 0, v.output  # verify --config proves every entry
    assert v.stdout.count("verify passed") == 3 and "3 ok, 0 failed" in v.stdout


def test_command_line_flags_apply_to_every_entry(tables, tmp_path, cli):
    path = config(tables, tmp_path)
    r = cli("migrate", "--config", path, "--migration.dry-run", env=env_for(tables))
    assert r.exit_code == 0, r.output
    assert r.stdout.count("dry run: nothing written") == 3
    assert not (tmp_path / "qdrant").exists()
    r = cli("migrate", "--config", path, "--pg.table", "docs", env=env_for(tables))
    assert r.exit_code == 2 and "--only NAME" in r.output


def test_only_runs_the_named_entries(tables, tmp_path, cli, open_qdrant):
    path = config(tables, tmp_path)
    r = cli("migrate", "--config", path, "--only", "notes,parts", env=env_for(tables))
    assert r.exit_code == 0, r.output
    assert "2 entries, 2 ok" in r.stdout
    client = open_qdrant(tmp_path / "qdrant")
    assert {c.name for c in client.get_collections().collections} - {"_pg2qdrant_state"} == {"notes", "parts"}
    client.close()
    r = cli("migrate", "--config", path, "--only", "nope", env=env_for(tables))
    assert r.exit_code == 2 and "--only nope: no such entry" in r.output and "docs, parts, notes" in r.output


def test_a_failing_entry_does_not_stop_the_others_and_the_exit_code_is_the_worst(tables, tmp_path, cli):
    text = FILE.format(url=no_password(tables.url), target=f"local:{tmp_path / 'qdrant'}")
    # parts must go into an existing collection, and there is none: found at run time, not before.
    text = text.replace('qdrant.collection = "parts"', 'qdrant.collection = "parts"\nmigration.create-collection = false')
    r = cli("migrate", "--config", write(tmp_path, text), env=env_for(tables))
    assert r.exit_code == 2, r.output
    assert "3 entries, 2 ok, 1 failed" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("│ parts "))
    assert "FAILED (exit 2)" in line
    assert "does not exist" in r.stderr
    notes = next(ln for ln in r.stdout.splitlines() if ln.startswith("│ notes "))  # ran after the failure
    assert "the collection equals the table" in notes


def test_input_errors_of_every_entry_stop_everything_before_a_write(tables, tmp_path, cli):
    text = FILE.format(url=no_password(tables.url), target=f"local:{tmp_path / 'qdrant'}")
    text = text.replace('"migration.batch-size" = 33', '"migration.batch-size" = "many"')
    text = text.replace('pg.table = "notes"', 'pg.table = "no_such_table"')
    r = cli("migrate", "--config", write(tmp_path, text), env=env_for(tables))
    assert r.exit_code == 2, r.output
    assert "[[table]] 'docs'" in r.stderr and "'many' is not a valid integer" in r.stderr
    assert "[[table]] 'notes'" in r.stderr and "no_such_table" in r.stderr
    assert "[1/" not in r.stderr and not (tmp_path / "qdrant").exists()
    # A plan error (here: no key for a table without a primary key) is found before any write too.
    tables.execute("CREATE TABLE nokey (id bigint, v vector(16))")
    text = FILE.format(url=no_password(tables.url), target=f"local:{tmp_path / 'qdrant'}")
    r = cli("migrate", "--config", write(tmp_path, text.replace('pg.table = "notes"', 'pg.table = "nokey"')),
            env=env_for(tables))
    assert r.exit_code == 2 and "no primary key" in r.stderr and "[[table]] 'notes'" in r.stderr, r.output
    assert "[1/" not in r.stderr and not (tmp_path / "qdrant").exists()


def test_schema_wildcard_migrates_every_table_with_a_vector_column(db, tmp_path, cli, open_qdrant):
    db.execute("CREATE SCHEMA app")
    db.execute(f"CREATE TABLE app.items {ITEMS}")
    db.execute("CREATE TABLE app.events (id bigint PRIMARY KEY, title text, n int, score float8, v vector(16)) "
               "PARTITION BY RANGE (id)")
    db.execute("CREATE TABLE app.events_1 PARTITION OF app.events FOR VALUES FROM (0) TO (1000)")
    db.execute("CREATE TABLE app.plain (id int PRIMARY KEY, name text)")  # no vector: left out
    db.execute("CREATE VIEW app.items_view AS SELECT * FROM app.items")  # a view: left out, said how to copy it
    db.execute(f"CREATE TABLE public.elsewhere {ITEMS}")  # another schema: left out
    with db.connect() as conn:
        fill_items(conn, "app.items", 30)
        fill_items(conn, "app.events", 20, seed=9)
    base = ["--pg.url", db.url, "--qdrant.url", f"local:{tmp_path / 'qdrant'}", "--migration.num-workers", "1"]
    r = cli("migrate", *base, "--pg.table", "app.*")
    assert r.exit_code == 0, r.output
    assert "2 entries, 2 ok" in r.stdout
    assert ("app.*: left out 3 relation(s) of the schema: app.events_1 (a partition of app.events, read through "
            "it); app.items_view (a view: name it with --pg.table to copy it); app.plain (no pgvector column).") \
        in r.stderr
    client = open_qdrant(tmp_path / "qdrant")
    assert {c.name for c in client.get_collections().collections} - {"_pg2qdrant_state"} == {"items", "events"}
    assert client.count("items").count == 30 and client.count("events").count == 20
    client.close()
    r = cli("inspect", *base, "--pg.table", "app.*", "--only", "events")
    assert r.exit_code == 0 and "app.events" in r.stdout and "app.items" not in r.stdout, r.output
    r = cli("migrate", *base, "--pg.table", "app.*", "--qdrant.collection", "one")
    assert r.exit_code == 2 and "leave out --qdrant.collection" in r.output
    r = cli("migrate", *base, "--pg.table", "nothing_here.*")
    assert r.exit_code == 2 and "has no table with a pgvector column" in r.output
    # One table found: one summary, the migration's.
    db.execute("CREATE SCHEMA solo")
    db.execute(f"CREATE TABLE solo.only_one {ITEMS}")
    r = cli("migrate", *base, "--pg.table", "solo.*", "--migration.dry-run")
    assert r.exit_code == 0, r.output
    assert "left out" not in r.output and "Summary:" not in r.stdout and r.stdout.count("summary") == 1, r.stdout
    # In a file too, with the other flags of the entry applied to each table.
    path = write(tmp_path, f'"pg.url" = "{no_password(db.url)}"\n"qdrant.url" = ":memory:"\n'
                           '[[table]]\nname = "app"\npg.table = "app.*"\nmigration.num-workers = 1\n')
    r = cli("migrate", "--config", path, "--migration.dry-run", env=env_for(db))
    assert r.exit_code == 0 and "2 entries, 2 ok" in r.stdout, r.output


def test_secrets_in_the_file_are_refused_and_environment_references_are_expanded(db, tmp_path, cli):
    password = urllib.parse.urlsplit(db.url).password
    assert password
    r = cli("inspect", "--config", write(tmp_path, f'pg.url = "{db.url}"\n[[table]]\npg.table = "t"\n'))
    assert r.exit_code == 2 and "pg.url holds a password" in r.output and "PGPASSWORD" in r.output
    assert "write ${PG_PASSWORD} in its place" in r.output
    assert password not in r.output
    r = cli("inspect", "--config", write(tmp_path, f'pg.url = "host=x password={password}"\n[[table]]\npg.table = "t"\n'))
    assert r.exit_code == 2 and "pg.url holds a password" in r.output and password not in r.output
    r = cli("inspect", "--config", write(tmp_path, '[[table]]\npg.table = "t"\nqdrant.api-key = "k-123"\n'))
    assert r.exit_code == 2 and "qdrant.api-key" in r.output and "QDRANT_API_KEY" in r.output
    assert "k-123" not in r.output
    r = cli("inspect", "--config", write(tmp_path, '[[table]]\npg.table = "t"\nqdrant.api-key = "${K}"\n'), env={"K": "k-456"})
    assert "qdrant.api-key" not in r.output and "k-456" not in r.output  # accepted (it fails later: no pg.url)
    # ${VAR}: the whole URL (password included) from the environment.
    db.execute(f"CREATE TABLE t {ITEMS}")
    path = write(tmp_path, 'pg.url = "${APP_PG_URL}"\n[[table]]\npg.table = "t"\nqdrant.collection = "t"\n')
    r = cli("inspect", "--config", path, env={"APP_PG_URL": db.url})
    assert r.exit_code == 0, r.output
    r = cli("inspect", "--config", path, env={"APP_PG_URL": None})
    assert r.exit_code == 2 and "${APP_PG_URL}, which is not set" in r.output


def test_unknown_key_names_the_key_and_the_entry(tmp_path, cli):
    path = write(tmp_path, 'pg.url = "postgresql://u@h/d"\n[[table]]\nname = "docs"\npg.table = "t"\n'
                           'qdrant.colection = "c"\n')
    r = cli("migrate", "--config", path)
    assert r.exit_code == 2
    assert "[[table]] 'docs': unknown key 'qdrant.colection'" in r.output
    assert "did you mean 'qdrant.collection'" in r.output
    r = cli("migrate", "--config", write(tmp_path, '"pg.url" = "postgresql://u@h/d"\n'))
    assert r.exit_code == 2 and "no [[table]] entry" in r.output
    r = cli("migrate", "--config", str(tmp_path / "missing.toml"))
    assert r.exit_code == 2 and "Cannot read the migration file" in r.output


def test_sync_with_several_entries_shares_one_slot_or_runs_one_entry(tables, tmp_path, cli):
    path = config(tables, tmp_path)
    # several entries: one slot for the file (tests/test_sync_many.py streams through it); poll mode
    # follows one table at a time and says so
    r = cli("sync", "--config", path, "--sync.mode", "poll", "--sync.updated-column", "n", env=env_for(tables))
    assert r.exit_code == 2 and "--only" in r.output and "cdc" in r.output, r.output
    text = (tmp_path / "tables.toml").read_text().replace('name = "notes"', 'name = "notes"\nsync.slot = "own"')
    r = cli("sync", "--config", write(tmp_path, text, "other.toml"), env=env_for(tables))
    assert r.exit_code == 2 and "--sync.slot must be the same for every entry" in r.output, r.output
    # One entry: one sync (here a reconcile pass, which ends by itself).
    r = cli("sync", "--config", path, "--only", "parts", "--sync.mode", "reconcile", env=env_for(tables))
    assert r.exit_code == 0, r.output


def test_sync_status_reads_the_entry_from_the_file(tables, tmp_path, cli):
    path = config(tables, tmp_path)
    r = cli("sync", "--config", path, "--only", "parts", "status", env=env_for(tables))
    # No slot was created: status says so about the entry's slot (named after its collection).
    assert r.exit_code == 2 and "no replication slot 'pg2qdrant_parts'" in r.output, r.output
    r = cli("sync", "--config", path, "status", env=env_for(tables))  # the whole file: its one slot
    assert r.exit_code == 2 and "no replication slot 'pg2qdrant_file_tables'" in r.output, r.output


def test_the_documented_example_file_is_valid(tmp_path):
    from pathlib import Path

    import pg2qdrant.cli.main  # noqa: F401  (registers the commands whose flags the file's keys are checked against)
    from pg2qdrant.cli.config_file import read_file
    section = (Path(__file__).resolve().parents[2] / "docs" / "migration-file.md").read_text()
    example = section[section.index("```toml") + len("```toml"):section.index("```", section.index("```toml") + 7)]
    entries = read_file(write(tmp_path, example))
    assert [values["pg.table"] for _, _, values in entries] == [
        "public.documents", "public.events", "langchain_pg_embedding"]
    assert entries[0][2]["qdrant.distance-metric"] == ["embedding=dot"]
    assert all(values["migration.num-workers"] == 4 for _, _, values in entries)


def test_a_failed_verify_after_the_copy_sets_the_exit_code_with_and_without_a_file(tables, tmp_path, cli):
    impossible = ["--verify", "--verify.queries", "3", "--verify.threshold", "top1=2"]  # no search can pass it
    r = cli("migrate", "--pg.url", tables.url, "--pg.table", "notes", "--qdrant.url", f"local:{tmp_path / 'one'}",
            "--qdrant.collection", "notes", "--migration.num-workers", "1", *impossible)
    assert r.exit_code == 1, r.output
    assert "Migration summary" in r.stdout and "Summary:" not in r.stdout  # one table: as before
    r = cli("migrate", "--config", config(tables, tmp_path), "--only", "parts,notes", *impossible, env=env_for(tables))
    assert r.exit_code == 1, r.output
    for entry in ("parts", "notes"):
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"│ {entry} "))
        assert "no other point; FAILED verify (exit 1)" in line, line
