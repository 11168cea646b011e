"""`pg2qdrant alias list|switch|drop`: the versions behind an alias (``migrate --qdrant.alias``).

``list`` shows the versions ``NAME_vN`` with their point counts and which one the alias points
to; ``switch`` moves the alias to another version in one request (a rollback; a version whose
copy is unfinished only with ``--force``); ``drop`` removes a version that is not live. The flow that builds and switches versions is
migrate/alias.py; the alias operations are destination/aliases.py.
"""

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


@main.group("alias")
def alias_group() -> None:
    """List the versions behind an alias (migrate --qdrant.alias), switch it back, drop one."""


def _options(fn: Callable) -> Callable:
    for decorator in reversed([
        *qdrant_address_options(url_help="The Qdrant holding the alias.", key_help="Qdrant API key."),
        *state_options_list(help_collection="Collection holding the progress records (drop removes a "
                                            "version's).",
                            help_file="Local JSON file holding them instead."),
    ]):
        fn = decorator(fn)
    return fn


def _owner(kw: dict) -> dict | None:
    from pg2qdrant.runtime.target import records_owner
    return records_owner(kw["qdrant_url"], kw["state_file"])


@alias_group.command("list")
@click.argument("name")
@_options
@global_options
@handle_errors
def alias_list(ui: UI, name: str, **kw: Any) -> None:
    """The versions NAME_vN of alias NAME: point counts, and which one is live."""
    from pg2qdrant.destination.aliases import alias_state
    from pg2qdrant.ui import table
    target = connect_address(ui, kw)
    try:
        state = alias_state(target, name)
    finally:
        target.close()
    if state.plain_collection:
        ui.warn(f"{name!r} is a plain collection, not an alias: `migrate --qdrant.alias {name} --qdrant.adopt` "
                "moves it behind one.")
    if not state.versions:
        ui.info(f"No versions of {name!r} ({name}_v1, {name}_v2, ...): `migrate --qdrant.alias {name}` builds one.")
        return
    ui.out.print(table(f"Alias {name!r}" + (f" -> {state.live}" if state.live else " (not created)"),
                       ("version", "points", "live"),
                       [(v.name, f"{v.points:,}", "live" if v.live else "") for v in state.versions]))


@alias_group.command("switch")
@click.argument("name")
@click.argument("version")
@_options
@click.option("--force", "force", is_flag=True, default=False,
              help="Switch even to a version whose copy is unfinished (its saved progress is not complete).")
@global_options
@handle_errors
def alias_switch(ui: UI, name: str, version: str, force: bool, **kw: Any) -> None:
    """Point alias NAME at VERSION (NAME_vN, vN or N) in one request: a rollback."""
    from pg2qdrant.core.errors import InputError
    from pg2qdrant.destination.aliases import alias_state, switch_alias
    from pg2qdrant.migrate.alias import latest_records
    target = connect_address(ui, kw)
    try:
        state = alias_state(target, name, count=False)
        chosen = state.version(version)
        if chosen.live:
            ui.info(f"Alias {name!r} already points to {chosen.name!r}.")
            return
        saved = latest_records(progress_store(kw, target), _owner(kw)).get(chosen.name)
        if saved is not None and saved.status != "complete" and not force:
            raise InputError(
                f"The copy into {chosen.name!r} is unfinished (its saved progress: {len(saved.done)} of "
                f"{len(saved.ranges)} ranges): readers of {name!r} would see part of the table.",
                fix=f"finish it (rerun the `pg2qdrant migrate --qdrant.alias {name}` command that built it: it "
                    f"resumes), or pass --force to switch anyway (`pg2qdrant alias switch {name} {chosen.name} "
                    "--force`).")
        switch_alias(target, name, chosen.name, exists=state.live is not None)
    finally:
        target.close()
    ui.info(f"Alias {name!r} now points to {chosen.name!r}" + (f" (was {state.live!r})." if state.live else "."))


@alias_group.command("drop")
@click.argument("name")
@click.argument("version")
@_options
@global_options
@handle_errors
def alias_drop(ui: UI, name: str, version: str, **kw: Any) -> None:
    """Remove VERSION of alias NAME (never the live one) and its saved progress."""
    from pg2qdrant.migrate.alias import drop_version
    target = connect_address(ui, kw)
    try:
        dropped = drop_version(target, progress_store(kw, target), name, version, _owner(kw))
    finally:
        target.close()
    ui.info(f"Removed {dropped!r}.")


for _command in (alias_list, alias_switch, alias_drop):
    help_layout(_command)
