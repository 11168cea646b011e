"""How psycopg decodes the source's binary values for us.

psycopg's C loaders are used for almost everything (ints, floats, numeric,
text, uuid, json, arrays...). We replace a few loaders where psycopg's result
would change the meaning or fail on valid data:

- date/time types: psycopg raises on 'infinity' and on years outside 1..9999,
  and turns an interval's months into 30-day blocks. Ours decode the binary
  form and format it with the mapping's functions (ISO 8601 text).
- pgvector types and bit: passed through as raw bytes (psycopg's C bytea
  loader, which returns a binary value untouched), which the mapping decodes a
  whole batch at a time with numpy (far faster than one object per vector).
- json/jsonb: parsed with the mapping's ``json_loads`` (huge numbers kept as text).

The same adapters serve COPY (migrate, verify) and the replication stream
(sync, binary pgoutput), so every flow decodes alike.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.pq import Format
from psycopg.types.json import set_json_loads
from psycopg.types.string import ByteaBinaryLoader

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.mapping import json_values, temporal
from pg2qdrant.core.plan import ReadColumn

_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_TIMETZ = struct.Struct(">qi")
_INTERVAL = struct.Struct(">qii")


class DateTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        return temporal.format_date(_I32.unpack(data)[0])


class TimestampTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        return temporal.format_timestamp(_I64.unpack(data)[0], utc=False)


class TimestamptzTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        return temporal.format_timestamp(_I64.unpack(data)[0], utc=True)


class TimeTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        return temporal.format_time(_I64.unpack(data)[0])


class TimetzTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        usecs, west = _TIMETZ.unpack(data)
        return temporal.format_timetz(usecs, west)


class IntervalTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        usecs, days, months = _INTERVAL.unpack(data)
        return temporal.format_interval(usecs, days, months)


class LenientTextLoader(Loader):
    """Text (either format) decoded as UTF-8 with U+FFFD for invalid bytes.

    Only for SQL_ASCII databases, the one place where text can hold bytes that are
    not UTF-8: psycopg would otherwise hand us bytes (or fail) for every text value,
    catalog names included. The replacement is the documented, only lossy case.
    """

    def load(self, data: Buffer) -> str:
        return bytes(data).decode("utf-8", "replace")


class LenientTextBinaryLoader(LenientTextLoader):
    format = Format.BINARY


def _lenient_json(data: bytes | str):
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8", "replace")
    return json_values.json_loads(data)


def tolerate_invalid_utf8(conn: psycopg.Connection) -> None:
    """In a SQL_ASCII database: read text as UTF-8 strings, replacing invalid bytes."""
    for name in ("text", "varchar", "bpchar", "name", '"char"'):
        for loader in (LenientTextLoader, LenientTextBinaryLoader):
            try:
                conn.adapters.register_loader(name, loader)
            except KeyError:  # a type psycopg does not know by that name
                pass
    set_json_loads(_lenient_json, conn)


_TEMPORAL = {
    "date": DateTextLoader,
    "timestamp": TimestampTextLoader,
    "timestamptz": TimestamptzTextLoader,
    "time": TimeTextLoader,
    "timetz": TimetzTextLoader,
    "interval": IntervalTextLoader,
}


def configure(conn: psycopg.Connection, raw_oids: list[int] | tuple[int, ...] = ()) -> None:
    """Install our loaders on ``conn`` (connection scope only: nothing global changes)."""
    for name, loader in _TEMPORAL.items():
        conn.adapters.register_loader(name, loader)
    for oid in raw_oids:
        # psycopg swaps in its C implementation of this loader when available.
        conn.adapters.register_loader(oid, ByteaBinaryLoader)
    if conn.info.encoding == "ascii":  # SQL_ASCII (tolerate_invalid_utf8 already set JSON)
        return
    set_json_loads(json_values.json_loads, conn)


def load_oid(load_type: str, context: psycopg.abc.AdaptContext | None = None) -> int | None:
    """The OID a plan's load type is decoded as: a type name or 'name[]' (array).

    None when psycopg knows no such type or has no binary loader for it (the plan
    checks every read with this, so that never happens once reading has begun).
    ``context``: a connection (default: psycopg's global adapters, which every
    connection starts from).
    """
    adapters_map = context.adapters if context is not None else psycopg.adapters
    try:
        oid = adapters_map.types.get_oid(load_type)
    except KeyError:
        return None
    return oid if adapters_map.get_loader(oid, Format.BINARY) is not None else None


def load_oids(conn: psycopg.Connection, reads: Sequence[ReadColumn]) -> list[int]:
    """OIDs for COPY's set_types(), one per read: a raw read's own (configure() registered
    the raw loader for it), else its load type's (see :func:`load_oid`)."""
    out = []
    for read in reads:
        oid = read.raw_oid if read.raw_oid is not None else load_oid(read.load_type, conn)
        if oid is None:  # the plan checked it: only a connection set up unlike psycopg's defaults
            raise InputError(f"psycopg cannot decode values read as {read.load_type!r} on this connection.",
                             fix="please report it with the column types of the table (--debug).")
        out.append(oid)
    return out


def check_loadable(plan) -> None:
    """Fail while planning, before anything is written, when psycopg cannot decode one of the plan's reads."""
    for read in plan.reads:
        if read.raw_oid is not None or load_oid(read.load_type) is not None:
            continue  # raw reads pass through as bytes
        col = plan.table.column(read.column)
        raise InputError(
            f"Column {col.name} ({col.declared}) cannot be read: psycopg has no binary loader for "
            f"{read.load_type!r}, the type pg2qdrant reads it as.",
            fix=f"leave the column out with --pg.columns, or migrate from a view that casts "
                f"{col.name} to text; please report the type.",
        )
