"""Command line: `pg2qdrant migrate|pg|inspect|state|demo ...` (the entry point).

The group and the reference-compatible flags live in cli_common.py; `verify` and
`sync` in cli_verify.py and cli_sync.py, imported here so `pg2qdrant` has them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pg2qdrant.cli_common import (
    UI,
    bool_flag,
    build_migration_options,
    global_options,
    handle_errors,
    layout_jobs,
    main,
    migration_options,
    qdrant_address_options,
    service_options,
    source_options,
    start_service,
    state_options_list,
    target_options,
)
from pg2qdrant.cli_config import TableRun, config_options, each_entry
from pg2qdrant.cli_sync import sync_flags, sync_options_from  # noqa: E402  (also registers `sync`)
from pg2qdrant.cli_verify import build_verify_options, verify_options  # noqa: E402  (also registers `verify`)


def _migrate_command(name: str, hidden: bool = False):
    @main.command(name, hidden=hidden, help=(
        "Copy a pgvector table into a Qdrant collection. Accepts the flags of `qdrant-migration pg`."
        if name == "migrate" else "Alias of `migrate`, named like the reference tool's `pg` command."))
    @source_options
    @target_options
    @migration_options
    @bool_flag("--verify", "verify", False, "After the copy, run `pg2qdrant verify` (exit 1 if a check fails).")
    @verify_options
    @bool_flag("--then-sync", "then_sync", False,
               "Copy from a new replication slot's snapshot, then keep the collection in sync (CDC) until "
               "stopped: a gap-free hand-off (see `pg2qdrant sync`).")
    @sync_flags
    @config_options
    @bool_flag("--migration.consistent", "consistent", False,
               "With --config: read every table in one snapshot, so the collections are one point in time "
               "(an interrupted run starts over); default: table by table, each resumable.")
    @service_options
    @global_options
    @handle_errors
    @each_entry("migrate")
    def command(ui: UI, **kw: Any) -> list[TableRun] | None:
        from pg2qdrant.pipeline import migrate
        options = build_migration_options(kw)
        service = start_service(kw, options, ui)
        verify = build_verify_options(kw) if kw["verify"] and not options.dry_run else None
        jobs = layout_jobs(options, ui, command="migrate --then-sync" if kw["then_sync"] else None)
        if kw["then_sync"]:
            from pg2qdrant.sync import run_sync
            run_sync(jobs[0], sync_options_from(kw), ui, initial_copy=True, service=service)
            return
        runs = []  # each_entry exits with the worst verify code
        for options in jobs:  # a framework table may hold several collections (LangChain)
            result = migrate(options, ui, show_plan=False)
            from pg2qdrant.destination.qdrant import parse_target_url
            result.summary(parse_target_url(options.qdrant_url).display()).render(ui)
            runs.append(TableRun(options.collection, result, verified=verify is not None))
            if verify is not None:
                from pg2qdrant.verify import run_verify
                runs[-1].exit_code = run_verify(options, verify, ui).exit_code
        return runs

    return command


migrate_cmd = _migrate_command("migrate")
pg_cmd = _migrate_command("pg")


@main.command("inspect")
@source_options
@target_options
@migration_options
@config_options
@global_options
@handle_errors
@each_entry("inspect")
def inspect_cmd(ui: UI, **kw: Any) -> None:
    """Print the migration plan (collection, vectors, IDs, payload) and write nothing."""
    from pg2qdrant.pipeline import open_source
    if not kw["qdrant_collection"] and kw["layout"] == "plain":
        kw["qdrant_collection"] = (kw["pg_table"] or "").split(".")[-1].strip('"') or "collection"
    options = build_migration_options(kw)
    # Without --qdrant.collection: the layout's collection(s), else one named after the table.
    jobs = layout_jobs(options, ui, default_collection=options.table.split(".")[-1].strip('"') or "collection")
    from pg2qdrant.ui import render_plan
    for options in jobs:
        session = open_source(options, ui, count=False)
        try:
            render_plan(ui, session.plan)
        finally:
            session.close()


@main.group("state")
def state_group() -> None:
    """Show or remove saved migration progress (resume checkpoints)."""


def _state_store_for(ui: UI, kw: dict):
    """The target and its store of saved progress: all `state list` / `state clear` need."""
    from pg2qdrant.config import StateConfig, TargetConfig
    from pg2qdrant.pipeline import connect_target, state_store
    target = connect_target(TargetConfig(qdrant_url=kw["qdrant_url"], api_key=kw["qdrant_api_key"],
                                         skip_tls_verification=kw["skip_tls_verification"]), ui=ui)
    return target, state_store(StateConfig(offsets_collection=kw["offsets_collection"], state_file=kw["state_file"]),
                               target)


def _state_options(fn: Callable) -> Callable:
    for decorator in reversed([
        *qdrant_address_options(url_help="The target whose saved progress to show.", key_help="Qdrant API key."),
        *state_options_list(help_collection="Collection holding the progress records.",
                            help_file="Local JSON file holding them instead."),
    ]):
        fn = decorator(fn)
    return fn


@state_group.command("list")
@_state_options
@global_options
@handle_errors
def state_list(ui: UI, **kw: Any) -> None:
    """List saved migrations: table, collection, ranges done, status."""
    import datetime

    from pg2qdrant.ui import table
    target, store = _state_store_for(ui, kw)
    try:
        states = store.list()
    finally:
        target.close()
    if not states:
        ui.info(f"No saved migration progress in {store.describe()}.")
        return
    def updated(st) -> str:
        return datetime.datetime.fromtimestamp(st.updated_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    ui.out.print(table(
        f"Saved migrations ({store.describe()})",
        ("id", "source table", "collection", "ranges done", "rows done", "status", "updated"),
        [(st.state_id[:12], f"{st.source.get('database')}.{st.source.get('table')}", st.collection,
          f"{len(st.done)}/{len(st.ranges)}", f"{st.rows_done:,}", st.status, updated(st))
         for st in sorted(states, key=lambda x: x.updated_at)]))


@state_group.command("clear")
@click.argument("state_ids", nargs=-1)
@click.option("--all", "clear_all", is_flag=True, help="Remove every saved record in this store.")
@_state_options
@global_options
@handle_errors
def state_clear(ui: UI, state_ids: tuple[str, ...], clear_all: bool, **kw: Any) -> None:
    """Remove saved progress by id (prefixes from `state list` work), or --all."""
    from pg2qdrant.errors import InputError
    if not state_ids and not clear_all:
        raise InputError("Name the records to remove, or pass --all.",
                         fix="see their ids with `pg2qdrant state list`.")
    target, store = _state_store_for(ui, kw)
    try:
        states = store.list()
        chosen = states if clear_all else [s for s in states if any(s.state_id.startswith(p) for p in state_ids)]
        unknown = [p for p in state_ids if not any(s.state_id.startswith(p) for s in states)]
        if unknown:
            raise InputError(f"No saved migration with id {', '.join(unknown)} in {store.describe()}.",
                             fix="see the ids with `pg2qdrant state list`.")
        for st in chosen:
            store.delete(st.state_id)
            ui.info(f"Removed {st.state_id[:12]} ({st.source.get('table')} -> {st.collection}).")
    finally:
        target.close()


@main.command("demo")
@click.option("--rows", type=int, default=1000, show_default=True, help="Rows in the sample table.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default="pg2qdrant-demo", show_default=True,
              help="Where the demo keeps its Qdrant collection (local mode).")
@global_options
@handle_errors
def demo_cmd(ui: UI, rows: int, workdir: str, **kw: Any) -> None:
    """Run the whole flow on an embedded PostgreSQL + pgvector and an embedded Qdrant."""
    from pg2qdrant.demo import run_demo
    run_demo(ui, rows=rows, workdir=workdir)


if __name__ == "__main__":  # pragma: no cover
    main()

