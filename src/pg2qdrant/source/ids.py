"""Every row's key values, read with the plan's key expressions (as the copy decodes them),
one relation that holds rows at a time: what the ID comparisons (verify's ID scan,
--migration.delete-orphans, sync's reconcile and TRUNCATE) stream from the source."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql

from pg2qdrant.core.table import Leaf
from pg2qdrant.source import reader
from pg2qdrant.source.catalog import ident
from pg2qdrant.source.where import where_clause


def _relations(plan) -> list[tuple[str, sql.Composable]]:
    """(name, FROM clause) of every relation holding rows: each partition or inheritance child
    alone (ONLY), or the whole view / foreign table."""
    table = plan.table
    if table.relkind in ("v", "f") or not table.leaves:
        return [(table.display, ident(table))]
    return [(leaf.display, sql.SQL("ONLY ") + ident(leaf)) for leaf in table.leaves]


def relation_names(plan, leaves: Sequence[Leaf] | None = None) -> list[str]:
    """The names of the relations :func:`key_batches` reads, in the order of its tags."""
    return [leaf.display for leaf in leaves] if leaves is not None else [name for name, _ in _relations(plan)]


def key_batches(conn: psycopg.Connection, plan, batch_rows: int, *,
                leaves: Sequence[Leaf] | None = None) -> Iterator[tuple[int, list[tuple]]]:
    """(tag, key rows) in lists of at most ``batch_rows``: each row's key values in plan.key
    order, --pg.where applied. The tag is the relation's index in :func:`relation_names`;
    with ``leaves``, only those relations are read (each alone), tagged by their index there."""
    relations = ([sql.SQL("ONLY ") + ident(leaf) for leaf in leaves] if leaves is not None
                 else [relation for _, relation in _relations(plan)])
    oids = reader.prepare_connection(conn, plan)
    key_oids = [oids[i] for i in plan.key.read_indexes]
    keys = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
    for tag, relation in enumerate(relations):
        query = sql.SQL("COPY (SELECT {k} FROM {r}{w}) TO STDOUT (FORMAT BINARY)").format(
            k=keys, r=relation, w=where_clause(plan))  # --pg.where: only the rows that were copied count
        try:
            for rows in reader.copy_rows(conn, query, key_oids, batch_rows):
                yield tag, rows
        except psycopg.errors.UndefinedTable:
            # Relations named by the caller are read as they are now (sync, outside any snapshot): one
            # dropped since it was listed holds no row any more. In a snapshot it cannot vanish.
            if leaves is None or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raise
