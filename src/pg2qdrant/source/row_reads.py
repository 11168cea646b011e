"""Whole rows read with the plan's own SELECT and loaders (as the copy reads them), for the
checks that compare them with their points: every row, a repeatable random sample, or the
rows of given keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql

from pg2qdrant.core.table import Leaf
from pg2qdrant.source import lookups, reader
from pg2qdrant.source.catalog import ident


def row_batches(conn: psycopg.Connection, plan, batch_rows: int, *, sample_percent: float | None = None,
                seed: int = 0, leaf: Leaf | None = None) -> Iterator[list[tuple]]:
    """Every row, or each row kept with probability ``sample_percent`` % (reproducible with ``seed``);
    of one ``leaf`` only (a partition sync saw attached) when given."""
    oids = reader.prepare_connection(conn, plan)
    where = tablesample = None
    if sample_percent is not None:
        if plan.table.relkind in ("v", "f"):  # TABLESAMPLE needs a table or materialized view
            conn.execute("SELECT setseed(%s)", (seed / 2**31,))
            where = sql.SQL("random() < {}").format(sql.Literal(sample_percent / 100))
        else:
            tablesample = sql.SQL("BERNOULLI ({}) REPEATABLE ({})").format(sql.Literal(sample_percent),
                                                                          sql.Literal(seed))
    relation = None if leaf is None else sql.SQL("ONLY ") + ident(leaf)
    query = reader.copy_query(conn, plan, where, tablesample=tablesample, relation=relation)
    yield from reader.copy_rows(conn, query, oids, batch_rows)


def rows_by_key(conn: psycopg.Connection, plan, keys: Sequence[tuple]) -> list[tuple]:
    """The current rows with these key values (plan.key order)."""
    return lookups.fetch_rows_by_key(conn, plan, reader.prepare_connection(conn, plan), list(keys))
