"""`migrate --qdrant.alias`: versioned collections behind an alias, switched only after verify.

Against the test endpoint (a server's aliases over gRPC, read by a client over REST
meanwhile) and local mode (qdrant-client keeps aliases too); Edge has none.
"""

from __future__ import annotations

import json
import threading

import pytest
from qdrant_client import models

from helpers import create_items_table
from pg2qdrant.migrate import alias as alias_flow
from qdrant_endpoint import UPDATE_ALIASES, UPSERT, QdrantEndpoint, wrong_input

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
            assert "Removed 'items_v1' (--qdrant.keep-versions 2: kept 'items_v3', 'items_v2')." in third.output
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


def failing_gate(db):
    """after_copy_hook: a row deleted between the copy and the gate (put back by the caller)."""
    return lambda plan: db.execute("DELETE FROM t WHERE id = 5")


def put_back(db) -> None:
    db.execute("INSERT INTO t SELECT 5, 'five', 15, 1.0, v FROM (SELECT v FROM t WHERE id = 6) s")


def test_keep_versions_keeps_the_previously_live_version_not_one_that_failed_verification(db, cli, tmp_path):
    create_items_table(db, 10)
    url = f"local:{tmp_path / 'q'}"
    assert run(cli, db, url).exit_code == 0  # v1 live
    alias_flow.after_copy_hook = failing_gate(db)
    try:
        assert run(cli, db, url).exit_code == 1  # v2 copied, gate failed
    finally:
        alias_flow.after_copy_hook = None
    put_back(db)
    third = run(cli, db, url)  # v3 switches: v1 (the rollback target) is kept, v2 goes
    assert third.exit_code == 0, third.output
    assert "Removed 'items_v2' (--qdrant.keep-versions 2: kept 'items_v3', 'items_v1')." in third.output
    back = cli("alias", "switch", "items", "v1", "--qdrant.url", url)
    assert back.exit_code == 0, back.output


def test_an_unfinished_version_of_another_plan_is_left_and_switching_to_it_needs_force(db, cli):
    create_items_table(db, ROWS)
    with QdrantEndpoint() as q:
        assert run(cli, db, q.grpc_url).exit_code == 0
        q.faults.add(UPSERT, collection="items_v2", times=1, action=wrong_input())
        assert run(cli, db, q.grpc_url, "--migration.max-retries", "0").exit_code != 0  # v2 unfinished
        refused = cli("alias", "switch", "items", "v2", "--qdrant.url", q.url)
        assert refused.exit_code == 2 and "unfinished" in refused.output and "--force" in refused.output
        assert aliases(q) == {"items": "items_v1"}
        # other options: v2 (another plan) is not resumed, v3 is copied, gets HNSW and goes live
        other = run(cli, db, q.grpc_url, "--pg.columns", "id,title,v", "--qdrant.keep-versions", "3")
        assert other.exit_code == 0, other.output
        assert "'items_v2' was made with other options" in other.output
        assert "`pg2qdrant alias drop items items_v2`" in other.output
        assert aliases(q) == {"items": "items_v3"}
        assert q.info("items_v3").config.hnsw_config.m == 16  # (a collection created for loading has m=0)
        assert set(q.points("items_v3")[1].payload) == {"id", "title"}
        forced = cli("alias", "switch", "items", "v2", "--force", "--qdrant.url", q.url)
        assert forced.exit_code == 0, forced.output
        assert aliases(q) == {"items": "items_v2"}


def test_a_plain_collection_created_during_the_copy_is_not_deleted_without_adopt(db, cli):
    create_items_table(db, 5)
    with QdrantEndpoint() as q:
        client = q.client()
        alias_flow.after_copy_hook = lambda plan: client.create_collection(
            "items", vectors_config={"v": models.VectorParams(size=4, distance=models.Distance.DOT)})
        try:
            result = run(cli, db, q.grpc_url)
        finally:
            alias_flow.after_copy_hook = None
        assert result.exit_code == 1 and "--qdrant.adopt" in result.output, result.output
        assert "'items_v1' holds the verified copy" in result.output
        assert "items" in q.engine.list_collections() and "items_v1" in q.engine.list_collections()
        assert aliases(q) == {}


def test_adopt_that_fails_to_create_the_alias_says_how_to_restore_it(db, cli):
    create_items_table(db, 5)
    with QdrantEndpoint() as q:
        plain = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url", q.grpc_url,
                    "--qdrant.collection", "items")
        assert plain.exit_code == 0, plain.output
        q.faults.add(UPDATE_ALIASES, times=1, action=wrong_input("Service internal error: disk full"))
        failed = run(cli, db, q.grpc_url, "--qdrant.adopt")
        assert failed.exit_code == 1, failed.output
        assert "readers find no 'items'" in failed.output and "`pg2qdrant alias switch items items_v1`" in failed.output
        assert "items" not in q.engine.list_collections() and aliases(q) == {}
        restored = cli("alias", "switch", "items", "items_v1", "--qdrant.url", q.url)  # no alias, no collection
        assert restored.exit_code == 0, restored.output
        assert aliases(q) == {"items": "items_v1"}
        # a run killed in that window: the rerun says how to restore readers at once, then copies again
        q.client().update_collection_aliases(change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="items"))])
        again = run(cli, db, q.grpc_url)
        assert again.exit_code == 0, again.output
        assert "readers have no 'items' now: `pg2qdrant alias switch items items_v1` restores it" in again.output
        assert aliases(q) == {"items": "items_v2"}


def test_drop_with_a_state_file_keeps_the_records_of_another_qdrant(db, cli, tmp_path):
    create_items_table(db, 5)
    url, state = f"local:{tmp_path / 'a'}", tmp_path / "state.json"
    for _ in range(2):  # v1, then v2 live
        assert run(cli, db, url, "--migration.state-file", str(state)).exit_code == 0
    data = json.loads(state.read_text())
    mine = [k for k, r in data.items() if r["collection"] == "items_v1"]
    assert len(mine) == 1
    other = {**data[mine[0]], "state_id": "other", "target": {"kind": "local", "path": str(tmp_path / "b")}}
    state.write_text(json.dumps({**data, "other": other}))
    dropped = cli("alias", "drop", "items", "v1", "--qdrant.url", url, "--migration.state-file", str(state))
    assert dropped.exit_code == 0, dropped.output
    left = json.loads(state.read_text())
    assert mine[0] not in left and left["other"]["target"]["path"] == str(tmp_path / "b")


def test_a_copy_that_wrote_nothing_does_not_claim_an_unproven_copy(db, cli, monkeypatch):
    create_items_table(db, 5)
    with QdrantEndpoint() as q:
        failed = run(cli, db, q.grpc_url, "--pg.columns", "id,nope,v")
        assert failed.exit_code != 0
        assert "nothing was written ('items_v1' was not created)" in failed.output, failed.output
        assert "holds the unproven copy" not in failed.output and "alias drop" not in failed.output
    plan = alias_flow.VersionPlan("items", "items_v1", None, False, alias_flow.TargetConfig())

    def unreachable(*args, **kwargs):
        raise OSError("connection refused")
    monkeypatch.setattr(alias_flow, "connect_target", unreachable)
    assert "'items_v1' may hold an unproven copy" in alias_flow.unproven(plan, "The copy did not finish.").message


def test_a_second_run_of_the_same_alias_stops_while_the_first_builds_its_version(db, cli, qdrant_path, open_qdrant):
    """Two runs of one alias at once would pick the same next version: the second (another process, started
    while the first is between its copy and its gate) stops at once and names the holder; once the first has
    switched, the alias is free again."""
    import subprocess
    import sys
    create_items_table(db, ROWS)
    url = f"local:{qdrant_path}"
    command = [sys.executable, "-m", "pg2qdrant", "migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.url",
               url, "--qdrant.alias", "items", "--verify.queries", "3"]
    second: list[subprocess.CompletedProcess] = []
    alias_flow.after_copy_hook = lambda plan: second.append(subprocess.run(command, capture_output=True, text=True))
    try:
        first = run(cli, db, url)
    finally:
        alias_flow.after_copy_hook = None
    assert first.exit_code == 0, first.output
    refused = " ".join((second[0].stdout + second[0].stderr).split())
    assert second[0].returncode == 2, refused
    assert "Another pg2qdrant run (PostgreSQL backend pid" in refused and "alias 'items'" in refused, refused
    after = subprocess.run(command, capture_output=True, text=True)  # the first run released it
    assert after.returncode == 0, after.stdout + after.stderr
    client = open_qdrant(qdrant_path)
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"items": "items_v2"}
