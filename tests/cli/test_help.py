"""--help per command (issue 20): short, grouped, only the flags the command uses.

Each command's help at 100 columns fits about one screen, shows its groups in one order, lists
no flag the command cannot use (those stay accepted, hidden), and says the environment-variable
rule once; `pg2qdrant --help` describes each command in a whole sentence.
"""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from pg2qdrant.cli.common import ENV_RULE, HELP_GROUPS
from pg2qdrant.cli.main import program as main

GROUP_ORDER = ["General", *HELP_GROUPS]

COMMANDS = [("migrate",), ("pg",), ("inspect",), ("verify",), ("sync",), ("sync", "status"), ("sync", "drop"),
            ("demo",), ("state", "list"), ("state", "clear")]

NEW_COLLECTION = {"--qdrant.hnsw-m", "--qdrant.hnsw-ef-construct", "--qdrant.on-disk", "--qdrant.quantization",
                  "--qdrant.shard-number", "--qdrant.replication-factor", "--migration.create-collection"}
INDEX_SETTINGS = {"--qdrant.hnsw-m", "--qdrant.hnsw-ef-construct", "--qdrant.quantization"}  # inspect shows them
COPY = {"--migration.num-workers", "--migration.batch-size", "--migration.batch-delay", "--migration.restart",
        "--migration.delete-orphans", "--migration.dry-run", "--migration.range-rows", "--migration.consistent",
        "--migration.offsets-collection", "--migration.state-file", "--verify", "--then-sync"}

#: Flags each command's help must not list (the command does not use them, or another help lists them).
NOT_LISTED = {
    ("migrate",): {"--verify.sample", "--verify.k", "--sync.mode", "--sync.slot", "--health.max-lag-seconds",
                   "--health.max-lag-bytes", "--trace"},
    ("inspect",): COPY | NEW_COLLECTION - INDEX_SETTINGS | {"--qdrant.url", "--qdrant.api-key",
                                                             "--skip-tls-verification"},
    ("verify",): COPY | NEW_COLLECTION | {"--trace"},
    ("sync",): {"--migration.restart", "--migration.dry-run", "--migration.consistent", "--trace"},
    ("demo",): {"--skip-tls-verification", "--trace"},
}
NOT_LISTED[("pg",)] = NOT_LISTED[("migrate",)]

#: All that `sync status` / `sync drop` list.
ADMIN = {"--pg.url", "--qdrant.collection", "--sync.slot", "--sync.publication", "--debug", "--help"}


def help_text(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"},
                                terminal_width=100)
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.output.splitlines())


def listed_flags(text: str) -> set[str]:
    return set(re.findall(r"^ {2}(--[a-z][a-z0-9.-]*)", text, flags=re.M))


def command_of(*names: str) -> click.Command:
    cmd = main
    for name in names:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_is_short_grouped_in_order_and_says_the_env_rule_once(command):
    text = help_text(*command)
    lines = text.splitlines()
    assert len(lines) <= 82, f"{len(lines)} lines"
    assert all(len(line) <= 100 for line in lines)
    titles = [line.strip() for line in lines if line.strip() in GROUP_ORDER]
    assert titles, "no groups"
    assert titles == sorted(titles, key=GROUP_ORDER.index), titles
    assert len(titles) == len(set(titles)), "a group shown twice"
    assert "env var" not in text
    env_reading = any(getattr(p, "envvar", None) and not p.hidden for p in command_of(*command).params)
    assert text.count("PG2QDRANT_<FLAG>") == (1 if env_reading else 0)
    if env_reading:
        assert ENV_RULE in " ".join(text.split())


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_lists_every_shown_flag_once_and_no_hidden_one(command):
    text = help_text(*command)
    cmd = command_of(*command)
    shown = {o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts if o.startswith("--")}
    flags = re.findall(r"^ {2}(--[a-z][a-z0-9.-]*)", text, flags=re.M)
    assert len(flags) == len(set(flags)), "a flag listed twice"
    assert set(flags) == shown | {"--help"}
    assert not set(flags) & NOT_LISTED.get(command, set())


@pytest.mark.parametrize("command", [("sync", "status"), ("sync", "drop")], ids=" ".join)
def test_sync_admin_help_lists_only_what_it_uses(command):
    assert listed_flags(help_text(*command)) == ADMIN


def test_sync_help_shows_its_subcommands_first_and_says_sync():
    text = help_text("sync")
    assert text.index("status") < text.index("--pg.url") and text.index("drop") < text.index("--pg.url")
    assert "Table to sync" in text and "Table to migrate" not in text


def test_hidden_flags_are_still_accepted():
    """Hidden is not removed: a migrate command line still parses with verify, sync and inspect."""
    args = ["--pg.url", "postgresql://u@h/db", "--pg.table", "t", "--qdrant.collection", "c",
            "--qdrant.quantization", "int8", "--qdrant.shard-number", "2", "--migration.batch-delay", "5",
            "--migration.delete-orphans", "--migration.dry-run", "--migration.restart", "--qdrant.hnsw-m", "8"]
    for name in ("verify", "sync", "inspect"):
        ctx = main.commands[name].make_context(name, list(args))
        assert ctx.params["quantization"] == "int8" and ctx.params["batch_delay"] == 5
    ctx = main.commands["migrate"].make_context("migrate", [*args, "--verify", "--verify.sample", "10",
                                                            "--sync.mode", "poll", "--health.max-lag-bytes", "9"])
    assert (ctx.params["verify_sample"], ctx.params["sync_mode"], ctx.params["health_max_lag_bytes"]) == ("10", "poll", 9)
    status = main.commands["sync"].commands["status"]
    assert status.make_context("status", ["--qdrant.hnsw-m", "4"]).params["hnsw_m"] == 4
    assert main.commands["demo"].make_context("demo", ["--skip-tls-verification"]).params["skip_tls_verification"]


def test_migration_file_keys_still_reach_every_command():
    """A file's top-level keys may hold any command's flags: the set of known keys is unchanged."""
    from pg2qdrant.cli.config_file import _file_flags
    keys = _file_flags()
    for flag in ("verify.sample", "sync.mode", "health.max-lag-seconds", "qdrant.quantization", "migration.dry-run",
                 "migration.consistent", "pg.url"):
        assert flag in keys


def test_reference_flags_are_listed_by_migrate_and_pg():
    for name in ("migrate", "pg"):
        flags = listed_flags(help_text(name))
        assert {"--pg.url", "--pg.table", "--pg.key-column", "--pg.columns", "--qdrant.url", "--qdrant.api-key",
                "--qdrant.collection", "--qdrant.distance-metric", "--migration.num-workers", "--migration.batch-size",
                "--migration.restart", "--migration.create-collection", "--migration.batch-delay",
                "--migration.offsets-collection", "--skip-tls-verification", "--debug"} <= flags


def test_program_help_describes_each_command_in_a_whole_sentence():
    text = help_text()
    rows = [line.strip() for line in text.splitlines() if re.match(r"^ {2}[a-z]+ {2,}\S", line)]
    assert {row.split()[0] for row in rows} >= {"migrate", "pg", "inspect", "verify", "sync", "state", "demo"}
    for row in rows:
        assert row.endswith("."), row
        assert "..." not in row, row
    assert len(text.splitlines()) <= 25
