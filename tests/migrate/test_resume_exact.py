"""Saved progress only counts for the collection it describes; a copy says whether it is exact.

Resume into a recreated collection, a state file reused against another target or
collection, the final count of a resumed run, and points left without a row by a re-copy
(--migration.delete-orphans).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_resume import edge_args, spawn

from conftest import migrate_args
from helpers import (
    assert_collection_equals_table,
    assert_local_collection_equals_table,
    create_items_table,
    source_plan,
)
from pg2qdrant.core.options import CollectionOptions
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.checkpoints import state_id_for
from pg2qdrant.destination.edge import EdgeTarget
from pg2qdrant.destination.qdrant import QdrantTarget

ROWS = 8000


def _kill_mid_copy(db, edge_dir, ranges_done: int = 3) -> dict:
    """Start an Edge copy of 16 ranges, SIGKILL it once ``ranges_done`` are saved; the saved record."""
    create_items_table(db, ROWS)
    args = edge_args(db, "t", edge_dir, "--migration.range-rows", "500", "--migration.num-workers", "1",
                     "-b", "50", "--migration.batch-delay", "40")
    state_file = edge_dir / "_pg2qdrant_state.json"  # the Edge target keeps its records in its folder
    proc = spawn(args)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            records = list(json.loads(state_file.read_text()).values()) if state_file.exists() else []
            if records and len(records[0]["done"]) >= ranges_done:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                assert records[0]["status"] == "running" and len(records[0]["done"]) < len(records[0]["ranges"])
                return records[0]
            time.sleep(0.02)
        raise AssertionError(f"not killed mid-copy: {proc.communicate()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _rerun(db, edge_dir, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pg2qdrant", *edge_args(db, "t", edge_dir, *extra)],
                          capture_output=True, text=True)


def _assert_edge_equals_table(db, edge_dir) -> int:
    target = EdgeTarget(parse_target_url(f"edge:{edge_dir}"))
    try:
        return assert_collection_equals_table(db.url, "t", target, float_ulps=2)
    finally:
        target.close()


def test_resume_into_recreated_collection_copies_everything(db, tmp_path):
    _kill_mid_copy(db, tmp_path)
    shutil.rmtree(tmp_path / "c")  # the collection is deleted; its saved progress stays
    r = _rerun(db, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "does not exist" in r.stderr and "starting over" in r.stderr, r.stderr
    assert "Resuming" not in r.stderr and "Created collection" in r.stderr
    assert _assert_edge_equals_table(db, tmp_path) == ROWS


def test_completed_state_of_a_deleted_collection_is_not_complete(db, tmp_path, cli):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(2)); INSERT INTO t SELECT i, '[1,1]' "
               "FROM generate_series(1, 50) i")
    assert cli(*edge_args(db, "t", tmp_path)).exit_code == 0
    shutil.rmtree(tmp_path / "c")
    r = cli(*edge_args(db, "t", tmp_path))
    assert r.exit_code == 0, r.output
    assert "already complete" not in r.stderr and "starting over" in r.stderr
    target = EdgeTarget(parse_target_url(f"edge:{tmp_path}"))
    try:
        assert target.count("c") == 50
    finally:
        target.close()


def _migrate_with_state_file(db, cli, folder, state_file, *extra):
    return cli(*migrate_args(db, "t", folder), "--migration.state-file", str(state_file), *extra)


def test_state_file_reused_for_another_collection_does_not_skip_rows(db, tmp_path, cli):
    """Same target and name, but not the collection the progress describes (recreated by hand)."""
    create_items_table(db, 300)
    folder, state_file = tmp_path / "q", tmp_path / "state.json"
    assert _migrate_with_state_file(db, cli, folder, state_file).exit_code == 0
    target = QdrantTarget(parse_target_url(f"local:{folder}"))
    try:
        target.delete_collection("c")
        target.create_collection(source_plan(db.url, "t").collection_spec(CollectionOptions()))
    finally:
        target.close()
    r = _migrate_with_state_file(db, cli, folder, state_file)
    assert r.exit_code == 0, r.output
    assert "fewer than the 300 rows already copied" in r.stderr and "already complete" not in r.stderr
    assert assert_local_collection_equals_table(db.url, "t", folder) == 300


def test_state_file_reused_for_another_target_does_not_skip_rows(db, tmp_path, cli):
    create_items_table(db, 300)
    state_file = tmp_path / "state.json"
    assert _migrate_with_state_file(db, cli, tmp_path / "a", state_file).exit_code == 0
    r = _migrate_with_state_file(db, cli, tmp_path / "b", state_file)
    assert r.exit_code == 0, r.output
    assert "already complete" not in r.stderr
    assert f"progress of this migration for another target (local:{tmp_path / 'a'})" in r.stderr
    assert assert_local_collection_equals_table(db.url, "t", tmp_path / 'b') == 300
    # Each target keeps its own record in the file: the first one is still complete.
    assert "already complete" in _migrate_with_state_file(db, cli, tmp_path / "a", state_file).stderr


def test_target_identity_names_the_server_not_how_it_is_reached():
    from pg2qdrant.runtime.target import target_identity

    def ident(url: str) -> dict:
        return target_identity(parse_target_url(url))

    assert ident("https://user:secret@Qdrant.Example.com:6333") == ident("http://qdrant.example.com:6333")
    assert "secret" not in json.dumps(ident("https://user:secret@qdrant.example.com:6333"))
    assert ident("http://qdrant.example.com:6333") != ident("http://other.example.com:6333")
    assert ident("http://qdrant.example.com:6333") != ident("http://qdrant.example.com:6333/tenant")
    assert ident("local:./a/../b") == ident("local:b")
    source = {"system_identifier": "1", "database": "d", "table": "public.t"}
    assert (state_id_for(source, "c", "f", ident("http://a:6333"))
            != state_id_for(source, "c", "f", ident("http://b:6333")))


def test_resumed_run_still_compares_final_count(db, tmp_path):
    record = _kill_mid_copy(db, tmp_path)
    assert "0" in record["done"]  # the first key range (no lower bound) is copied
    db.execute("INSERT INTO t (id, v) SELECT -id, v FROM t WHERE id <= 10")  # into that finished range
    r = _rerun(db, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"holds {ROWS:,} points for {ROWS + 10:,} rows in the snapshot: 10 rows have no point" in r.stderr
    assert "--migration.restart" in r.stderr and "Traceback" not in r.stderr


def test_recopy_warns_about_points_without_rows(db, qdrant_path, cli):
    create_items_table(db, 100)
    assert cli(*migrate_args(db, "t", qdrant_path)).exit_code == 0
    db.execute("DELETE FROM t WHERE id > 90")
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.restart")
    assert r.exit_code == 0, r.output
    assert "10 point(s) have no row in the table" in r.stderr and "--migration.delete-orphans" in r.stderr
    assert "verdict" in r.stdout and "NOT an exact copy: 10 point(s) have no row" in r.stdout


def test_delete_orphans_makes_the_copy_exact(db, qdrant_path, cli):
    create_items_table(db, 100)
    assert cli(*migrate_args(db, "t", qdrant_path)).exit_code == 0
    db.execute("DELETE FROM t WHERE id > 90")
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.restart", "--migration.delete-orphans")
    assert r.exit_code == 0, r.output
    assert "Deleted 10 point(s)" in r.stderr and "not an exact copy" not in r.stderr
    assert "the collection equals the table" in r.stdout
    assert assert_local_collection_equals_table(db.url, "t", qdrant_path) == 90


def test_delete_orphans_after_a_complete_migration(db, qdrant_path, cli):
    """The warning's advice works as given: the same command plus the flag, without re-copying."""
    create_items_table(db, 100)
    assert cli(*migrate_args(db, "t", qdrant_path)).exit_code == 0
    db.execute("DELETE FROM t WHERE id <= 5")
    r = cli(*migrate_args(db, "t", qdrant_path))
    assert "already complete" in r.stderr and "5 point(s) have no row" in r.stderr
    r = cli(*migrate_args(db, "t", qdrant_path), "--migration.delete-orphans")
    assert r.exit_code == 0, r.output
    assert "Deleted 5 point(s)" in r.stderr and "the collection equals the table" in r.stdout
    assert assert_local_collection_equals_table(db.url, "t", qdrant_path) == 95


def test_delete_orphans_on_a_resumed_run_read_in_two_snapshots(db, tmp_path):
    """Rows deleted between the runs from a range the first run finished: their points go too."""
    record = _kill_mid_copy(db, tmp_path)
    assert "0" in record["done"]
    db.execute("DELETE FROM t WHERE id <= 7")
    r = _rerun(db, tmp_path, "--migration.delete-orphans")
    assert r.returncode == 0, r.stderr
    assert "Deleted 7 point(s)" in r.stderr and "the collection equals the table" in r.stdout
    assert _assert_edge_equals_table(db, tmp_path) == ROWS - 7


@pytest.mark.parametrize("resumed", [False, True])
def test_summary_verdict_says_whether_the_collection_equals_the_table(db, tmp_path, resumed):
    if resumed:
        _kill_mid_copy(db, tmp_path)
    else:
        create_items_table(db, ROWS)
    r = _rerun(db, tmp_path)
    assert r.returncode == 0, r.stderr
    verdict = next(line for line in r.stdout.splitlines() if line.startswith("│ verdict "))
    if resumed:  # rows copied by the killed run were read in an older snapshot: only verify can vouch
        assert "as many points as rows" in verdict and "pg2qdrant verify" in verdict
    else:
        assert "the collection equals the table: one point per row, no other point" in verdict
