"""README stays true: its flag tables match --help, and its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pg2qdrant.cli.main import program as main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def help_flags(*command: str) -> set[str]:
    cmd = main
    for name in command:
        cmd = cmd.commands[name]
    return {o for p in cmd.params for o in p.opts if o.startswith("--") and o != "--help"}


def readme_flags(section: str) -> set[str]:
    start = README.index(section)
    end = README.find("\n### ", start + len(section))
    end = README.find("\n## ", start + len(section)) if end == -1 else min(
        end, README.find("\n## ", start + len(section)) if README.find("\n## ", start + len(section)) != -1 else end)
    text = README[start:end]
    return {m for m in re.findall(r"^\| `(--[a-z][a-z0-9.-]*)`", text, flags=re.M)}


@pytest.mark.parametrize("command,section", [
    (("migrate",), "### `pg2qdrant migrate` / `pg2qdrant pg`"),
    (("verify",), "### `pg2qdrant verify`"),
    (("sync",), "### `pg2qdrant sync`"),
])
def test_every_flag_is_documented_and_every_documented_flag_exists(command, section):
    documented = readme_flags(section)
    actual = help_flags(*command)
    own = {"verify": "--verify.", "sync": "--sync."}.get(command[0])
    if own:  # the command's own flags; the shared ones are documented under migrate
        actual = {f for f in actual if f.startswith(own)}
    else:  # migrate --verify / --then-sync take those commands' flags, documented in their sections
        actual = {f for f in actual if not f.startswith(("--verify.", "--sync."))}
    assert documented - actual == set(), "README documents flags that do not exist"
    assert actual - documented - {"--trace"} == set(), "flags missing from README"


def test_ci_runs_exactly_the_readme_test_command():
    block = README[README.index("**Run the tests**"):]
    command = re.search(r"```bash\n(.+?)\n```", block, flags=re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines(), f"{command!r} is not a line of .ci/run"


def test_readme_shows_the_demo_command():
    assert "pg2qdrant demo" in README
