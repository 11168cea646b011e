"""pgvector's exact top-k search: the ground truth verify's search-parity check compares
Qdrant's results with. Index scans are switched off for the duration (:func:`exact_scans`), so
the top-k is exact whatever indexes the table has. psycopg's errors leave as SourceError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from pg2qdrant.core.errors import SourceError
from pg2qdrant.source.catalog import ident
from pg2qdrant.source.where import where_sql

_INDEX_SCANS = ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan")


@contextmanager
def _as_source_error() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise SourceError(str(exc)) from exc


@contextmanager
def exact_scans(conn: psycopg.Connection) -> Iterator[None]:
    """Index scans off inside a savepoint of the caller's transaction (the savepoint also undoes the SETs)."""
    with _as_source_error():
        conn.execute("SAVEPOINT pg2qdrant_verify")
        try:
            for setting in _INDEX_SCANS:
                conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))
            yield
        finally:
            conn.execute("ROLLBACK TO SAVEPOINT pg2qdrant_verify")
            conn.execute("RELEASE SAVEPOINT pg2qdrant_verify")


@contextmanager
def keyword_savepoint(conn: psycopg.Connection) -> Iterator[None]:
    """The keyword check's reads inside a savepoint: a failed one leaves the snapshot's transaction usable."""
    with _as_source_error():
        conn.execute("SAVEPOINT pg2qdrant_keywords")
    try:
        yield
    except BaseException:
        with _as_source_error():
            conn.execute("ROLLBACK TO SAVEPOINT pg2qdrant_keywords")
        raise
    finally:
        with _as_source_error():
            conn.execute("RELEASE SAVEPOINT pg2qdrant_keywords")


def pgvector_schema(conn: psycopg.Connection) -> str:
    """The schema the vector extension is installed in (its operators and types live there)."""
    with _as_source_error():
        row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = "
                           "e.extnamespace WHERE e.extname = 'vector'").fetchone()
    return row[0] if row else "public"


class ExactSearch:
    """The ``k`` rows nearest to a query literal by one vector column: (key values, distance).

    ``operator`` is pgvector's distance operator (e.g. ``<=>``); the query literal is cast to
    the column's own type: ``cast_type`` (schema, name), a None schema meaning pgvector's, or
    ``bit(bits)`` without it.
    """

    def __init__(self, conn: psycopg.Connection, plan, read_index: int, operator: str, k: int, *,
                 cast_type: tuple[str | None, str] | None = None, bits: int | None = None):
        self.conn = conn
        self.nkeys = len(plan.key.read_indexes)
        schema = pgvector_schema(conn)
        cast = sql.SQL("bit({})").format(sql.SQL(str(int(bits or 0)))) if cast_type is None \
            else sql.Identifier(cast_type[0] or schema, cast_type[1])
        keys = sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes)
        column = sql.SQL(plan.reads[read_index].sql)
        self.query = sql.SQL("SELECT {keys}, {col} OPERATOR({schema}.{op}) %s::{cast} FROM {table} "
                             "WHERE {col} IS NOT NULL{filter} ORDER BY {pos} LIMIT {k}").format(
            filter=sql.SQL(" AND ") + where_sql(plan) if plan.where else sql.SQL(""),
            keys=keys, col=column, schema=sql.Identifier(schema), op=sql.SQL(operator), cast=cast,
            table=ident(plan.table), pos=sql.SQL(str(self.nkeys + 1)), k=sql.Literal(k))

    def top_k(self, literal: str) -> list[tuple[tuple, float]]:
        """(key values in plan.key order, distance) of the nearest rows, nearest first."""
        with _as_source_error(), self.conn.cursor(binary=True) as cur:
            rows = cur.execute(self.query, (literal,)).fetchall()
        return [(tuple(r[:self.nkeys]), float(r[self.nkeys])) for r in rows]

    def uses_index(self, literal: str) -> bool:
        """pgvector's plan for this query still reads an index (its results may then be approximate)."""
        with _as_source_error():
            plan: Any = self.conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + self.query, (literal,)).fetchone()[0]
        text = json.dumps(plan)
        return "Index Scan" in text or "Index Only Scan" in text or "Bitmap" in text


# ---------------------------------------------------------------------------------------
# Full-text search: verify's keyword check (PostgreSQL's ranking against Qdrant's BM25)
# ---------------------------------------------------------------------------------------

TEXT_SAMPLE_ROWS = 2_000  # texts read to pick keyword rows from (a repeatable sample on larger tables)
TEXT_PREFIX_CHARS = 1_000  # keywords come from the start of a long text


def text_search_config(conn: psycopg.Connection, language: str) -> str:
    """PostgreSQL's text search configuration named like ``language`` (english, german...), else 'simple'."""
    with _as_source_error():
        row = conn.execute("SELECT c.cfgname FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace "
                           "WHERE n.nspname = 'pg_catalog' AND c.cfgname = lower(%s)", (language,)).fetchone()
    return row[0] if row else "simple"


def tsvector_column(conn: psycopg.Connection, table, text_column: str) -> tuple[str, str] | None:
    """The table's own tsvector column for ``text_column``: (column, its text search configuration).

    A generated tsvector column whose expression reads ``text_column`` (LlamaIndex's hybrid
    ``text_search_tsv`` is ``to_tsvector('english', text)``); its configuration is the one the
    expression names (or, naming none, the session's default_text_search_config)."""
    with _as_source_error():
        rows = conn.execute(
            "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass AND a.attgenerated = 's' AND NOT a.attisdropped "
            "AND a.atttypid = 'tsvector'::regtype AND %s = ANY(ARRAY(SELECT dep.attname FROM pg_depend p "
            "JOIN pg_attribute dep ON dep.attrelid = p.refobjid AND dep.attnum = p.refobjsubid "
            "WHERE p.classid = 'pg_attrdef'::regclass AND p.objid = d.oid AND p.refobjid = a.attrelid)::text[]) "
            "ORDER BY a.attnum", (ident(table).as_string(conn), text_column)).fetchall()
    if not rows:
        return None
    column, expression = rows[0]
    named = expression.split("'", 2)
    if len(named) == 3 and named[2].startswith("::regconfig"):
        return column, named[1]
    with _as_source_error():  # to_tsvector(text): the configuration the session's default names
        return column, conn.execute("SHOW default_text_search_config").fetchone()[0]


def sample_texts(conn: psycopg.Connection, plan, read_index: int, estimated_rows: int, seed: int) -> list[str]:
    """Up to TEXT_SAMPLE_ROWS texts of the column (non-empty, their first TEXT_PREFIX_CHARS characters):
    all rows' on a small table, else a repeatable BERNOULLI sample (``random()`` on a view)."""
    column = sql.SQL(plan.reads[read_index].sql)
    where = [sql.SQL("{} <> ''").format(column)] + ([where_sql(plan)] if plan.where else [])
    sample = sql.SQL("")
    if estimated_rows > TEXT_SAMPLE_ROWS:
        percent = min(100.0, 200.0 * TEXT_SAMPLE_ROWS / estimated_rows)
        if plan.table.relkind in ("v", "f"):
            with _as_source_error():
                conn.execute("SELECT setseed(%s)", (seed % 2**31 / 2**31,))
            where.append(sql.SQL("random() < {}").format(sql.Literal(percent / 100)))
        else:
            sample = sql.SQL(" TABLESAMPLE BERNOULLI ({}) REPEATABLE ({})").format(sql.Literal(percent),
                                                                                    sql.Literal(seed))
    query = sql.SQL("SELECT left({col}::text, {chars}) FROM {table}{sample} WHERE {where} LIMIT {n}").format(
        col=column, chars=sql.Literal(TEXT_PREFIX_CHARS), table=ident(plan.table), sample=sample,
        where=sql.SQL(" AND ").join(where), n=sql.Literal(TEXT_SAMPLE_ROWS))
    with _as_source_error():
        return [r[0] for r in conn.execute(query).fetchall()]


def kept_words(conn: psycopg.Connection, config: str, texts: list[str]) -> list[list[str]]:
    """Per text, its words that PostgreSQL's parser and ``config`` keep (plain words, no stopword), in order."""
    if not texts:
        return []
    with _as_source_error():
        rows = conn.execute(
            "SELECT ARRAY(SELECT d.token FROM ts_debug(%s::regconfig, t.text) d WHERE d.alias IN "
            "('asciiword', 'word') AND d.lexemes <> '{}') FROM unnest(%s::text[]) WITH ORDINALITY AS t(text, i) "
            "ORDER BY t.i", (config, texts)).fetchall()
    return [list(r[0]) for r in rows]


TIE_CAP = 1000  # rows kept per keyword query, ties at the k-th rank included


def keyword_top_k(conn: psycopg.Connection, plan, text_read_index: int, tsvector: str | None, config: str,
                  queries: list[str], k: int) -> list[list[tuple[tuple, float]]]:
    """PostgreSQL's full-text top-k of each query: (key values in plan.key order, ts_rank_cd), best first,
    with every row tied with the k-th (``rank()``, up to TIE_CAP rows): which of equally ranked rows come
    first is arbitrary on both sides, so a comparison must take any of them.

    ``ts_rank_cd`` of the table's tsvector column (or of ``to_tsvector(config, text)``) against
    ``plainto_tsquery(config, query)``; all queries in one scan, so a table without a tsvector
    column parses each text once, not once per query."""
    if not queries:
        return []
    nkeys = len(plan.key.read_indexes)
    document = sql.Identifier(tsvector) if tsvector else sql.SQL("to_tsvector({}::regconfig, {})").format(
        sql.Literal(config), sql.SQL(plan.reads[text_read_index].sql))
    rank = sql.SQL("ts_rank_cd(pg2qdrant_d.pg2qdrant_doc, pg2qdrant_q.pg2qdrant_tsq)")
    first_key = sql.SQL(plan.reads[plan.key.read_indexes[0]].sql)
    query = sql.SQL(
        "SELECT * FROM (SELECT pg2qdrant_q.pg2qdrant_i, {rank} AS pg2qdrant_r, rank() OVER (PARTITION BY "
        "pg2qdrant_q.pg2qdrant_i ORDER BY {rank} DESC) AS pg2qdrant_n, row_number() OVER (PARTITION BY "
        "pg2qdrant_q.pg2qdrant_i ORDER BY {rank} DESC, {first_key}) AS pg2qdrant_m, {keys} FROM {table} "
        "CROSS JOIN LATERAL (SELECT {doc} AS pg2qdrant_doc) pg2qdrant_d "
        "JOIN (SELECT pg2qdrant_i, plainto_tsquery({cfg}::regconfig, pg2qdrant_w) AS pg2qdrant_tsq "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS pg2qdrant_u(pg2qdrant_w, pg2qdrant_i)) pg2qdrant_q "
        "ON pg2qdrant_d.pg2qdrant_doc @@ pg2qdrant_q.pg2qdrant_tsq{filter}) pg2qdrant_s "
        "WHERE pg2qdrant_n <= {k} AND pg2qdrant_m <= {cap} ORDER BY pg2qdrant_i, pg2qdrant_m").format(
        rank=rank, first_key=first_key, keys=sql.SQL(", ").join(sql.SQL(plan.reads[i].sql) for i in plan.key.read_indexes),
        table=ident(plan.table), doc=document, cfg=sql.Literal(config), k=sql.Literal(k), cap=sql.Literal(TIE_CAP),
        filter=sql.SQL(" WHERE ") + where_sql(plan) if plan.where else sql.SQL(""))
    out: list[list[tuple[tuple, float]]] = [[] for _ in queries]
    with _as_source_error(), conn.cursor(binary=True) as cur:
        for row in cur.execute(query, (queries,)):
            out[row[0] - 1].append((tuple(row[4:4 + nkeys]), float(row[1])))
    return out
