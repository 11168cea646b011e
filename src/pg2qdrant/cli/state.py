"""`pg2qdrant state list|clear`: show or remove saved migration progress (resume checkpoints)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pg2qdrant.cli.common import (
    connect_address,
    global_options,
    handle_errors,
    help_layout,
    main,
    progress_store,
    qdrant_address_options,
    state_options_list,
)
from pg2qdrant.ui import UI


@main.group("state")
def state_group() -> None:
    """Show or remove saved migration progress (resume checkpoints)."""


def _state_store_for(ui: UI, kw: dict):
    """The target and its store of saved progress: all `state list` / `state clear` need."""
    target = connect_address(ui, kw)
    return target, progress_store(kw, target)


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
    from pg2qdrant.core.errors import InputError
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


for _command in (state_list, state_clear):
    help_layout(_command)
