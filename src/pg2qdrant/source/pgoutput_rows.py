"""Rows: pgoutput columns -> values in ``plan.reads`` order, decoded like the copy decodes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import SourceError
from pg2qdrant.core.plan import Plan
from pg2qdrant.source import reader
from pg2qdrant.source.pgoutput import Relation, TupleData
from pg2qdrant.source.replication import ConnectionLost


class _Unchanged:
    """Marker for a value the stream did not send (unchanged TOAST, or a column not published)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self):
        return (_Unchanged, ())


UNCHANGED = _Unchanged()

# Base types whose binary wire form is their text, so a `col::text` read can use it as is.
_TEXT_LIKE = {"text", "varchar", "name"}


@dataclass
class _Pending:
    """A value PostgreSQL must convert with the plan's own SQL expression (see RowDecoder)."""

    row: list
    index: int
    expression: str  # the read's SQL after the column name (applied to a parameter instead)
    type_oid: int
    fmt: int  # 1 binary, 0 text
    data: bytes


@dataclass
class _ReadRule:
    read_index: int
    column: str
    direct: bool  # decode the wire bytes with the read's loader
    loader: Any  # binary loader of the read's load type
    expression: str  # the read's SQL after the column name (for conversions by PostgreSQL)


class RowDecoder:
    """Turns pgoutput tuples into rows in ``plan.reads`` order, decoded exactly like COPY.

    With ``binary 'true'`` pgoutput sends each column in its type's binary send
    format, the same bytes a binary COPY of the bare column yields, so those are
    decoded with the very loaders the copy uses (source.adapters). A read that
    is an expression rather than the bare column (``col::text`` for text-form
    types, ``"char"`` and non-integer keys; casts of domains, arrays of domains
    and domains over arrays to their base type; arrays of enums...) needs
    PostgreSQL's conversion: the wire value (of the column's own type) is sent
    back as a parameter of that same expression on ``conn`` (one statement per
    batch), so the result cannot differ from what the copy read. Columns the stream did not
    send (``u``: unchanged TOAST, or missing from the publication) become
    :data:`UNCHANGED`.
    """

    MAX_PARAMS = 1_000  # values per conversion statement (a SELECT list holds at most 1,664)

    def __init__(self, plan: Plan, conn: psycopg.Connection):
        self.plan = plan
        self.conn = conn
        self.load_oids = reader.prepare_connection(conn, plan)
        self.tx = Transformer(conn)
        self.relations: dict[int, Relation] = {}
        self._rules: dict[int, list[tuple[int | None, _ReadRule]]] = {}
        self._pending: list[_Pending] = []
        self.missing_columns: dict[int, list[str]] = {}
        # Relations whose descriptor is not the plan's table (a column of another type, or one the
        # plan's table lacks): sent before or after a DDL the plan has not caught up with.
        self.mismatched: set[int] = set()

    def renewed(self, plan: Plan) -> RowDecoder:
        """A decoder for ``plan`` (made again after a DDL) that knows the relations this one was sent:
        pgoutput sends a relation's descriptor again only when it changes."""
        self.resolve()  # rows decoded here keep no conversion waiting on this decoder
        decoder = RowDecoder(plan, self.conn)
        for rel in self.relations.values():
            decoder.add_relation(rel)
        return decoder

    def add_relation(self, rel: Relation) -> None:
        self.relations[rel.oid] = rel
        self._rules[rel.oid] = self._rules_for(rel)

    def reread_only(self, relation: int) -> bool:
        """Changes of ``relation`` cannot be decoded into the plan's row: read them again by key."""
        return relation in self.missing_columns or relation in self.mismatched

    # complexity: one decode rule per column of a relation descriptor (direct, via the plan's SQL, unchanged TOAST,
    # missing, mismatched type): the cases PostgreSQL sends.
    def _rules_for(self, rel: Relation) -> list[tuple[int | None, _ReadRule]]:
        by_name = {c.name: (i, c) for i, c in enumerate(rel.columns)}
        known = {c.name for c in self.plan.table.columns}
        mismatched = any(c.name not in known for c in rel.columns)
        rules: list[tuple[int | None, _ReadRule]] = []
        missing = []
        for i, read in enumerate(self.plan.reads):
            col = self.plan.table.column(read.column)
            assert col is not None
            expression = f"::{read.cast}" if read.cast else ""  # what follows the column
            found = by_name.get(read.column)
            if found is None:
                missing.append(read.column)
                rules.append((None, _ReadRule(i, read.column, False, None, expression)))
                continue
            pos, rc = found
            if rc.type_oid != col.declared_oid:  # not decodable with the plan's loader
                mismatched = True
                rules.append((None, _ReadRule(i, read.column, False, None, expression)))
                continue
            loader = self.tx.get_loader(self.load_oids[i], pq.Format.BINARY)
            base = col.type
            direct = (
                read.raw_oid is not None  # vectors (a vector domain's bytes are the vector's)
                or read.cast is None  # the bare column, decoded by its own type's loader
                # a domain cast to its scalar base type: the wire bytes are the base type's (not
                # so for arrays: their bytes name the element type, a domain in posint[])
                or (col.declared_oid != base.oid and base.category != "A"
                    and self.load_oids[i] == base.oid)
                # col::text of a type whose binary form is its text
                or (read.load_type == "text" and base.category != "A" and (
                    (base.schema == "pg_catalog" and base.name in _TEXT_LIKE)
                    or base.typtype == "e" or (base.extension == "citext" and base.name == "citext")))
            )
            rules.append((pos, _ReadRule(i, read.column, direct, loader, expression)))
        if missing:
            self.missing_columns[rel.oid] = missing
        else:
            self.missing_columns.pop(rel.oid, None)
        if mismatched:
            self.mismatched.add(rel.oid)
        else:
            self.mismatched.discard(rel.oid)
        return rules

    def knows(self, relation: int) -> bool:
        return relation in self._rules

    def decode(self, relation: int, data: TupleData) -> list:
        """A row (list in plan.reads order); conversions by PostgreSQL wait for :meth:`resolve`."""
        rel = self.relations[relation]
        row: list = [None] * len(self.plan.reads)
        for pos, rule in self._rules[relation]:
            if pos is None:
                row[rule.read_index] = UNCHANGED
                continue
            kind, value = data[pos]
            if kind == "n":
                continue
            if kind == "u":
                row[rule.read_index] = UNCHANGED
            elif kind == "b" and rule.direct:
                row[rule.read_index] = rule.loader.load(value)
            else:
                fmt = 1 if kind == "b" else 0
                self._pending.append(_Pending(row, rule.read_index, rule.expression,
                                              rel.columns[pos].type_oid, fmt, bytes(value)))
                row[rule.read_index] = self._pending[-1]
        return row

    def resolve(self) -> None:
        """Convert every pending value with PostgreSQL, in as few statements as possible."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.MAX_PARAMS):
            chunk = pending[start:start + self.MAX_PARAMS]
            select_list = ", ".join(f"${n + 1}{p.expression}" for n, p in enumerate(chunk))
            query = f"SELECT {select_list}".encode()
            with self.conn.lock:
                result = self.conn.pgconn.exec_params(
                    query, [p.data for p in chunk], [p.type_oid for p in chunk], [p.fmt for p in chunk],
                    result_format=1)
            if result.status != pq.ExecStatus.TUPLES_OK and self.conn.pgconn.status != pq.ConnStatus.OK:
                raise ConnectionLost("The connection to PostgreSQL broke while converting values.")
            if result.status != pq.ExecStatus.TUPLES_OK:
                message = redaction.redact((result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
                                            or result.error_message or b"").decode("utf-8", "replace"))
                raise SourceError(f"PostgreSQL could not convert changed values for the plan: {message}",
                                  fix="rerun with --debug and report it (the column types are shown).")
            for n, p in enumerate(chunk):
                value = result.get_value(0, n)
                loader = self.tx.get_loader(self.load_oids[p.index], pq.Format.BINARY)
                p.row[p.index] = None if value is None else loader.load(value)
