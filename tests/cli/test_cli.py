"""Command-line compatibility with `qdrant-migration pg` and user-facing errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import migrate_args
from pg2qdrant.cli.common import build_migration_options
from pg2qdrant.cli.migrate import migrate_cmd
from pg2qdrant.core.plan import parse_distance_overrides


def parsed(*args: str):
    """The MigrationOptions the migrate command would build from ``args``."""
    ctx = migrate_cmd.make_context("migrate", list(args))
    return build_migration_options(ctx.params)


BASE = ("--pg.url", "postgresql://u:p@h/db", "--pg.table", "t", "--qdrant.collection", "c")


def test_reference_defaults():
    o = parsed(*BASE)
    assert o.qdrant_url == "http://localhost:6334"
    assert o.create_collection is True and o.restart is False
    assert o.num_workers >= 1 and o.batch_size == 256


@pytest.mark.parametrize("args,restart,create", [
    (("--migration.restart",), True, True),
    (("--migration.restart=true",), True, True),
    (("--migration.restart=false",), False, True),
    (("--migration.create-collection=false",), False, False),
    (("-c", "false"), False, False),
    (("-c",), False, True),
    (("--migration.restart", "--migration.create-collection", "no"), True, False),
])
def test_boolean_flags_bare_or_with_value(args, restart, create):
    o = parsed(*BASE, *args)
    assert (o.restart, o.create_collection) == (restart, create)


def test_batch_size_short_flag_and_workers():
    o = parsed(*BASE, "-b", "50", "--migration.num-workers", "3", "--migration.batch-delay=10")
    assert (o.batch_size, o.num_workers, o.batch_delay_ms) == (50, 3, 10)


@pytest.mark.parametrize("values,expected", [
    (["embedding=dot"], {"embedding": "Dot"}),
    (["a=dot,b=cosine"], {"a": "Dot", "b": "Cosine"}),
    (["a=dot;b=euclid"], {"a": "Dot", "b": "Euclid"}),
    (["a=manhattan", "b=L2"], {"a": "Manhattan", "b": "Euclid"}),
])
def test_distance_metric_map_forms(values, expected):
    assert parse_distance_overrides(values) == expected


def test_distance_metric_flag_repeatable():
    o = parsed(*BASE, "--qdrant.distance-metric", "a=dot", "--qdrant.distance-metric", "b=cosine")
    assert o.distance_overrides == {"a": "Dot", "b": "Cosine"}


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("QDRANT_API_KEY", "from-env-key")
    assert parsed(*BASE).api_key == "from-env-key"


def test_key_column_and_columns_comma_lists():
    o = parsed(*BASE, "--pg.key-column", "a,b", "--pg.columns", "x, y", "--pg.columns", "z")
    assert o.key_columns == ["a", "b"] and o.columns == ["x", "y", "z"]


@pytest.mark.parametrize("extra,needle", [
    (("--qdrant.distance-metric", "embedding=hamming2"), "unknown distance 'hamming2'"),
    (("--qdrant.distance-metric", "embedding"), "not in the form column=metric"),
    (("--migration.batch-size", "0"), "--migration.batch-size must be positive"),
    (("--migration.num-workers", "-1"), "--migration.num-workers must be positive"),
    (("--qdrant.url", "ftp://x"), "is not a Qdrant address"),
    (("--qdrant.url", "local:"), "names no folder"),
])
def test_bad_flag_values_exit_2_with_the_fix(cli, extra, needle):
    r = cli("migrate", *BASE, *extra)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and "Fix:" in r.stderr
    assert "Traceback" not in r.output


def test_missing_required_flags(cli):
    r = cli("migrate", "--pg.table", "t")
    assert r.exit_code == 2 and "--pg.url" in r.stderr and "--qdrant.collection" in r.stderr


def test_global_flags_before_or_after_the_command(db, qdrant_path, cli):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(2)); INSERT INTO t VALUES (1, '[1,1]')")
    assert cli("--debug", *migrate_args(db, "t", qdrant_path)).exit_code == 0
    assert cli(*migrate_args(db, "t", qdrant_path), "--debug", "--skip-tls-verification").exit_code == 0


def test_bad_postgres_url_syntax(cli, qdrant_path):
    r = cli("migrate", "--pg.url", "postgresql://u:s3cret@h:notaport/db", "--pg.table", "t",
            "--qdrant.collection", "c", "--qdrant.url", f"local:{qdrant_path}")
    assert r.exit_code == 2, r.output
    assert "not a valid PostgreSQL connection string" in r.stderr
    assert "s3cret" not in r.output


def test_wrong_password_is_an_input_error_and_never_printed(db, cli, qdrant_path):
    url = db.server.url(db.name, password="Wr0ng-Passw0rd")
    r = cli("migrate", "--pg.url", url, "--pg.table", "t", "--qdrant.collection", "c",
            "--qdrant.url", f"local:{qdrant_path}", "--debug")
    assert r.exit_code == 2, r.output
    assert "rejected the credentials" in r.stderr
    assert "Wr0ng-Passw0rd" not in r.output


def test_missing_database(db, cli, qdrant_path):
    r = cli("migrate", "--pg.url", db.server.url("no_such_db"), "--pg.table", "t", "--qdrant.collection", "c",
            "--qdrant.url", f"local:{qdrant_path}")
    assert r.exit_code == 2 and "no_such_db" in r.stderr and "database name" in r.stderr


def test_unreachable_postgres_is_a_runtime_failure(cli, qdrant_path):
    from pg2qdrant.localpg import free_port
    r = cli("migrate", "--pg.url", f"postgresql://u:hunter22@127.0.0.1:{free_port()}/db", "--pg.table", "t",
            "--qdrant.collection", "c", "--qdrant.url", f"local:{qdrant_path}")
    assert r.exit_code == 1 and "Cannot reach PostgreSQL" in r.stderr and "hunter22" not in r.output


def test_unreachable_qdrant_server(db, cli):
    from pg2qdrant.localpg import free_port
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(2))")
    r = cli("migrate", "--pg.url", db.url, "--pg.table", "t", "--qdrant.collection", "c",
            "--qdrant.url", f"http://127.0.0.1:{free_port()}", "--qdrant.api-key", "k3y-s3cret-value")
    assert r.exit_code == 1, r.output
    assert "Cannot reach Qdrant" in r.stderr and "k3y-s3cret-value" not in r.output


def test_console_script_runs_and_prints_no_traceback_on_error():
    """The installed entry point, as a user runs it (separate process)."""
    proc = subprocess.run([sys.executable, "-m", "pg2qdrant", "migrate", "--pg.url", "postgresql://x:pw123@h:bad/db",
                           "--pg.table", "t", "--qdrant.collection", "c"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "pw123" not in proc.stderr + proc.stdout


def test_help_lists_every_reference_flag(cli):
    out = cli("pg", "--help").stdout
    for flag in ("--pg.url", "--pg.table", "--pg.key-column", "--pg.columns", "--qdrant.url", "--qdrant.api-key",
                 "--qdrant.collection", "--qdrant.distance-metric", "--migration.num-workers",
                 "--migration.batch-size", "-b", "--migration.restart", "--migration.create-collection", "-c",
                 "--migration.batch-delay", "--migration.offsets-collection", "--debug",
                 "--skip-tls-verification"):
        assert flag in out, flag
