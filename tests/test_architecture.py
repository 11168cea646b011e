"""The layering README describes, checked on the code: PostgreSQL lives in ``source/``, and
reader processes start without qdrant-client.

Every SQL statement and every psycopg import is in ``src/pg2qdrant/source/``; the rest of
the package sees plain Python values (and ``source.connect.Connection`` as an opaque handle).
Tests and their helpers may use psycopg directly (they set up tables).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pg2qdrant"
SOURCE = PACKAGE / "source"


def psycopg_imports(tree: ast.AST) -> list[int]:
    """Line numbers of ``import psycopg[...]`` and ``from psycopg[...] import ...``, anywhere in the module
    (function-level imports included)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "psycopg" or name.startswith("psycopg.") for name in names):
            lines.append(node.lineno)
    return lines


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if (package / "source") in path.parents:
            continue
        for line in psycopg_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            found.append(f"{path.relative_to(package.parent)}:{line}")
    return found


def test_psycopg_is_imported_only_in_source():
    assert SOURCE.is_dir()
    assert violations() == [], "psycopg imported outside src/pg2qdrant/source/ (move the SQL into a source/ module)"


def test_the_rule_catches_a_planted_import(tmp_path):
    """The check is not vacuous: each spelling of a psycopg import outside source/ is reported,
    the same import inside source/ is not."""
    package = tmp_path / "pg2qdrant"
    (package / "source").mkdir(parents=True)
    (package / "source" / "ok.py").write_text("import psycopg\nfrom psycopg import sql\n")
    (package / "clean.py").write_text("import json\nfrom pg2qdrant.source import connect\nfrom . import psycopg_like\n")
    (package / "sub").mkdir()
    planted = {
        "a.py": "import psycopg\n",
        "b.py": "from psycopg import sql\n",
        "c.py": "import psycopg.errors as e\n",
        "sub/d.py": "def f():\n    from psycopg.types.json import Jsonb\n    return Jsonb\n",
        "e.py": "import os, psycopg_pool, psycopg\n",
    }
    for name, text in planted.items():
        (package / name).write_text(text)
    assert violations(package) == ["pg2qdrant/a.py:1", "pg2qdrant/b.py:1", "pg2qdrant/c.py:1",
                                   "pg2qdrant/e.py:1", "pg2qdrant/sub/d.py:2"]


def test_a_reader_process_imports_no_qdrant_client():
    """What a reader process imports to read, map, encode and write over gRPC (destination/grpc_writer.py):
    qdrant-client (over a second of CPU per process) is left to the coordinator."""
    code = ("import sys, pg2qdrant.migrate.lifeline, pg2qdrant.migrate.workers, pg2qdrant.destination.writer, pg2qdrant.destination.grpc_writer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'qdrant_client'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
