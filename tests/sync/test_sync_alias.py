"""`migrate --qdrant.alias NAME --then-sync`: the new version is copied from its slot's snapshot,
catches up with the slot, is verified, the alias switches, and the stream goes on into it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from test_sync import create_items, sdb, slot_of, wait_caught_up  # noqa: F401  (sdb: the fixture)

pytestmark = pytest.mark.one_server


def test_then_sync_switches_after_catch_up_and_verify_then_streams_into_the_new_version(sdb, tmp_path, cli,
                                                                                      open_qdrant):
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    base = ["migrate", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.alias", "items",
            "--migration.num-workers", "1", "--verify.queries", "5"]
    first = cli(*base)
    assert first.exit_code == 0, first.output
    sdb.execute("DELETE FROM items WHERE id <= 5")
    slot = slot_of(sdb)
    synced = cli(*base, "--then-sync", "--sync.slot", slot, "--sync.once")
    assert synced.exit_code == 0, synced.output
    out = synced.output
    assert out.index("Alias 'items' now points to 'items_v2' (was 'items_v1').") < out.index("Resuming from replication slot")
    assert "keeps updating a collection no reader sees" in out
    # the stream's summary names the command that resumes it (rerunning migrate would build items_v3)
    assert f"resume with `pg2qdrant sync --qdrant.collection items_v2 --sync.slot {slot}`" in " ".join(out.split())
    client = open_qdrant(tmp_path / "q")
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"items": "items_v2"}
    assert client.count("items").count == 25 and client.count("items_v1").count == 30
    client.close()
    sdb.execute("DELETE FROM items WHERE id = 6")
    resumed = cli("sync", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.collection",
                  "items_v2", "--migration.num-workers", "1", "--sync.slot", slot, "--sync.once")
    assert resumed.exit_code == 0 and "Resuming from replication slot" in resumed.output, resumed.output
    client = open_qdrant(tmp_path / "q")
    assert client.count("items").count == 24 and client.count("items_v1").count == 30


def test_after_the_switch_changes_stream_into_the_version_the_alias_points_to(sdb, tmp_path, open_qdrant):
    """The stream that goes on after the switch writes the new version: changes made while it runs reach
    the alias (and not the previous version)."""
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 20)
    slot = slot_of(sdb)
    base = [sys.executable, "-m", "pg2qdrant", "migrate", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url",
            url, "--qdrant.alias", "items", "--migration.num-workers", "1", "--verify.queries", "3"]
    assert subprocess.run(base, capture_output=True).returncode == 0
    log = tmp_path / "sync.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*base, "--then-sync", "--sync.slot", slot], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        # the stream after the switch (the catch-up before the gate prints "Streaming changes" too)
        while "Streaming changes" not in log.read_text().partition("now points to 'items_v2'")[2]:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        sdb.execute("DELETE FROM items WHERE id <= 3")
        sdb.execute("UPDATE items SET title = 'after the switch' WHERE id = 10")
        wait_caught_up(sdb.url, slot, proc=proc)
    finally:
        proc.terminate()
        proc.wait(60)
    assert proc.returncode == 0, log.read_text()
    client = open_qdrant(tmp_path / "q")
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"items": "items_v2"}
    assert client.count("items").count == 17 and client.count("items_v1").count == 20
    assert client.retrieve("items", [10])[0].payload["title"] == "after the switch"


def test_a_gate_failed_by_changes_after_the_catch_up_catches_up_again_and_passes(sdb, tmp_path, cli, open_qdrant):
    """--then-sync: rows keep changing while the gate reads them. A row deleted after the catch-up fails the
    first verification; sync catches up once more, the second passes, and the alias switches."""
    from pg2qdrant.migrate import alias as alias_flow
    url = f"local:{tmp_path / 'q'}"
    with sdb.connect() as conn:
        create_items(conn, 30)
    alias_flow.after_copy_hook = lambda plan: sdb.execute("DELETE FROM items WHERE id = 7")
    try:
        r = cli("migrate", "--pg.url", sdb.url, "--pg.table", "items", "--qdrant.url", url, "--qdrant.alias", "items",
                "--migration.num-workers", "1", "--verify.queries", "3", "--then-sync", "--sync.slot", slot_of(sdb),
                "--sync.once")
    finally:
        alias_flow.after_copy_hook = None
    assert r.exit_code == 0, r.output
    assert "catching up again and verifying again (attempt 2 of 3)" in r.output
    client = open_qdrant(tmp_path / "q")
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"items": "items_v1"}
    assert client.count("items").count == 29


def test_a_stop_during_the_catch_up_ends_the_run_before_the_gate_and_drops_the_versions_slot(sdb, tmp_path):
    """SIGTERM / Ctrl-C while the version catches up (sync's stop event set): a stopped catch-up returns like
    one that caught up, so the run must check it: no gate, no switch, exit as interrupted, and the version's
    own slot (a rerun copies into a new version) dropped."""
    from pg2qdrant.cli.migrate import _VersionSync
    from pg2qdrant.core.errors import Interrupted
    from pg2qdrant.core.options import MigrationOptions
    from pg2qdrant.migrate.alias import VersionPlan
    from pg2qdrant.sync.options import SyncOptions
    from pg2qdrant.ui import UI
    with sdb.connect() as conn:
        create_items(conn, 10)
    version = MigrationOptions(pg_url=sdb.url, table="items", collection="items_v1",
                               qdrant_url=f"local:{tmp_path / 'q'}", num_workers=1)
    syncing = _VersionSync(version, SyncOptions(), UI(quiet=True), None, VersionPlan("items", "items_v1", None, False))
    syncing.stop.set()  # as the signal handler does during the catch-up
    slot = SyncOptions().names("items_v1")[0]
    with pytest.raises(Interrupted) as stopped:
        syncing.catch_up(initial_copy=True)
    assert "Stopped before the version was verified: the alias was not switched." in stopped.value.message
    assert f"replication slot {slot!r} was dropped" in stopped.value.message
    assert sdb.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0][0] == 0


def test_a_file_synced_through_one_slot_refuses_an_aliased_entry_with_the_fix(sdb, tmp_path, cli):
    """`migrate --config FILE --then-sync` streams a file's tables through one slot; an entry with qdrant.alias
    needs its own (per version): refused before anything is written, naming --only."""
    with sdb.connect() as conn:
        create_items(conn, 5)
    sdb.execute("CREATE TABLE other (id int PRIMARY KEY, v vector(3))")
    path = tmp_path / "m.toml"
    path.write_text(f'"qdrant.url" = "local:{tmp_path / "q"}"\n\n[[table]]\nname = "items"\n"pg.table" = "items"\n'
                    '"qdrant.alias" = "items"\n\n[[table]]\nname = "other"\n"pg.table" = "other"\n'
                    '"qdrant.collection" = "other"\n')
    r = cli("migrate", "--config", str(path), "--pg.url", sdb.url, "--then-sync", "--sync.once")
    assert r.exit_code == 2, r.output
    assert "qdrant.alias with --then-sync" in r.output and f"--config {path} --only items --then-sync" in r.output
    assert sdb.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s", (sdb.name,))[0][0] == 0
    assert not (tmp_path / "q").exists() or not list((tmp_path / "q").glob("collection/*"))
