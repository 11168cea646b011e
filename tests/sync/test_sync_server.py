"""`pg2qdrant sync` against a server: CDC, poll and reconcile over gRPC (and CDC over REST)
on the test endpoint (tests/qdrant_endpoint: Qdrant's APIs over Qdrant Edge, faults in front).

The random workload of test_sync (inserts, payload-only updates whose 512-d vector stays
unchanged TOAST, vector updates, deletes, key changes, a TRUNCATE + reload) runs while
sync applies it; afterwards the collection, read from the engine itself, must equal the
table exactly. Faults during apply: transient ones are retried without losing or
repeating a change; a permanent one is never acknowledged to PostgreSQL, so a restart
applies it. Vectors use Euclid distance so they compare bit-exact (Qdrant normalises
Cosine vectors on write).
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import test_sync
from qdrant_client import models
from test_sync import Workload, create_items, slot_of, wait_caught_up, wait_streaming

from helpers import EndpointReader, assert_collection_equals_table
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.source.lsn import parse_lsn
from pg2qdrant.sync import run_sync
from pg2qdrant.sync.options import SyncOptions, SyncStats
from pg2qdrant.ui import UI
from qdrant_endpoint import (
    BATCH,
    Drop,
    QdrantEndpoint,
    grpc_status,
    service_unavailable,
    wrong_input,
)

pytestmark = pytest.mark.one_server  # see conftest.pytest_collection_modifyitems

sdb = test_sync.sdb  # the test database, its replication slots dropped afterwards
EUCLID = {"v": "Euclid"}


def options(db, url: str) -> MigrationOptions:
    return MigrationOptions(pg_url=db.url, table="items", collection="c", qdrant_url=url, num_workers=1,
                            batch_size=64, distance_overrides=dict(EUCLID))


def assert_collection_is_table(q: QdrantEndpoint, db) -> int:
    """Every row a point with the same payload and bit-exact vectors, no other point (read from the engine)."""
    return assert_collection_equals_table(db.url, "items", EndpointReader(q), distance_overrides=EUCLID)


class SyncThread:
    """run_sync in a thread of this process (the endpoint's process), stopped like SIGTERM stops it."""

    def __init__(self, db, url: str, sync: SyncOptions, **kwargs):
        self.stop, self.stats, self.error = threading.Event(), SyncStats(), None

        def run():
            try:
                run_sync(options(db, url), sync, UI(quiet=True), stop=self.stop, stats=self.stats, **kwargs)
            except BaseException as exc:  # noqa: BLE001  (raised again by join())
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> SyncStats:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.stats


def confirmed_lsn(db, slot: str) -> int:
    return parse_lsn(db.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                                (slot,))[0][0])


@pytest.mark.parametrize("front", ["grpc", "rest"])
def test_cdc_over_the_server_equals_table(sdb, front):
    with sdb.connect() as conn:
        create_items(conn, 150)
    slot = slot_of(sdb)
    workload = Workload(sdb.url, seed=21, last_id=150)
    with QdrantEndpoint() as q:
        sync = SyncThread(sdb, q.target_url(front), SyncOptions(slot=slot), initial_copy=True)
        # The copy reads the slot's snapshot while the workload writes; writing goes on until a payload-only
        # update was applied in place (its TRUNCATE may wait behind the copy, ending 3 s of writes early).
        workload.run(3.0, pending=lambda: sync.stats.partial_updates == 0)
        wait_streaming(sdb.url, slot)
        wait_caught_up(sdb.url, slot)
        stats = sync.join()
        assert set(workload.counts) >= {"insert", "payload", "vector", "delete", "key", "truncate"}
        assert stats.partial_updates > 0  # payload-only updates applied in place, the vector kept
        assert {x.front for x in q.seen(collection="c")} == {front}
        assert q.seen(BATCH, "c")  # changes went through the batch update API
        assert assert_collection_is_table(q, sdb) == len(workload.ids)


TRANSIENT = {
    "grpc-unavailable": ("grpc", grpc_status("UNAVAILABLE", "Socket closed")),
    "grpc-lost-ack": ("grpc", Drop(after_apply=True)),  # applied, answer lost: applied again
    "rest-503": ("rest", service_unavailable()),
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_failures_during_apply_are_retried_without_losing_or_repeating(sdb, name):
    front, action = TRANSIENT[name]
    with sdb.connect() as conn:
        create_items(conn, 100, seed=2)
    slot = slot_of(sdb)
    workload = Workload(sdb.url, seed=22, last_id=100)
    with QdrantEndpoint() as q:
        sync = SyncThread(sdb, q.target_url(front), SyncOptions(slot=slot), initial_copy=True)
        wait_streaming(sdb.url, slot)
        every_other = itertools.count()
        fault = q.faults.add(BATCH, collection="c", times=4, action=action,
                             when=lambda req: next(every_other) % 2 == 0)
        # Until the four faults fired: a slow apply folds more transactions into each request, so 2.5 s
        # of writes may make fewer than the eight batch requests they need.
        workload.run(2.5, pending=lambda: fault.fired < 4)
        wait_caught_up(sdb.url, slot)
        stats = sync.join()
        assert fault.fired == 4
        assert stats.reconnects == 0  # retried in place, the stream kept going
        assert assert_collection_is_table(q, sdb) == len(workload.ids)


def test_a_permanent_failure_is_not_acknowledged_and_a_restart_applies_it(sdb):
    with sdb.connect() as conn:
        create_items(conn, 60, seed=3)
    slot = slot_of(sdb)
    with QdrantEndpoint() as q:
        url = q.grpc_url
        sync = SyncThread(sdb, url, SyncOptions(slot=slot), initial_copy=True)
        wait_streaming(sdb.url, slot)
        wait_caught_up(sdb.url, slot)
        fault = q.faults.add(BATCH, collection="c", times=None, action=wrong_input("boom"))
        with sdb.connect() as conn, conn.transaction():
            conn.execute("UPDATE items SET title = 'unapplied' WHERE id = 1")  # vector: unchanged TOAST
            conn.execute("DELETE FROM items WHERE id = 2")
            conn.execute("UPDATE items SET id = 1000 WHERE id = 3")
            conn.execute("INSERT INTO items (id, title, v) SELECT 1001, 'new', v FROM items WHERE id = 4")
        after = parse_lsn(sdb.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
        deadline = time.monotonic() + 60
        while fault.fired < 2 and time.monotonic() < deadline:  # failed, reconnected, resent, failed again
            time.sleep(0.05)
        assert fault.fired >= 2
        assert confirmed_lsn(sdb, slot) < after  # the slot keeps the unapplied transaction
        assert q.points("c")[1].payload["title"] != "unapplied" and 2 in q.points("c")
        stats = sync.join()
        assert stats.reconnects >= 1
        q.faults.clear()
        # A restart (--sync.once: until caught up) gets the transaction again from the slot.
        stats = run_sync(options(sdb, url), SyncOptions(slot=slot, once=True), UI(quiet=True))
        assert stats.changes >= 4
        assert q.points("c")[1].payload["title"] == "unapplied" and 2 not in q.points("c")
        assert assert_collection_is_table(q, sdb) == 60


def test_poll_then_reconcile_over_grpc(sdb, cli):
    with sdb.connect() as conn:
        create_items(conn, 100, seed=6)
    with QdrantEndpoint() as q:
        args = ["sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", q.grpc_url,
                "--qdrant.collection", "c", "--qdrant.distance-metric", "v=euclid", "--migration.num-workers", "1",
                "--sync.mode", "poll", "--sync.updated-column", "updated_at", "--sync.once"]
        r = cli(*args)
        assert r.exit_code == 0, r.output
        assert assert_collection_is_table(q, sdb) == 100
        assert q.info("c").config.hnsw_config.m == 16  # HNSW on (a collection created for loading has m=0)
        workload = Workload(sdb.url, seed=10, last_id=100)  # deletes, key changes, a TRUNCATE
        workload.run(1.5)
        r = cli(*args, "--sync.reconcile")
        assert r.exit_code == 0, r.output
        assert "orphans deleted" in r.stdout
        assert assert_collection_is_table(q, sdb) == len(workload.ids)
        # Reconcile alone writes a point that went missing again, and removes one that should not be there.
        client = q.client(grpc=True)
        client.delete("c", points_selector=[workload.ids[0]])
        copied = q.points("c")[workload.ids[1]]
        client.upsert("c", points=[models.PointStruct(id=999_999, vector=copied.vector, payload=copied.payload)])
        client.close()
        r = cli(*args[:-5], "--sync.mode", "reconcile")
        assert r.exit_code == 0, r.output
        assert assert_collection_is_table(q, sdb) == len(workload.ids)
        assert {x.front for x in q.seen(collection="c")} == {"grpc"}
