"""`pg2qdrant sync`, `sync status`, `sync drop`: the command line of the sync flows (the sync package).

Kept apart from cli.py so the sync flags live next to each other; the commands
hang off cli.main (cli.py imports this module at its end). Sync takes every
flag migrate takes (the same plan is made from them) plus the --sync.* flags.
`python -m pg2qdrant.cli.sync` runs the whole CLI with these commands registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pg2qdrant.cli.common import (
    HELP_GROUPS,
    build_migration_options,
    global_options,
    handle_errors,
    help_layout,
    layout_jobs,
    main,
    migration_options,
    service_options,
    source_flags,
    start_service,
    target_options,
)
from pg2qdrant.cli.config_file import config_options, each_entry
from pg2qdrant.cli.flow_options import sync_flags, sync_options_from
from pg2qdrant.ui import UI

#: Not in sync's --help: copy flags sync takes (a migrate command line, or a migration file's shared
#: keys, still parse) but cannot use: its copy always starts over, and it writes.
#: The --qdrant.bm25* flags too: taken as migrate takes them (a sync keeps the BM25 vectors of the same
#: flags current), listed by `migrate --help` (sync's help stays on one screen).
SYNC_HIDDEN = {"--migration.restart", "--migration.dry-run", "--qdrant.bm25", "--qdrant.hybrid",
               *(f for f in HELP_GROUPS["Collection"] if f.startswith("--qdrant.bm25-"))}

#: All that `sync status` and `sync drop` use: the database, and the slot's and publication's names
#: (given, or derived from the collection). The rest is accepted (the same command line as sync's).
ADMIN_SHOWN = {"--pg.url", "--qdrant.collection", "--sync.slot", "--sync.publication", "--debug", "--help"}


def all_flags(fn: Callable) -> Callable:
    return source_flags("sync")(target_options(migration_options(sync_flags(global_options(fn)))))


@main.group("sync", invoke_without_command=True, context_settings={"max_content_width": 100},
            short_help="Keep a collection in sync with its table (CDC or polling).")
@all_flags
@config_options
@service_options
@click.pass_context
@handle_errors
@each_entry("sync")
def sync_cmd(ctx: click.Context, ui: UI, **kw: Any) -> None:
    """Keep a collection in sync with its table: CDC by logical replication (default), or polling.

    Runs until stopped (Ctrl-C / SIGTERM). --sync.initial-copy (or `migrate --then-sync`): no gap.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = kw  # flags given before `status` / `drop`
        return
    from pg2qdrant.sync import run_sync
    options = build_migration_options(kw)
    run_sync(layout_jobs(options, ui, command="sync")[0], sync_options_from(kw), ui,
             service=start_service(kw, options, ui))


def _merged(ctx: click.Context, kw: dict[str, Any]) -> dict[str, Any]:
    """Flags given after `status`/`drop` win over those given before it; defaults fill the rest."""
    from click.core import ParameterSource
    parent = ctx.obj or {}
    out = dict(kw)
    for k, v in parent.items():
        if ctx.get_parameter_source(k) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            out[k] = v
    return out


def _admin_args(ctx: click.Context, kw: dict[str, Any]):
    """(url, collection, SyncOptions) for `sync status` / `sync drop`."""
    kw = _merged(ctx, kw)
    url, collection = _names_args(kw)
    return url, collection, sync_options_from(kw)


def _names_args(kw: dict[str, Any]) -> tuple[str, str]:
    from pg2qdrant.core.errors import InputError
    if not kw.get("pg_url"):
        raise InputError("--pg.url is required.", fix="pass the same --pg.url as for `pg2qdrant sync`.")
    if not kw.get("qdrant_collection") and not (kw.get("sync_slot") and kw.get("sync_publication")):
        raise InputError("Name the collection (or the slot and publication).",
                         fix="pass the same --qdrant.collection as for `pg2qdrant sync`, or --sync.slot and "
                             "--sync.publication.")
    return kw["pg_url"], kw.get("qdrant_collection") or ""


@sync_cmd.command("status")
@all_flags
@click.pass_context
@handle_errors
def sync_status_cmd(ctx: click.Context, ui: UI, **kw: Any) -> None:
    """Print the slot's last applied LSN, lag and the WAL it keeps."""
    from pg2qdrant.sync import sync_status
    sync_status(*_admin_args(ctx, kw), ui)


@sync_cmd.command("drop")
@all_flags
@click.pass_context
@handle_errors
def sync_drop_cmd(ctx: click.Context, ui: UI, **kw: Any) -> None:
    """Remove the replication slot and the publication sync created (the collection stays)."""
    from pg2qdrant.sync import sync_drop
    sync_drop(*_admin_args(ctx, kw), ui)


help_layout(sync_cmd, SYNC_HIDDEN)
for _admin in (sync_status_cmd, sync_drop_cmd):
    help_layout(_admin, set().union(*HELP_GROUPS.values()) - ADMIN_SHOWN)
