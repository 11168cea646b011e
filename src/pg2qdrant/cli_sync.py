"""`pg2qdrant sync`, `sync status`, `sync drop`: the command line of the sync flows (the sync package).

Kept apart from cli.py so the sync flags live next to each other; the commands
hang off cli.main (cli.py imports this module at its end). Sync takes every
flag migrate takes (the same plan is made from them) plus the --sync.* flags.
`python -m pg2qdrant.cli_sync` runs the whole CLI with these commands registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pg2qdrant.cli_common import (
    bool_flag,
    build_migration_options,
    global_options,
    handle_errors,
    layout_jobs,
    main,
    migration_options,
    opt,
    service_options,
    source_options,
    start_service,
    target_options,
)
from pg2qdrant.cli_config import config_options, each_entry
from pg2qdrant.config import SYNC_MODES, SyncConfig, default_of
from pg2qdrant.ui import UI


def sync_flags(fn: Callable) -> Callable:
    for decorator in reversed([
        opt("--sync.mode", "sync_mode", type=click.Choice(SYNC_MODES), default=default_of(SyncConfig, "mode"),
            show_default=True,
            help="cdc: stream changes by logical replication; poll: re-copy rows whose --sync.updated-column "
                 "advanced; reconcile: one pass that deletes orphan points and writes missing ones."),
        opt("--sync.slot", "sync_slot", default=None,
            help="Replication slot (default: pg2qdrant_<collection>)."),
        opt("--sync.publication", "sync_publication", default=None,
            help="Publication (default: pg2qdrant_<collection>; created for the table when missing)."),
        bool_flag("--sync.initial-copy", "sync_initial_copy", False,
                  "Copy the table first, from the new slot's snapshot: a gap-free start."),
        opt("--sync.updated-column", "sync_updated_column", default=None,
            help="Poll mode: the timestamp/integer column every insert and update advances."),
        opt("--sync.interval", "sync_interval", type=float, default=default_of(SyncConfig, "interval_s"), show_default=True,
            help="Poll mode: seconds between polls."),
        opt("--sync.overlap", "sync_overlap", type=float, default=default_of(SyncConfig, "overlap"), show_default=True,
            help="Poll mode: rows up to this far behind the watermark are read again (seconds for time "
                 "columns, units for numbers), for transactions that commit late."),
        bool_flag("--sync.reconcile", "sync_reconcile", False,
                  "Also compare ID sets: delete orphan points, write missing ones (poll: every "
                  "--sync.reconcile-interval; cdc: once at start)."),
        opt("--sync.reconcile-interval", "sync_reconcile_interval", type=float,
            default=default_of(SyncConfig, "reconcile_interval_s"), show_default=True,
            help="Poll mode: seconds between reconciliations."),
        bool_flag("--sync.once", "sync_once", False,
                  "Stop once caught up (cdc: with the WAL position at start; poll: after one round)."),
    ]):
        fn = decorator(fn)
    return fn


def sync_options_from(kw: dict[str, Any]):
    from pg2qdrant.sync import SyncOptions
    return SyncOptions(
        mode=kw["sync_mode"], slot=kw["sync_slot"] or None, publication=kw["sync_publication"] or None,
        initial_copy=kw["sync_initial_copy"], updated_column=kw["sync_updated_column"] or None,
        interval_s=kw["sync_interval"], overlap=kw["sync_overlap"], reconcile=kw["sync_reconcile"],
        reconcile_interval_s=kw["sync_reconcile_interval"], once=kw["sync_once"],
    )


def all_flags(fn: Callable) -> Callable:
    return source_options(target_options(migration_options(sync_flags(global_options(fn)))))


@main.group("sync", invoke_without_command=True, context_settings={"max_content_width": 100})
@all_flags
@config_options
@service_options
@click.pass_context
@handle_errors
@each_entry("sync")
def sync_cmd(ctx: click.Context, ui: UI, **kw: Any) -> None:
    """Keep a collection in sync with its table: CDC by logical replication (default), or polling.

    Runs until stopped (Ctrl-C / SIGTERM stop cleanly). Start with --sync.initial-copy (or
    `pg2qdrant migrate --then-sync`) for a gap-free hand-off from the copy to the stream.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = kw  # flags given before `status` / `drop`
        return
    from pg2qdrant.sync import run_sync
    options = build_migration_options(kw)
    run_sync(layout_jobs(options, ui, command="sync")[0], sync_options_from(kw), ui,
             service=start_service(kw, options, ui))


def one_slot(entries: list, *, whole: bool) -> bool:
    """Whether the entries sync through the file's slot (sync_many): always for several, and for the one
    entry of a whole file (or 'schema.*') in cdc mode, so that a file shrunk to one entry keeps its slot and
    the changes waiting there; an entry picked with --only, or poll/reconcile (no slot), runs alone."""
    return len(entries) > 1 or (whole and entries[0].kw.get("sync_mode") == "cdc")


def sync_many(ctx: click.Context, ui: UI, entries: list, source: str, command: str) -> None:
    """`sync --config FILE` (and `migrate --config FILE --then-sync`, `sync --config FILE status|drop`), see
    one_slot: one publication and one slot for all of the file's entries (sync/many.py)."""
    import os

    from pg2qdrant.errors import InputError
    from pg2qdrant.sync.many import file_names, run_many
    kws = [e.kw for e in entries]
    shared = sorted(k for k in kws[0] if (k.startswith("sync_") or k in ("pg_url", "then_sync", "metrics_port"))
                    and any(kw.get(k) != kws[0].get(k) for kw in kws))
    if shared:
        flag = {p.name: p.opts[0] for p in ctx.command.params}
        flags = ", ".join(flag.get(k, k) for k in shared)
        raise InputError(f"With several tables synced through one slot, {flags} must be the same for every entry.",
                         fix="set them once at the top of the file (or on the command line).")
    stem = os.path.splitext(os.path.basename(source))[0] if source.endswith(".toml") else source
    slot, publication = file_names(stem, sync_options_from(kws[0]))
    if ctx.invoked_subcommand is not None:  # status / drop: the file's slot and publication
        ctx.obj = {**kws[0], "sync_slot": slot, "sync_publication": publication}
        return
    sync_options = sync_options_from(kws[0])
    sync_options.slot, sync_options.publication = slot, publication
    one = "sync" if command == "sync" else "migrate --then-sync"
    jobs = [layout_jobs(build_migration_options(kw), ui, command=one)[0] for kw in kws]
    run_many(jobs, sync_options, ui, initial_copy=True if command == "migrate" else None,
             service=start_service(kws[0], jobs[0], ui))


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
    from pg2qdrant.errors import InputError
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


if __name__ == "__main__":  # pragma: no cover - `python -m pg2qdrant.cli_sync sync ...`
    main()
