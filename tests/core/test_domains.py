"""Domains, arrays of domains, domains over arrays and ``"char"`` (real server, real collection).

PostgreSQL sends an array of a domain with the domain's OID as element type, which
psycopg has no loader for; and within one COPY psycopg shares one array loader per
array OID, so such a column used to corrupt plain arrays of the same base type too.
Every case is checked twice: through migrate's binary COPY and through sync's
binary pgoutput stream. Expected values are written out by hand.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest

from conftest import migrate_args
from pg2qdrant.core import plan as plan_module

DOMAINS = """
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN posint2 AS posint;                -- a domain over a domain
CREATE DOMAIN intarr AS int[];                  -- a domain over an array
CREATE DOMAIN intarr2 AS intarr;                -- a domain over a domain over an array
CREATE DOMAIN posarr AS posint[];               -- a domain over an array of a domain
CREATE DOMAIN tsdom AS timestamptz;
CREATE DOMAIN numdom AS numeric;
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN mooddom AS mood;
"""

# column -> (declared type, SQL value, expected payload)
CASES = {
    "a_posint": ("posint[]", "'{1,NULL,3}'", [1, None, 3]),
    "a_posint2": ("posint2[]", "'{{1,2},{3,4}}'", [[1, 2], [3, 4]]),
    "a_tsdom": ("tsdom[]", "ARRAY['2024-01-02 03:04:05.5+00'::timestamptz, 'infinity']",
                ["2024-01-02T03:04:05.500000Z", "infinity"]),
    "a_numdom": ("numdom[]", "'{1.5,12345678901234567890}'", [1.5, "12345678901234567890"]),
    "a_mooddom": ("mooddom[]", "'{happy,NULL}'", ["happy", None]),
    "d_intarr": ("intarr", "'{7,NULL,9}'", [7, None, 9]),
    "d_intarr2": ("intarr2", "'{{7,8},{9,10}}'", [[7, 8], [9, 10]]),
    "d_posarr": ("posarr", "'{4,5}'", [4, 5]),
    # PostgreSQL has no arrays of arrays: its elements are arrays, shown in their text form
    "a_intarr": ("intarr[]", "'{\"{1,2}\",\"{3}\"}'", ["{1,2}", "{3}"]),
    "plain": ("int[]", "'{2147483647,-1}'", [2147483647, -1]),
    "c_char": ('"char"', "'x'", "x"),
    "a_char": ('"char"[]', "'{a,NULL,b}'", ["a", None, "b"]),
}


def _create(db, columns: list[str], table: str = "t") -> None:
    """Table ``table`` with id, the given CASES columns and a vector; row 1 holds the values, row 2 NULLs."""
    defs = ", ".join(f"{c} {CASES[c][0]}" for c in columns)
    values = ", ".join(CASES[c][1] for c in columns)
    db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, {defs}, v vector(2));"
               f"INSERT INTO {table} (id, {', '.join(columns)}, v) VALUES (1, {values}, '[1,2]');"
               f"INSERT INTO {table} (id, v) VALUES (2, '[3,4]')")


def _payloads(client, collection: str = "c") -> dict:
    return {p.id: p.payload for p in client.retrieve(collection, [1, 2, 3, 4], with_payload=True)}


def _migrate(db, qdrant_path, cli, open_qdrant, columns: list[str]) -> dict:
    db.execute(DOMAINS)
    _create(db, columns)
    r = cli(*migrate_args(db, "t", qdrant_path))
    assert r.exit_code == 0, r.output
    return _payloads(open_qdrant(qdrant_path))


def _assert_row(payloads: dict, columns: list[str]) -> None:
    for c in columns:
        assert payloads[1][c] == CASES[c][2], c
        assert payloads[2][c] is None, c  # NULL stays null


# --- migrate (binary COPY) ------------------------------------------------------------------------

def test_array_of_domain_keeps_integers(db, qdrant_path, cli, open_qdrant):
    columns = ["a_posint", "a_posint2", "a_tsdom", "a_numdom", "a_mooddom"]
    _assert_row(_migrate(db, qdrant_path, cli, open_qdrant, columns), columns)


def test_domain_over_array(db, qdrant_path, cli, open_qdrant):
    """In the issue's column order: an array of a domain first, then domains over arrays."""
    columns = ["a_posint", "d_intarr", "d_intarr2", "d_posarr", "a_intarr"]
    _assert_row(_migrate(db, qdrant_path, cli, open_qdrant, columns), columns)


@pytest.mark.parametrize("order", list(itertools.permutations(["a_posint", "d_intarr", "plain"])),
                         ids="-".join)
def test_domain_arrays_do_not_poison_plain_arrays(db, qdrant_path, cli, open_qdrant, order):
    _assert_row(_migrate(db, qdrant_path, cli, open_qdrant, list(order)), list(order))


def test_char_column_is_a_one_character_string(db, qdrant_path, cli, open_qdrant):
    """ASCII as itself, NULL as null; a byte above 127 (the first byte of 'é' here) and the
    zero byte as PostgreSQL prints them: '\\303' and ''."""
    db.execute(DOMAINS)
    _create(db, ["c_char", "a_char"])
    db.execute("INSERT INTO t (id, c_char, a_char, v) VALUES (3, 'é', ARRAY['é'::\"char\", ''], '[1,1]')")
    r = cli(*migrate_args(db, "t", qdrant_path))
    assert r.exit_code == 0, r.output
    payloads = _payloads(open_qdrant(qdrant_path))
    _assert_row(payloads, ["c_char", "a_char"])
    assert type(payloads[1]["c_char"]) is str
    assert payloads[3] == {"id": 3, "c_char": "\\303", "a_char": ["\\303", ""]}


def test_char_key_column(db, qdrant_path, cli, open_qdrant):
    db.execute('CREATE TABLE ck (k "char" PRIMARY KEY, v vector(2)); INSERT INTO ck VALUES (\'q\', \'[1,2]\')')
    r = cli(*migrate_args(db, "ck", qdrant_path))
    assert r.exit_code == 0, r.output
    points, _ = open_qdrant(qdrant_path).scroll("c", with_payload=True)
    assert [p.payload for p in points] == [{"k": "q"}]


@pytest.mark.parametrize("pgtype, value", [("pg_snapshot", "pg_current_snapshot()"), ("money", "1.5")])
def test_unreadable_type_fails_before_any_write(db, qdrant_path, cli, monkeypatch, pgtype, value):
    """A read psycopg cannot decode is an input error while planning, naming column and type.

    Fault injection: every type pg2qdrant maps has a binary loader, so the mapping is
    told to read a type by its own name where psycopg has no loader: pg_snapshot, a
    name psycopg does not know (as '"char"' was looked up as 'char': a KeyError once
    the collection existed), and money, a name it knows without a binary loader (raw
    bytes would have been written as text).
    """
    monkeypatch.setitem(plan_module._SCALAR_KINDS, pgtype, "text")
    db.execute(f"CREATE TABLE t (id int PRIMARY KEY, odd {pgtype}, v vector(2)); "
               f"INSERT INTO t VALUES (1, {value}, '[1,2]')")
    r = cli(*migrate_args(db, "t", qdrant_path))
    assert r.exit_code == 2, r.output
    assert f"Column odd ({pgtype}) cannot be read" in r.stderr and "Fix:" in r.stderr, r.output
    assert "Unexpected failure" not in r.output and "Traceback" not in r.output
    assert not (qdrant_path / "collection" / "c").exists()


# --- sync (binary pgoutput) -----------------------------------------------------------------------

@contextlib.contextmanager
def _synced(db, tmp_path, cli):
    """An initial copy of ``items`` by sync; yields the `sync --sync.once` arguments; drops the slot."""
    base = ["sync", "--pg.url", db.url, "--pg.table", "items", "--qdrant.url", f"local:{tmp_path / 'q'}",
            "--qdrant.collection", "c", "--sync.slot", f"s_{db.name}", "--migration.num-workers", "1",
            "--sync.once"]
    try:
        r = cli(*base, "--sync.initial-copy")
        assert r.exit_code == 0, r.output
        yield base
    finally:
        with db.connect() as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (f"s_{db.name}",))


def test_cdc_decodes_domain_arrays_and_char_like_copy(db, tmp_path, cli, open_qdrant):
    """Inserted and updated rows, decoded from pgoutput, carry the same values as the copy."""
    columns = list(CASES)
    db.execute(DOMAINS)
    _create(db, columns, table="items")
    with _synced(db, tmp_path, cli) as base:
        values = ", ".join(CASES[c][1] for c in columns)
        db.execute(f"INSERT INTO items (id, {', '.join(columns)}, v) VALUES (3, {values}, '[5,6]')")
        # Row 1: every column set again (pgoutput sends the new row whole); row 2 stays all NULL.
        db.execute(f"UPDATE items SET ({', '.join(columns)}) = ({values}) WHERE id = 1")
        db.execute("UPDATE items SET v = '[7,8]' WHERE id = 2")
        db.execute("INSERT INTO items (id, c_char, v) VALUES (4, 'é', '[1,1]')")
        r = cli(*base)
        assert r.exit_code == 0, r.output
        payloads = _payloads(open_qdrant(tmp_path / "q"))
        _assert_row(payloads, columns)
        assert {c: payloads[3][c] for c in columns} == {c: CASES[c][2] for c in columns}
        assert payloads[4]["c_char"] == "\\303"


@pytest.mark.parametrize("order", [["a_posint", "plain"], ["plain", "a_posint"], ["d_posarr", "plain"]],
                         ids="-".join)
def test_cdc_domain_arrays_do_not_poison_plain_arrays(db, tmp_path, cli, open_qdrant, order):
    db.execute(DOMAINS)
    _create(db, order, table="items")
    with _synced(db, tmp_path, cli) as base:
        db.execute("DELETE FROM items")  # the stream alone must bring the values back
        values = ", ".join(CASES[c][1] for c in order)
        db.execute(f"INSERT INTO items (id, {', '.join(order)}, v) VALUES (1, {values}, '[1,2]'), "
                   f"(3, {values}, '[5,6]')")
        db.execute("INSERT INTO items (id, v) VALUES (2, '[3,4]')")
        r = cli(*base)
        assert r.exit_code == 0, r.output
        payloads = _payloads(open_qdrant(tmp_path / "q"))
        _assert_row(payloads, order)
        assert {c: payloads[3][c] for c in order} == {c: CASES[c][2] for c in order}
