"""The documentation stays true: every flag table in docs/commands/ matches the command line's own
definitions (click's params), README's test command is the one CI runs, and the site's pages are
all in its nav.

Each command page has flag tables (`| flag | default | meaning |`): the flags of the first column
must exist, every option of the command must be in them, and a default that is a plain value
(`16`, `false`, `` `auto` ``) must be click's. A command that shares migrate's flags says which in
one sentence, "Takes these flags of [migrate](migrate.md#flags): `--pg.*`, ... except ...", which
is checked the same way: the flags it names, expanded against migrate's table, plus the page's own
table, are exactly the command's options.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

from pg2qdrant.cli.main import program

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()

# command path -> its page (sync's subcommands are documented with sync)
PAGES = {
    ("migrate",): "migrate.md",
    ("pg",): "migrate.md",
    ("inspect",): "inspect.md",
    ("verify",): "verify.md",
    ("sync",): "sync.md",
    ("sync", "status"): "sync.md",
    ("sync", "drop"): "sync.md",
    ("demo",): "demo.md",
    ("state", "list"): "state.md",
    ("state", "clear"): "state.md",
    ("alias", "list"): "alias.md",
    ("alias", "switch"): "alias.md",
    ("alias", "drop"): "alias.md",
}
TAKES = re.compile(r"^Takes these flags of \[migrate\]\(migrate\.md#flags\):(.+?)(?:\n\n|\Z)", re.M | re.S)


def command(*path: str) -> click.Command:
    cmd = program
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def options(cmd: click.Command) -> dict[str, click.Option]:
    """Every name an option answers to (long and short), mapped to it."""
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def flag_rows(text: str) -> list[tuple[list[str], str]]:
    """(the flags named in the first cell, the default cell) of every row of the page's flag tables."""
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("| flag | default |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if in_table and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.append((re.findall(r"`(-[-a-z0-9.]+)`", cells[0]), cells[1]))
    return rows


def taken_from_migrate(text: str) -> set[str]:
    """The flags a page says it takes from migrate's table: `--x.*` globs, flags, `except` ones."""
    m = TAKES.search(text)
    if not m:
        return set()
    migrate_rows = flag_rows((DOCS / "commands" / "migrate.md").read_text())
    taken: set[str] = set()
    for exclude, pattern in re.findall(r"(except )?`(--[-a-z0-9.*]+)`", m.group(1)):
        regex = re.compile(re.escape(pattern).replace(r"\*", ".+") + "$")
        names = {f for flags, _ in migrate_rows if any(regex.match(x) for x in flags[:1]) for f in flags}
        assert names, f"{pattern!r} names no flag of migrate's table"
        taken = taken - names if exclude else taken | names
    return taken


def simple_default(cell: str):
    """The value a default cell states, or None when it is prose ('primary key', 'CPU cores')."""
    text = cell.strip()
    quoted = re.fullmatch(r"`([^`\s]+)`", text)
    if quoted:
        return quoted.group(1)
    if text in ("true", "false", "off"):
        return text != "false" and text != "off"
    if re.fullmatch(r"\d[\d,]*(\.\d+)?", text):
        return float(text.replace(",", ""))
    return None


def problems(path: tuple[str, ...], text: str) -> list[str]:
    """Where the page's flag documentation and the command's definitions disagree."""
    cmd, found = command(*path), []
    opts = options(cmd)
    rows = flag_rows(text)
    own = {f for flags, _ in rows for f in flags}
    documented = own | taken_from_migrate(text)
    if path in (("sync", "status"), ("sync", "drop")):  # the subcommands take the flags of the sync they are about
        documented |= set(options(command("sync")))
    if path in (("migrate",), ("pg",)):  # --verify / --then-sync take verify's and sync's own flags
        documented |= {f for page in ("verify.md", "sync.md")
                       for flags, _ in flag_rows((DOCS / "commands" / page).read_text()) for f in flags}
    # A page's table serves every command on it (`state clear --all`): a flag must exist in one of them.
    existing = {o for other, page in PAGES.items() if page == PAGES[path] for o in options(command(*other))}
    name = " ".join(path)
    found += [f"{name}: {f} is documented but does not exist" for f in sorted(own - existing)]
    found += [f"{name}: {f} is not documented" for f in sorted(set(opts) - documented - {"-h", "--help"})]
    for flags, cell in rows:
        option = opts.get(flags[0]) if flags else None
        expected = simple_default(cell)
        if option is None or expected is None or option.default in (None, ...) or not _plain(option.default):
            continue
        actual = option.default
        if isinstance(expected, bool) or isinstance(actual, bool):
            same = expected == actual
        elif isinstance(expected, float):
            same = isinstance(actual, int | float) and float(actual) == expected
        else:
            same = os.path.normpath(str(expected)) == os.path.normpath(str(actual))
        if not same:
            found.append(f"{name}: {flags[0]} is documented with default {cell!r}, the command's is {actual!r}")
    return found


def _plain(value) -> bool:
    return isinstance(value, bool | int | float | str | os.PathLike)


@pytest.mark.parametrize("path", sorted(PAGES), ids=" ".join)
def test_the_flag_tables_match_the_command_line(path):
    text = (DOCS / "commands" / PAGES[path]).read_text()
    assert problems(path, text) == []


def test_the_defaults_are_really_compared():
    """The default check is not vacuous: it finds the plain defaults and catches a changed one."""
    text = (DOCS / "commands" / "migrate.md").read_text()
    plain = [cell for flags, cell in flag_rows(text) if simple_default(cell) is not None]
    assert len(plain) >= 20, plain
    planted = text.replace("| `--migration.batch-size`, `-b` | 256 |", "| `--migration.batch-size`, `-b` | 32 |")
    assert planted != text
    assert problems(("migrate",), planted) == [
        "migrate: --migration.batch-size is documented with default '32', the command's is 256"]


def test_a_missing_or_invented_flag_is_caught():
    text = (DOCS / "commands" / "verify.md").read_text()
    planted = text.replace("| `--verify.k` |", "| `--verify.kk` |")
    assert problems(("verify",), planted) == [
        "verify: --verify.kk is documented but does not exist", "verify: --verify.k is not documented"]
    without_takes = TAKES.sub("", text)
    assert "verify: --pg.url is not documented" in problems(("verify",), without_takes)


def test_every_command_has_a_page():
    def paths(cmd, prefix=()):
        for name, sub in getattr(cmd, "commands", {}).items():
            if isinstance(sub, click.Group):
                yield from paths(sub, prefix + (name,))
            if not isinstance(sub, click.Group) or sub.params:
                yield prefix + (name,)
    assert set(paths(program)) - {("state",)} <= set(PAGES)


def test_every_page_is_in_the_nav():
    """mkdocs --strict fails on a page left out of the nav (validation.nav.omitted_files: warn);
    this says which, without building."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert {p for p in pages if f": {p}" not in nav} == set()


def test_ci_runs_exactly_the_readme_test_command():
    block = README[README.index("**Run the tests**"):]
    command_line = re.search(r"```bash\n(.+?)\n```", block, flags=re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command_line in ci.splitlines(), f"{command_line!r} is not a line of .ci/run"
    assert ci.strip().splitlines()[-1] == command_line, "the last line of .ci/run must be README's test command"
    assert command_line in (DOCS / "index.md").read_text()


def test_readme_shows_the_demo_command():
    assert "pg2qdrant demo" in README


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 150
    assert "mkdocs serve" in README


def build_site(root: Path, tmp_path: Path):
    import subprocess
    import sys
    if not os.environ.get("CI"):  # CI installs it (the test extra takes the docs extra): there it must be
        pytest.importorskip("mkdocs")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_in_strict_mode(tmp_path):
    r = build_site(ROOT, tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("plant", ["a broken link", "a broken anchor", "a page left out of the nav"])
def test_the_strict_build_fails_on(plant, tmp_path):
    import shutil
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy)
    page = copy / "docs" / "errors.md"
    if plant == "a broken link":
        page.write_text(page.read_text() + "\nSee [nowhere](nowhere.md).\n")
    elif plant == "a broken anchor":
        page.write_text(page.read_text() + "\nSee [the rules](mapping.md#no-such-section).\n")
    else:
        (copy / "docs" / "orphan.md").write_text("# Orphan\n")
    r = build_site(copy, tmp_path)
    expected = {"a broken link": "'nowhere.md', but the target is not found",
                "a broken anchor": "does not contain an anchor '#no-such-section'",
                "a page left out of the nav": "orphan.md"}[plant]
    assert r.returncode != 0 and expected in r.stdout + r.stderr, r.stdout + r.stderr
