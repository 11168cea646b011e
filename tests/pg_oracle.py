"""What docs/mapping.md say a row's payload must be, computed from PostgreSQL's own output.

The oracle for tests/test_differential.py. It never calls pg2qdrant's converters:
every value is PostgreSQL's text output (the type's output function; intervals with
``IntervalStyle = iso_8601``), the type comes from the catalogue (domains resolved
to their base type, arrays to their element type), and the text is turned into
the payload value by the documented rule for that type, written out here again.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the rules see it: the base scalar type, and the array depth if any."""

    name: str  # column name
    scalar: str  # base type's name when it is in pg_catalog ('int4', 'jsonb'...), else '' (text form)
    enum_or_citext: bool  # enums and citext: plain strings
    is_array: bool
    delimiter: str  # the element type's array delimiter (',' except box: ';')


def _resolve(conn: psycopg.Connection, oid: int) -> tuple[str, str, str, str, str, int]:
    """(schema, name, typtype, delimiter, category, element oid) of a type, domains followed to their base."""
    while True:
        schema, name, typtype, base, delim, category, elem, extname = conn.execute(
            "SELECT n.nspname, t.typname, t.typtype, t.typbasetype, t.typdelim, t.typcategory, t.typelem, "
            "(SELECT x.extname FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid "
            " WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e') "
            "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = %s", (oid,)).fetchone()
        if typtype != "d":
            typtype = "citext" if extname == "citext" and name == "citext" else typtype
            return schema, name, typtype, delim, category, elem
        oid = base


def column_types(conn: psycopg.Connection, table: str) -> list[ColumnType]:
    rows = conn.execute(
        "SELECT a.attname, a.atttypid FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum", (table,)).fetchall()
    out = []
    for name, oid in rows:
        schema, tname, typtype, delim, category, elem = _resolve(conn, oid)
        is_array = category == "A" and elem != 0
        if is_array:  # the element type (itself perhaps a domain) decides the rule and the delimiter
            schema, tname, typtype, delim, _, _ = _resolve(conn, elem)
        out.append(ColumnType(name, tname if schema == "pg_catalog" else "", typtype in ("e", "citext"),
                              is_array, delim))
    return out


# --- PostgreSQL's array text output -> nested lists of element texts (None for NULL) ---------

def parse_array(text: str, delimiter: str = ",") -> list:
    """array_out's format: optional '[lo:hi]=' bounds, braces, quoted or bare elements, bare NULL."""
    if text.startswith("["):
        text = text[text.index("=") + 1:]
    stack: list[list] = []
    result: list = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "{":
            stack.append([])
            i += 1
        elif ch == "}":
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                result = done
            i += 1
        elif ch == delimiter:
            i += 1
        elif ch == '"':
            i += 1
            chars = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            stack[-1].append("".join(chars))
            i += 1
        else:
            j = i
            while text[j] not in (delimiter, "}"):
                j += 1
            token = text[i:j]
            stack[-1].append(None if token.upper() == "NULL" else token)
            i = j
    return result


# --- one element text -> its payload value, by docs/mapping.md ------------------------

def json_number(token: str) -> int | float | str:
    """docs/mapping.md: an integer that fits int64 stays an integer; a number with fraction or exponent is a
    float when the float's shortest decimal equals it; anything else keeps its text."""
    if re.fullmatch(r"-?[0-9]+", token):
        i = int(token)
        return i if INT64_MIN <= i <= INT64_MAX else token
    exact = Decimal(token)
    f = float(exact)
    return f if math.isfinite(f) and Decimal(repr(f)) == exact else token


def _year(text: str, bc: bool) -> str:
    y = int(text)
    y = 1 - y if bc else y
    return f"{y:04d}" if 0 <= y <= 9999 else f"{'-' if y < 0 else '+'}{abs(y):04d}"


def _micro(clock: str) -> str:
    hms, _, frac = clock.partition(".")
    return f"{hms}.{frac.ljust(6, '0')}"


def _zone(offset: str) -> str:
    """'+05' -> '+05:00'; '+05:30' and '-03:30:15' unchanged."""
    return offset if ":" in offset else offset + ":00"


def date_or_timestamp(text: str, kind: str) -> str:
    """DateStyle ISO output ('2024-01-02 03:04:05.1+00', '0044-03-15 BC') -> the ISO 8601 form of docs/mapping.md."""
    if text in ("infinity", "-infinity"):
        return text
    bc = text.endswith(" BC")
    text = text.removesuffix(" BC")
    date, _, clock = text.partition(" ")
    year, rest = date.rsplit("-", 2)[0], "-".join(date.rsplit("-", 2)[1:])
    out = f"{_year(year, bc)}-{rest}"
    if kind == "date":
        return out
    if kind == "timestamptz":
        assert clock.endswith("+00"), clock  # the oracle's session is in UTC
        return f"{out}T{_micro(clock[:-3])}Z"
    return f"{out}T{_micro(clock)}"


def timetz(text: str) -> str:
    m = re.fullmatch(r"([0-9:.]+)([+-].*)", text)
    assert m, text
    return _micro(m.group(1)) + _zone(m.group(2))


def scalar_value(text: str, col: ColumnType) -> Any:
    t = col.scalar
    if col.enum_or_citext or t in ("text", "varchar", "bpchar", "name", "char", "uuid", "inet", "cidr"):
        return text
    if t in ("int2", "int4", "int8", "oid"):
        return int(text)
    if t == "bool":
        return text in ("t", "true")
    if t in ("float4", "float8"):
        return text if text in ("NaN", "Infinity", "-Infinity") else float(text)
    if t == "numeric":
        if text in ("NaN", "Infinity", "-Infinity"):
            return text
        if "." not in text:
            i = int(text)
            return i if INT64_MIN <= i <= INT64_MAX else text
        exact = Decimal(text)
        f = float(exact)
        return f if math.isfinite(f) and Decimal(repr(f)) == exact else text
    if t in ("json", "jsonb"):
        return json.loads(text, parse_int=json_number, parse_float=json_number)
    if t == "bytea":
        return base64.b64encode(bytes.fromhex(text[2:])).decode("ascii")
    if t in ("date", "timestamp", "timestamptz"):
        return date_or_timestamp(text, t)
    if t == "time":
        return _micro(text)
    if t == "timetz":
        return timetz(text)
    return text  # interval: the iso_8601 text itself; every other type: its text form


def column_value(text: str | None, col: ColumnType) -> Any:
    if text is None:
        return None
    if not col.is_array:
        return scalar_value(text, col)

    def convert(items: list) -> list:
        return [None if x is None else convert(x) if isinstance(x, list) else scalar_value(x, col) for x in items]

    return convert(parse_array(text, col.delimiter))


def output_texts(conn: psycopg.Connection, query: str) -> list[list[str | None]]:
    """Each value's text from its type's output function, as sent (no cast: ``inet::text`` adds /32)."""
    result = conn.execute(query).pgresult
    assert result is not None
    return [[None if (v := result.get_value(r, c)) is None else bytes(v).decode("utf-8")
             for c in range(result.nfields)] for r in range(result.ntuples)]


def expected_payloads(url: str, table: str, key: str = "id", vectors: tuple[str, ...] = ("v",)) -> dict[Any, dict]:
    """{key value: expected payload} for every row of ``table``: PostgreSQL's text output, by the rules."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET DateStyle = 'ISO, MDY'")
        columns = [c for c in column_types(conn, table) if c.name not in vectors]
        query = f"SELECT {', '.join(chr(34) + c.name + chr(34) for c in columns)} FROM {table} ORDER BY \"{key}\""
        rows = output_texts(conn, query)
        # Interval text in the form docs/mapping.md gives is PostgreSQL's own iso_8601 style: read those columns in it.
        # (Only there: text forms of other types, composites included, use the session default.)
        conn.execute("SET IntervalStyle = iso_8601")
        iso = output_texts(conn, query)
    out = {}
    for row, iso_row in zip(rows, iso):
        payload = {c.name: column_value(iso_row[i] if c.scalar == "interval" else row[i], c)
                   for i, c in enumerate(columns)}
        out[payload[key]] = payload
    return out


def same(expected: Any, actual: Any) -> bool:
    """Equal in value and JSON type; floats bit for bit (repr), so -0.0 is not 0.0."""
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float):
        return repr(expected) == repr(actual)
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual))
    if isinstance(expected, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    return expected == actual
