"""`migrate --qdrant.alias`: versioned collections behind an alias, switched only after verify.

Against the test endpoint (a server's aliases over gRPC, read by a client over REST
meanwhile) and local mode (qdrant-client keeps aliases too); Edge has none.
"""

from __future__ import annotations

import threading

import pytest

from helpers import create_items_table
from pg2qdrant.migrate import alias as alias_flow
from qdrant_endpoint import UPSERT, QdrantEndpoint, wrong_input

pytestmark = [pytest.mark.one_server, pytest.mark.timeout(180)]

ROWS = 60


def run(cli, db, url: str, *extra: str):
    return cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", url, "--qdrant.alias", "items",
               "--migration.range-rows", "20", "-b", "20", "--verify.queries", "5", *extra)


class Reader(threading.Thread):
    """Queries the alias over REST until stopped; keeps every failure and every count other than ROWS."""

    def __init__(self, q: QdrantEndpoint):
        super().__init__(daemon=True)
        self.client = q.client(grpc=False, timeout=5)
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.queries = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                count = self.client.count("items", exact=True).count
                hits = self.client.query_points("items", query=[0.1] * 16, using="v", limit=3).points
                if count != ROWS or len(hits) != 3:
                    self.problems.append(f"count {count}, {len(hits)} hits")
            except Exception as exc:  # noqa: BLE001  (every failure is what the test looks for)
                self.problems.append(repr(exc))
            self.queries += 1


def aliases(q: QdrantEndpoint) -> dict[str, str]:
    return dict(q.engine.aliases)


def test_remigrations_switch_only_after_verify_while_readers_query_the_alias(db, cli):
    create_items_table(db, ROWS)
    with QdrantEndpoint() as q:
        first = run(cli, db, q.grpc_url)
        assert first.exit_code == 0, first.output
        assert aliases(q) == {"items": "items_v1"} and "Alias 'items' now points to 'items_v1'." in first.output
        reader = Reader(q)
        reader.start()
        try:
            # re-migrations with other settings: Euclid distance, then fewer payload columns
            second = run(cli, db, q.grpc_url, "--qdrant.distance-metric", "v=euclid")
            assert second.exit_code == 0, second.output
            assert aliases(q) == {"items": "items_v2"}
            assert q.info("items").config.params.vectors["v"].distance.value == "Euclid"
            third = run(cli, db, q.grpc_url, "--pg.columns", "id,title,v")
            assert third.exit_code == 0, third.output
            assert aliases(q) == {"items": "items_v3"}
            assert "Removed 'items_v1' (--qdrant.keep-versions 2)." in third.output
            assert set(q.points("items_v3")[1].payload) == {"id", "title"}
            # a failing verify (a row deleted between the copy and the gate) keeps v3 live
            alias_flow.after_copy_hook = lambda plan: db.execute("DELETE FROM t WHERE id = 5")
            try:
                failed = run(cli, db, q.grpc_url)
            finally:
                alias_flow.after_copy_hook = None
            assert failed.exit_code == 1, failed.output
            assert "Verification of 'items_v4' failed: the alias was not switched." in failed.output
            assert "still points to 'items_v3'; 'items_v4' holds the unproven copy" in failed.output
            assert aliases(q) == {"items": "items_v3"}
            db.execute("INSERT INTO t SELECT 5, 'five', 15, 1.0, v FROM (SELECT v FROM t WHERE id = 6) s")
            # rollback, atomic
            back = cli("alias", "switch", "items", "v2", "--qdrant.url", q.url)
            assert back.exit_code == 0, back.output
            assert aliases(q) == {"items": "items_v2"}
        finally:
            reader.stop.set()
            reader.join(10)
        assert reader.queries > 0 and reader.problems == []
        listed = cli("alias", "list", "items", "--qdrant.url", q.grpc_url)
        assert listed.exit_code == 0, listed.output
        assert "items_v2" in listed.output and "live" in listed.output and "items_v1" not in listed.output
        assert cli("alias", "drop", "items", "items_v2", "--qdrant.url", q.url).exit_code == 2  # the live one
        dropped = cli("alias", "drop", "items", "items_v4", "--qdrant.url", q.url)
        assert dropped.exit_code == 0 and "items_v4" not in q.engine.list_collections()


def test_an_interrupted_copy_is_resumed_in_the_same_version(db, cli):
    create_items_table(db, ROWS)
    with QdrantEndpoint() as q:
        assert run(cli, db, q.grpc_url).exit_code == 0
        q.faults.add(UPSERT, collection="items_v2", times=1, action=wrong_input())
        failed = run(cli, db, q.grpc_url, "--migration.max-retries", "0")
        assert failed.exit_code != 0
        assert "The copy did not finish. The alias 'items' still points to 'items_v1'" in failed.output
        assert aliases(q) == {"items": "items_v1"}
        again = run(cli, db, q.grpc_url)
        assert again.exit_code == 0, again.output
        assert "resuming the unfinished copy into 'items_v2'" in again.output
        assert aliases(q) == {"items": "items_v2"} and "items_v3" not in q.engine.list_collections()


def test_adopt_a_plain_collection_in_local_mode(db, cli, qdrant_path, open_qdrant):
    create_items_table(db, ROWS)
    url = f"local:{qdrant_path}"
    plain = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", url, "--qdrant.collection", "items")
    assert plain.exit_code == 0, plain.output
    refused = run(cli, db, url)
    assert refused.exit_code == 2 and "--qdrant.adopt" in refused.output and "alias of itself" in refused.output
    adopted = run(cli, db, url, "--qdrant.adopt", "--qdrant.collection", "items")
    assert adopted.exit_code == 0, adopted.output
    assert "readers found no 'items' for" in adopted.output
    client = open_qdrant(qdrant_path)
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"items": "items_v1"}
    assert client.count("items").count == ROWS


def test_refusals(db, cli, tmp_path):
    create_items_table(db, 3)
    edge = run(cli, db, f"edge:{tmp_path / 'edge'}")
    assert edge.exit_code == 2 and "Qdrant Edge has no collection aliases" in edge.output
    assert "--qdrant.collection" in edge.output
    both = run(cli, db, ":memory:", "--qdrant.collection", "other")
    assert both.exit_code == 2 and "disagree" in both.output
    memory = run(cli, db, ":memory:")
    assert memory.exit_code == 2 and "local:DIR" in memory.output


def test_a_migration_file_entry_takes_the_alias(db, cli, tmp_path, open_qdrant):
    create_items_table(db, 5)
    path = tmp_path / "m.toml"
    path.write_text(f'"qdrant.url" = "local:{tmp_path / "q"}"\n\n'
                    '[[table]]\n"pg.table" = "t"\n"qdrant.alias" = "items"\n"verify.queries" = 2\n')
    result = cli("migrate", "--config", str(path), "--pg.url", db.url)
    assert result.exit_code == 0, result.output
    client = open_qdrant(tmp_path / "q")
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"items": "items_v1"}
