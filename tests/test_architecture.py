"""The architecture docs/contributing/architecture.md describes, checked on the code (issue 19).

- The layer contract in pyproject.toml (``[tool.importlinter]``: cli -> sync -> migrate | verify ->
  runtime -> ui -> source | destination | localpg -> core; psycopg only in source/, Qdrant's clients
  only in destination/, core/ without I/O) holds, and a planted violation of each kind breaks it.
- No import loop between the package's modules (function-level imports included).
- SQL statements are written only in source/ (the embedded server's setup aside: localpg).
- No dead code (vulture, with the reasons for what it cannot see in .ci/vulture_whitelist.py).
- No function above 15 on radon's complexity scale without a ``# complexity:`` comment saying why.
- Reader processes start without qdrant-client.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "pg2qdrant"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=cwd)


def test_the_layer_contract_holds():
    result = lint_imports(ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, broken", [
    ("core/plan.py", "from pg2qdrant.sync import options", "pg2qdrant.core is not allowed to import pg2qdrant.sync"),
    ("migrate/copy.py", "from pg2qdrant.verify import checks", "pg2qdrant.migrate is not allowed to import pg2qdrant.verify"),
    ("verify/checks.py", "import psycopg", "pg2qdrant.verify is not allowed to import psycopg"),
    ("sync/apply.py", "from qdrant_client import models", "pg2qdrant.sync is not allowed to import qdrant_client"),
    ("core/table.py", "import socket", "pg2qdrant.core is not allowed to import socket"),
])
def test_a_planted_violation_breaks_the_contract(tmp_path, module, planted, broken):
    """The contract is not vacuous: an upward import, a sideways import between flows, a driver or
    client outside its layer and I/O in core/ each fail it (function-level imports too)."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "pg2qdrant", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "src" / "pg2qdrant" / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    result = lint_imports(tmp_path / "src", tmp_path)
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout, result.stdout


def import_cycles(package: str = "pg2qdrant") -> list[list[str]]:
    graph = grimp.build_graph(package, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            related = module.startswith(imported + ".") or imported.startswith(module + ".")  # a package and its own
            if imported.startswith(package + ".") and not related and graph.chain_exists(importer=imported, imported=module):
                cycles.append([module, *graph.find_shortest_chain(importer=imported, imported=module)])
    return cycles


def test_no_import_loop():
    assert import_cycles() == []


def test_a_planted_loop_is_found(tmp_path, monkeypatch):
    shutil.copytree(PACKAGE, tmp_path / "pg2qdrant", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "pg2qdrant" / "core" / "errors.py"
    path.write_text(path.read_text() + "\n\ndef _planted():\n    from pg2qdrant.core import plan\n")
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
            "from test_architecture import import_cycles; print(json.dumps(import_cycles()))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(Path(__file__).parent)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    assert '"pg2qdrant.core.errors", "pg2qdrant.core.plan"' in out or '"pg2qdrant.core.plan", "pg2qdrant.core.errors"' in out, out


SQL_STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|TRUNCATE|COPY|WITH|BEGIN|SET)\s+\S")
RUNS_SQL = {"execute", "executemany", "copy", "SQL", "Composed"}  # what hands a text to PostgreSQL


def sql_outside_source(package: Path = PACKAGE) -> list[str]:
    """SQL statements handed to PostgreSQL (``execute``, ``copy``, ``sql.SQL``), or kept in a module
    constant, outside source/ and localpg.py; a statement quoted in a message (a fix to run) is advice."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if (package / "source") in path.parents or path.name == "localpg.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        texts = [arg for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and getattr(node.func, "attr", getattr(node.func, "id", None)) in RUNS_SQL for arg in node.args[:1]]
        texts += [node.value for node in tree.body if isinstance(node, ast.Assign)]
        for node in texts:
            for const in ast.walk(node):
                if isinstance(const, ast.Constant) and isinstance(const.value, str) and SQL_STATEMENT.match(const.value):
                    found.append(f"{path.relative_to(package.parent)}:{const.lineno}")
    return sorted(set(found))


def test_sql_statements_only_in_source():
    assert sql_outside_source() == [], "SQL outside src/pg2qdrant/source/ (move the statement into a source/ module)"


def test_the_sql_rule_catches_a_planted_statement(tmp_path):
    package = tmp_path / "pg2qdrant"
    (package / "source").mkdir(parents=True)
    (package / "source" / "ok.py").write_text('Q = "SELECT 1 FROM t"\n')
    (package / "sync").mkdir()
    (package / "sync" / "bad.py").write_text('def f(conn):\n    return conn.execute("SELECT count(*) FROM t")\n')
    (package / "sync" / "advice.py").write_text('def f():\n    raise ValueError("x", fix="ALTER SYSTEM SET wal_level = logical")\n')
    (package / "sync" / "const.py").write_text('QUERY = "DELETE FROM t WHERE id = %s"\n')
    (package / "ui.py").write_text('HELP = "Select the columns to migrate"\n')
    assert sql_outside_source(package) == ["pg2qdrant/sync/bad.py:2", "pg2qdrant/sync/const.py:1"]


VULTURE = Path(sys.executable).with_name("vulture")
WHITELIST = ROOT / ".ci" / "vulture_whitelist.py"


def dead_code(package: Path) -> list[str]:
    result = subprocess.run([str(VULTURE), str(package), str(WHITELIST), "--min-confidence", "60"],
                            capture_output=True, text=True)
    return [line.split(": ", 1)[1] for line in result.stdout.splitlines() if ": " in line]


def test_no_dead_code():
    assert dead_code(PACKAGE) == [], "remove it, or say in .ci/vulture_whitelist.py who uses it"


def test_the_dead_code_check_finds_a_planted_function(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "pg2qdrant", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "pg2qdrant" / "core" / "plan.py"
    path.write_text(path.read_text() + "\n\ndef _never_called() -> int:\n    return 1\n")
    assert dead_code(tmp_path / "pg2qdrant") == ["unused function '_never_called' (60% confidence)"]


MAX_COMPLEXITY = 15


def uncommented_complexity(package: Path = PACKAGE) -> list[str]:
    """Functions above MAX_COMPLEXITY (radon's cyclomatic complexity) without a ``# complexity:``
    comment just above them (or their decorators)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        blocks = cc_visit("\n".join(lines))
        functions = [f for b in blocks for f in [b, *getattr(b, "methods", [])] if not getattr(f, "is_class", False)]
        for f in {(f.lineno, f.name, f.complexity) for f in functions if f.complexity > MAX_COMPLEXITY}:
            i = f[0] - 1
            while i > 0 and lines[i - 1].lstrip().startswith("@"):
                i -= 1
            comments = []
            while i > 0 and lines[i - 1].lstrip().startswith("#"):
                comments.append(lines[i - 1].strip())
                i -= 1
            if not any(c.startswith("# complexity:") for c in comments):
                found.append(f"{path.relative_to(package.parent)}:{f[0]} {f[1]} ({f[2]})")
    return sorted(found)


def test_complex_functions_say_why():
    assert uncommented_complexity() == [], "split them, or say why above them (# complexity: ...)"


def test_the_complexity_rule_catches_a_planted_function(tmp_path):
    package = tmp_path / "pg2qdrant"
    package.mkdir()
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(16))
    (package / "a.py").write_text(f"def tangled(x):\n{branches}    return -1\n\n\n"
                                  f"# complexity: a table of cases, on purpose.\ndef table(x):\n{branches}    return -1\n")
    assert uncommented_complexity(package) == ["pg2qdrant/a.py:1 tangled (17)"]


def test_a_reader_process_imports_no_qdrant_client():
    """What a reader process imports to read, map, encode and write over gRPC (destination/grpc_writer.py):
    qdrant-client (over a second of CPU per process) is left to the coordinator."""
    code = ("import sys, pg2qdrant.migrate.lifeline, pg2qdrant.migrate.workers, pg2qdrant.destination.writer, "
            "pg2qdrant.destination.grpc_writer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'qdrant_client'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
