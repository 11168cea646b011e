"""The ``pgoutput`` logical decoding messages (protocol version 1) and their decoder.

Nothing here does I/O: :func:`decode_message` turns the payload of one XLogData
frame (see :mod:`.replication`) into a small frozen dataclass. No library decodes
pgoutput for psycopg 3, hence this hand-written decoder (PostgreSQL's
``src/backend/replication/logical/proto.c`` writes these messages).

Wire layout (every message starts with a one-byte tag; integers are big-endian,
Int64 LSNs and times included; a String is UTF-8 ended by a zero byte; times are
microseconds since 2000-01-01 UTC)::

    B  Begin     Int64 final LSN, Int64 commit time, Int32 xid
    C  Commit    Int8 flags (0), Int64 commit LSN, Int64 end LSN, Int64 commit time
    R  Relation  Int32 relation OID, String namespace, String name,
                 Int8 replica identity (d default, n nothing, f full, i index),
                 Int16 n, then n columns: Int8 flags (1: part of the replica identity),
                 String name, Int32 type OID, Int32 type modifier
    Y  Type      Int32 type OID, String namespace, String name
    I  Insert    Int32 relation OID, Byte 'N', TupleData (the new row)
    U  Update    Int32 relation OID, [Byte 'K' (old key columns) or 'O' (whole old row),
                 TupleData], Byte 'N', TupleData (the new row)
    D  Delete    Int32 relation OID, Byte 'K' or 'O', TupleData (old key or old row)
    T  Truncate  Int32 n, Int8 options (1 CASCADE, 2 RESTART IDENTITY), n x Int32 relation OID
    O, M ...     Origin, logical decoding Message: returned as :class:`Other`

    TupleData    Int16 n, then n columns, each a Byte kind: 'n' NULL, 'u' unchanged TOASTed
                 value (not sent), 't' Int32 length + text form, 'b' Int32 length + binary
                 form (what ``binary 'true'`` asks for)

A Relation message precedes the first change of a relation in each session and
again after its definition changed; relations are named by OID everywhere else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RelColumn:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d default, f full, i index, n nothing
    columns: tuple[RelColumn, ...]


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: int  # µs since 2000-01-01
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str


# A tuple: one (kind, data) per relation column; kind is n (NULL), u (unchanged TOAST),
# t (text) or b (binary); data is the value's bytes for t and b.
TupleData = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Insert:
    relation: int
    new: TupleData


@dataclass(frozen=True)
class Update:
    relation: int
    old_kind: str | None  # K: old key columns only, O: whole old row, None: key unchanged
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True)
class Delete:
    relation: int
    old_kind: str
    old: TupleData


@dataclass(frozen=True)
class Truncate:
    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Other:
    tag: str  # Origin, logical decoding Message: not ours to act on


_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U16 = struct.Struct(">H")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8", "replace"), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    out: TupleData = []
    for _ in range(n):
        kind = chr(buf[pos])
        pos += 1
        if kind in "tb":
            (length,) = _I32.unpack_from(buf, pos)
            pos += 4
            out.append((kind, buf[pos:pos + length]))
            pos += length
        else:
            out.append((kind, None))
    return out, pos


def decode_message(buf: bytes) -> Any:
    """One pgoutput message (the payload of an XLogData frame)."""
    tag = chr(buf[0])
    if tag == "B":
        final_lsn, ts, xid = struct.unpack_from(">QqI", buf, 1)
        return Begin(final_lsn, ts, xid)
    if tag == "C":
        _flags, commit_lsn, end_lsn, ts = struct.unpack_from(">BQQq", buf, 1)
        return Commit(commit_lsn, end_lsn, ts)
    if tag == "R":
        (oid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        identity = chr(buf[pos])
        (ncols,) = _U16.unpack_from(buf, pos + 1)
        pos += 3
        cols = []
        for _ in range(ncols):
            flags = buf[pos]
            colname, pos = _cstring(buf, pos + 1)
            type_oid, typmod = struct.unpack_from(">Ii", buf, pos)
            pos += 8
            cols.append(RelColumn(colname, type_oid, typmod, bool(flags & 1)))
        return Relation(oid, namespace, name, identity, tuple(cols))
    if tag == "Y":
        (oid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, _ = _cstring(buf, pos)
        return TypeInfo(oid, namespace, name)
    if tag == "I":
        (rel,) = _U32.unpack_from(buf, 1)
        new, _ = _tuple(buf, 6)  # buf[5] == 'N'
        return Insert(rel, new)
    if tag == "U":
        (rel,) = _U32.unpack_from(buf, 1)
        pos = 5
        old_kind, old = None, None
        if chr(buf[pos]) in "KO":
            old_kind = chr(buf[pos])
            old, pos = _tuple(buf, pos + 1)
        new, _ = _tuple(buf, pos + 1)  # buf[pos] == 'N'
        return Update(rel, old_kind, old, new)
    if tag == "D":
        (rel,) = _U32.unpack_from(buf, 1)
        old_kind = chr(buf[5])
        old, _ = _tuple(buf, 6)
        return Delete(rel, old_kind, old)
    if tag == "T":
        n, options = struct.unpack_from(">IB", buf, 1)
        rels = struct.unpack_from(f">{n}I", buf, 6)
        return Truncate(tuple(rels), bool(options & 1), bool(options & 2))
    return Other(tag)
