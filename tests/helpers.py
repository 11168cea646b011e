"""Shared test helpers: build tables, compare a whole collection with its source table."""

from __future__ import annotations

import numpy as np
import psycopg

from pg2qdrant.core.plan import build_plan
from pg2qdrant.source import catalog
from pg2qdrant.verify.compare import compare_points
from pg2qdrant.verify.source_rows import fetch_source_batch


def vector_literal(v) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def fill_items(conn: psycopg.Connection, table: str, rows: int, dim: int = 16, *, key: str = "bigint",
               seed: int = 3, start: int = 1) -> None:
    """Rows with a key, a few payload columns (some NULL) and a random vector."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(rows, dim)).astype(np.float32)
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (id, title, n, score, v) FROM STDIN") as copy:
            for i in range(rows):
                k = start + i
                key_value = k if key != "text" else f"key-{k}"
                copy.write_row((key_value, None if k % 10 == 0 else f"title {k}", k * 3,
                                None if k % 7 == 0 else float(k) / 3, vector_literal(vecs[i])))


ITEMS_TABLE = "CREATE TABLE t (id bigint PRIMARY KEY, title text, n int, score float8, v vector(16))"


def create_items_table(db, rows: int) -> None:
    """Table ``t`` (ITEMS_TABLE) with ``rows`` rows from fill_items, analyzed (so ranges are planned)."""
    db.execute(ITEMS_TABLE)
    with db.connect() as conn:
        fill_items(conn, "t", rows)
        conn.execute("ANALYZE t")


def source_plan(url: str, table: str, collection: str = "c", **kwargs):
    with psycopg.connect(url, autocommit=True) as conn:
        server = catalog.server_info(conn)
        info = catalog.describe_table(conn, table)
        return build_plan(info, server, collection=collection, **kwargs)


def assert_local_collection_equals_table(url: str, table: str, folder) -> int:
    """:func:`assert_collection_equals_table` on collection ``c`` of a local-mode folder (opened, then closed)."""
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.qdrant import QdrantTarget
    target = QdrantTarget(parse_target_url(f"local:{folder}"))
    try:
        return assert_collection_equals_table(url, table, target)
    finally:
        target.close()


def assert_collection_equals_table(url: str, table: str, target, collection: str = "c", *, float_ulps: int = 0,
                                  **plan_kwargs) -> int:
    """Every row is a point with the same payload and vectors, and there is no other point."""
    plan = source_plan(url, table, collection, **plan_kwargs)
    with psycopg.connect(url, autocommit=True) as conn:
        expected = fetch_source_batch(conn, plan)
    ids = list(expected.ids)
    records = []
    for start in range(0, len(ids), 500):
        records.extend(target.retrieve(collection, ids[start:start + 500]))
    mismatches = compare_points(plan, expected, records, float_ulps=float_ulps)
    assert not mismatches, [m.describe() for m in mismatches[:5]]
    count = target.count(collection)
    assert count == len(ids), f"{count} points for {len(ids)} rows"
    return count


class EndpointReader:
    """A test endpoint's collections read from its engine (not through gRPC or REST), as the
    ``target`` of assert_collection_equals_table: what the server stored, not what a client decodes."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def retrieve(self, collection: str, ids: list, *, with_vectors: bool = True) -> list:
        from pg2qdrant.core.mapping.ids import normalize_point_id
        points = {normalize_point_id(k): p for k, p in self.endpoint.points(collection).items()}
        return [points[normalize_point_id(i)] for i in ids if normalize_point_id(i) in points]

    def count(self, collection: str) -> int:
        return len(self.endpoint.points(collection))


def endpoint_state_records(endpoint, collection: str = "_pg2qdrant_state") -> list[dict]:
    """The JSON records pg2qdrant keeps in the target's state collection, read from the engine."""
    import json
    if collection not in endpoint.engine.list_collections():
        return []
    return [json.loads(p.payload["record"]) for p in endpoint.points(collection).values()]


def drop_database_slots(db) -> None:
    """Drop every replication slot of ``db`` (a slot blocks DROP DATABASE): an active one's
    walsender is terminated first; up to 10 s."""
    import time
    with psycopg.connect(db.server.url(), autocommit=True) as conn:
        for _ in range(100):
            rows = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                                (db.name,)).fetchall()
            if not rows:
                break
            for name, pid in rows:
                if pid:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                else:
                    try:
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    except psycopg.Error:
                        pass
            time.sleep(0.1)
