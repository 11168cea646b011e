"""Qdrant Cloud's strict mode (issue 21): a collection created under a strict default and an existing
strict collection, over gRPC and REST on the test endpoint (qdrant_endpoint/strict.py enforces it as
Qdrant does). migrate + sync (insert, update, delete, TRUNCATE) + verify complete without one
refused request; a need that cannot be met stops before anything is written, with the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_sync
from qdrant_client import models
from test_sync import create_items, slot_of, wait_caught_up, wait_streaming
from test_sync_server import SyncThread, assert_collection_is_table

from pg2qdrant.sync.options import SyncOptions
from qdrant_endpoint import CREATE_COLLECTION, WRITES, QdrantEndpoint

pytestmark = [pytest.mark.one_server, pytest.mark.timeout(120)]

sdb = test_sync.sdb
STRICT = models.StrictModeConfig(enabled=True, unindexed_filtering_retrieve=False, unindexed_filtering_update=False,
                                 upsert_max_batchsize=16, max_query_limit=50, write_rate_limit=600)
REFUSED = {400, 403, "INVALID_ARGUMENT", "PERMISSION_DENIED"}


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_strict_collection_is_loaded_synced_and_verified_without_a_refused_request(sdb, front, cli):
    with sdb.connect() as conn:
        create_items(conn, 40)
    slot = slot_of(sdb)
    with QdrantEndpoint() as q:
        q.engine.default_strict_mode = STRICT  # like Qdrant Cloud: every new collection (state included)
        sync = SyncThread(sdb, q.target_url(front), SyncOptions(slot=slot), initial_copy=True)
        wait_streaming(sdb.url, slot)
        q.collection("c").limiter.drain()  # the next writes are rate limited: 429 + Retry-After, retried
        with sdb.connect() as conn:
            conn.execute("UPDATE items SET n = n + 1 WHERE id <= 20")
            conn.execute("DELETE FROM items WHERE id > 35")
            conn.execute("TRUNCATE items")  # a delete by an empty filter: no key to index
            conn.execute(test_sync.INSERT, test_sync._row(np.random.default_rng(5), 7))
        wait_caught_up(sdb.url, slot)
        sync.join()
        assert assert_collection_is_table(q, sdb) == 1
        result = cli(*["verify", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", q.target_url(front),
                      "--qdrant.collection", "c", "--qdrant.distance-metric", "v=Euclid"])
        assert result.exit_code == 0, result.stdout
        seen = q.seen()
        assert not [r for r in seen if r.status in REFUSED], [(r.op, r.status) for r in seen if r.status in REFUSED]
        assert max(len(r.ids or ()) for r in seen) <= 16  # upsert_max_batchsize kept (the batch size is 64)
        assert [r for r in seen if r.status in (429, "RESOURCE_EXHAUSTED")]  # rate limited once, then retried


def test_a_strict_collection_that_cannot_get_the_tenant_index_stops_before_writing(sdb, cli):
    with sdb.connect() as conn:
        create_items(conn, 10)
    with QdrantEndpoint() as q:
        client = q.client()
        client.create_collection("c", vectors_config={"v": models.VectorParams(size=512, distance=models.Distance.EUCLID)},
                                 strict_mode_config=models.StrictModeConfig(enabled=True, max_payload_index_count=1))
        client.create_payload_index("c", "n", models.PayloadSchemaType.INTEGER, wait=True)
        q.clear_log()
        result = cli(*["migrate", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", q.grpc_url,
                      "--qdrant.collection", "c", "--qdrant.distance-metric", "v=Euclid",
                      "--qdrant.tenant-column", "title"])
        assert result.exit_code != 0
        assert "'title'" in result.stderr and "max_payload_index_count (1)" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert not [r for r in q.seen() if r.op in WRITES or r.op == CREATE_COLLECTION]  # nothing written


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_a_refused_request_names_the_limit_and_the_flag(front):
    from pg2qdrant.core.errors import InputError
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.destination.qdrant import QdrantTarget
    with QdrantEndpoint() as q:
        client = q.client()
        client.create_collection("s", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT),
                                 strict_mode_config=models.StrictModeConfig(enabled=True, upsert_max_batchsize=1))
        target = QdrantTarget(parse_target_url(q.target_url(front)))
        pts = [models.PointStruct(id=i, vector=[1.0, 0.5]) for i in range(2)]
        with pytest.raises(InputError) as exc:  # sent as is (not through the Writer, which would bound it)
            target.call("write points", lambda: target.client.upsert("s", pts))
        assert "strict mode (upsert_max_batchsize)" in str(exc.value) and "--migration.batch-size" in exc.value.fix
        assert target.points_per_request("s") == 1
        target.close()
