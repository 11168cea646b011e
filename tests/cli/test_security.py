"""Secrets never leak; identifiers cannot inject SQL; a SELECT-only role is enough."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import migrate_args
from pg2qdrant.localpg import free_port

PG_SECRET = "pg-Secr3t-9f2c"
API_SECRET = "api-Secr3t-77aa1"
ENV_SECRET = "env-Secr3t-1b0d"


def run(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pg2qdrant", *args], capture_output=True, text=True, env=env)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PG_SECRET, API_SECRET, ENV_SECRET):
            assert secret not in text, f"secret {secret!r} leaked"


@pytest.fixture
def secret_role(db):
    db.execute(f"CREATE ROLE leaky LOGIN PASSWORD '{PG_SECRET}'")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, title text, v vector(3)); "
               "INSERT INTO t SELECT i, 'x', '[1,2,3]' FROM generate_series(1, 30) i")
    db.execute("GRANT SELECT ON t TO leaky")
    yield db
    db.execute("DROP OWNED BY leaky; DROP ROLE leaky")


def test_secrets_absent_from_every_failure_output_and_debug_trace(secret_role, tmp_path):
    db = secret_role
    port = db.server.port
    cases = [
        # wrong password in the URL
        ["migrate", "--pg.url", f"postgresql://leaky:{PG_SECRET}x@127.0.0.1:{port}/{db.name}", "--pg.table", "t",
         "--qdrant.collection", "c", "--qdrant.url", f"local:{tmp_path}/q1", "--debug"],
        # unreachable PostgreSQL, password in the URL
        ["migrate", "--pg.url", f"postgresql://leaky:{PG_SECRET}@127.0.0.1:{free_port()}/db", "--pg.table", "t",
         "--qdrant.collection", "c", "--debug"],
        # malformed URL with a password
        ["migrate", "--pg.url", f"postgresql://leaky:{PG_SECRET}@127.0.0.1:notaport/db", "--pg.table", "t",
         "--qdrant.collection", "c", "--debug"],
        # unreachable Qdrant with an API key
        ["migrate", "--pg.url", f"postgresql://leaky:{PG_SECRET}@127.0.0.1:{port}/{db.name}", "--pg.table", "t",
         "--qdrant.collection", "c", "--qdrant.url", f"http://127.0.0.1:{free_port()}",
         "--qdrant.api-key", API_SECRET, "--debug"],
        # keyword connection string with a password
        ["inspect", "--pg.url", f"host=127.0.0.1 port={free_port()} user=leaky password={PG_SECRET} dbname=x",
         "--pg.table", "t", "--debug"],
    ]
    for args in cases:
        proc = run(args, {"PGPASSWORD": ENV_SECRET})
        assert proc.returncode in (1, 2), (args, proc.stderr)
        assert "Traceback" not in proc.stderr.split("error:")[-1]  # the final message is not a traceback
        assert_no_secret(proc.stdout, proc.stderr)
    # PGPASSWORD supplying a wrong password
    proc = run(["migrate", "--pg.url", f"postgresql://leaky@127.0.0.1:{port}/{db.name}", "--pg.table", "t",
                "--qdrant.collection", "c", "--qdrant.url", f"local:{tmp_path}/q2", "--debug"],
               {"PGPASSWORD": ENV_SECRET})
    assert proc.returncode == 2
    assert_no_secret(proc.stdout, proc.stderr)


def test_secrets_absent_from_a_successful_run_its_progress_and_its_saved_state(secret_role, tmp_path):
    db = secret_role
    state = tmp_path / "state.json"
    proc = run(["migrate", "--pg.url", f"postgresql://leaky:{PG_SECRET}@127.0.0.1:{db.server.port}/{db.name}",
                "--pg.table", "t", "--qdrant.collection", "c", "--qdrant.url", f"local:{tmp_path}/q",
                "--qdrant.api-key", API_SECRET, "--migration.state-file", str(state), "--debug"])
    assert proc.returncode == 0, proc.stderr
    assert_no_secret(proc.stdout, proc.stderr, state.read_text())
    # The state kept in the target too (second run with the default store).
    proc = run(["migrate", "--pg.url", f"postgresql://leaky:{PG_SECRET}@127.0.0.1:{db.server.port}/{db.name}",
                "--pg.table", "t", "--qdrant.collection", "c2", "--qdrant.url", f"local:{tmp_path}/q"])
    assert proc.returncode == 0, proc.stderr
    from qdrant_client import QdrantClient
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        records, _ = client.scroll("_pg2qdrant_state", limit=100, with_payload=True)
        assert records
        assert_no_secret(json.dumps([r.payload for r in records]))
    finally:
        client.close()


def test_select_only_role_is_enough(secret_role, tmp_path, cli, open_qdrant):
    db = secret_role
    url = f"postgresql://leaky:{PG_SECRET}@127.0.0.1:{db.server.port}/{db.name}"
    r = cli("migrate", "--pg.url", url, "--pg.table", "t", "--qdrant.collection", "c",
            "--qdrant.url", f"local:{tmp_path}", "--migration.num-workers", "2")
    assert r.exit_code == 0, r.output
    assert open_qdrant(tmp_path).count("c").count == 30


def test_role_without_select_gets_the_grant_to_ask_for(db, tmp_path, cli):
    db.execute("CREATE ROLE nosel LOGIN PASSWORD 'nosel-pw'; CREATE TABLE t (id int PRIMARY KEY, v vector(2))")
    try:
        r = cli("migrate", "--pg.url", f"postgresql://nosel:nosel-pw@127.0.0.1:{db.server.port}/{db.name}",
                "--pg.table", "t", "--qdrant.collection", "c", "--qdrant.url", f"local:{tmp_path}")
        assert r.exit_code == 2, r.output
        assert "grant this role SELECT" in r.stderr
    finally:
        db.execute("DROP OWNED BY nosel; DROP ROLE nosel")


HOSTILE_TABLE = 'evil"; DROP TABLE victim; --'
HOSTILE_COLUMN = "ti\"tle'); DROP TABLE victim; --"


def test_hostile_identifiers_are_quoted_not_executed(db, qdrant_path, cli, open_qdrant):
    db.execute("CREATE TABLE victim (id int)")
    quoted_table = '"' + HOSTILE_TABLE.replace('"', '""') + '"'
    quoted_column = '"' + HOSTILE_COLUMN.replace('"', '""') + '"'
    db.execute(f"CREATE TABLE {quoted_table} (id int PRIMARY KEY, {quoted_column} text, v vector(2)); "
               f"INSERT INTO {quoted_table} VALUES (1, 'payload', '[1,1]')")
    r = cli(*migrate_args(db, quoted_table, qdrant_path), "--pg.columns", f"id,{HOSTILE_COLUMN},v")
    assert r.exit_code == 0, r.output
    point = open_qdrant(qdrant_path).retrieve("c", [1])[0]
    assert point.payload == {"id": 1, HOSTILE_COLUMN: "payload"}
    # Injection attempts through the flags are just names that do not exist.
    for table in ("victim; DROP TABLE victim", "t' OR '1'='1", 'victim"; DROP TABLE victim; --'):
        r = cli(*migrate_args(db, table, qdrant_path, "x"))
        assert r.exit_code == 2 and "was not found" in r.stderr, r.output
    r = cli(*migrate_args(db, quoted_table, qdrant_path, "y"), "--pg.columns", "id, v); DROP TABLE victim; --")
    assert r.exit_code == 2 and "not in" in r.stderr
    assert db.execute("SELECT count(*) FROM victim") == [(0,)]  # still there
