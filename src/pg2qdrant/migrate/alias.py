"""`migrate --qdrant.alias NAME`: copy into a new version ``NAME_vN``, prove it, then switch the alias.

The steps, each its own function so that the command line can put the copy (a migrate, or a
sync's initial copy and catch-up) and the gate (verify) between them; migrate and verify
never import each other:

1. :func:`plan_version`: which version to write. The next free number, except a version
   whose copy an earlier run left unfinished (its saved progress is not complete): that one
   is resumed. A plain collection named NAME stops here unless ``--qdrant.adopt``.
2. the copy into ``options.collection = NAME_vN`` and the gate, by the caller;
3. :func:`switch`: the alias moves to the new version in one request (or, adopting, the plain
   collection is removed and the alias created: the gap between is measured and said), then
   versions beyond ``--qdrant.keep-versions`` are removed, never the live one.

Until step 3 the alias is untouched: a failed gate or an interrupted copy leaves readers on
the old version (:func:`unproven` says which version holds what, and how to go on).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from pg2qdrant.core.errors import InputError, Pg2QdrantError
from pg2qdrant.core.options import MigrationOptions
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.aliases import AliasState, alias_state, switch_alias, version_name, version_number
from pg2qdrant.runtime.target import connect_target, state_store, target_identity
from pg2qdrant.ui import UI

#: Test-only hook, called with the VersionPlan between the copy and the gate (tests change a row there
#: to make verification fail); None outside the tests.
after_copy_hook = None


def after_copy(plan: VersionPlan) -> None:
    if after_copy_hook is not None:
        after_copy_hook(plan)


@dataclass(frozen=True)
class VersionPlan:
    alias: str
    version: str  # the collection this run writes: NAME_vN
    live: str | None  # where the alias points now (None: no alias yet)
    adopt: bool  # a plain collection named ``alias`` is replaced at the switch

    def options(self, options: MigrationOptions) -> MigrationOptions:
        """The run's options, writing the version."""
        return dataclasses.replace(options, collection=self.version)


def plan_version(options: MigrationOptions, ui: UI) -> VersionPlan:
    """Which version this run writes (see the module docstring); input errors before any write."""
    alias = options.alias
    address = parse_target_url(options.qdrant_url)
    if address.kind == "memory":  # each step connects anew, and an in-memory Qdrant lives in one client
        raise InputError("--qdrant.alias needs a Qdrant that outlives one connection; :memory: does not.",
                         fix="use local mode (--qdrant.url local:DIR) or a server.")
    target = connect_target(options, address, ui)
    try:
        state = alias_state(target, alias, count=False)
        if state.plain_collection and not options.adopt:
            raise InputError(
                f"{alias!r} is a collection, not an alias: it cannot become an alias of itself (Qdrant keeps "
                "collection and alias names apart).",
                fix=f"pass --qdrant.adopt: the copy goes into {version_name(alias, state.next_number)}, then the "
                    f"collection {alias!r} is deleted and the alias {alias!r} created in its place (readers see "
                    "no collection for that short moment, which is measured and said); or choose another "
                    "--qdrant.alias.")
        unfinished = _unfinished(target, options, state)
    finally:
        target.close()
    if unfinished is not None:
        ui.info(f"Alias {alias!r}: resuming the unfinished copy into {unfinished!r} (the alias stays on "
                f"{state.live!r} until it is verified).")
        return VersionPlan(alias, unfinished, state.live, state.plain_collection)
    version = version_name(alias, state.next_number)
    ui.info(f"Alias {alias!r}: copying into the new version {version!r}; the alias "
            + (f"stays on {state.live!r}" if state.live else
               ("replaces the collection of that name" if state.plain_collection else "is created"))
            + " once the copy is verified.")
    return VersionPlan(alias, version, state.live, state.plain_collection)


def _unfinished(target, options: MigrationOptions, state: AliasState) -> str | None:
    """The newest version above the live one whose saved progress says its copy is not finished."""
    live = version_number(state.alias, state.live) if state.live else 0
    newer = [v.name for v in state.versions if v.number > (live or 0)]
    if not newer:
        return None
    where = target_identity(parse_target_url(options.qdrant_url))
    running = {s.collection for s in state_store(options, target).list()
               if s.status != "complete" and (not options.state_file or s.target == where)}
    return next((name for name in reversed(newer) if name in running), None)


class NotSwitched(Pg2QdrantError):
    """The copy did not finish or was not proven: the alias was left as it was (exit 1)."""


def unproven(plan: VersionPlan, why: str) -> NotSwitched:
    """What a run that did not switch says: where the alias is, what the version holds, what next."""
    where = f"still points to {plan.live!r}" if plan.live else \
        ("was not created; the collection of that name is untouched" if plan.adopt else "was not created")
    return NotSwitched(
        f"{why} The alias {plan.alias!r} {where}; {plan.version!r} holds the unproven copy.",
        fix="rerun the same command: an unfinished copy is resumed in the same version, a finished one that "
            f"failed verification is copied again into a new version; or remove {plan.version!r} with "
            f"`pg2qdrant alias drop {plan.alias} {plan.version}`.")


def switch(options: MigrationOptions, plan: VersionPlan, ui: UI) -> None:
    """Point the alias at the verified version (one request), then remove the versions beyond
    --qdrant.keep-versions (never the live one)."""
    target = connect_target(options, parse_target_url(options.qdrant_url), ui)
    try:
        state = alias_state(target, plan.alias, count=False)
        if state.plain_collection:
            started = time.monotonic()
            target.delete_collection(plan.alias)
            switch_alias(target, plan.alias, plan.version, exists=False)
            gap = time.monotonic() - started
            ui.info(f"Adopted: the collection {plan.alias!r} was deleted and the alias {plan.alias!r} created on "
                    f"{plan.version!r}; readers found no {plan.alias!r} for {gap * 1000:.0f} ms.")
        else:
            switch_alias(target, plan.alias, plan.version, exists=state.live is not None)
            ui.info(f"Alias {plan.alias!r} now points to {plan.version!r}"
                    + (f" (was {state.live!r})." if state.live else "."))
        prune(target, options, plan.alias, options.keep_versions, ui)
    finally:
        target.close()


def prune(target, options: MigrationOptions, alias: str, keep: int, ui: UI) -> list[str]:
    """Remove the versions of ``alias`` beyond the ``keep`` newest, never the live one, with their
    saved progress; the names removed."""
    state = alias_state(target, alias, count=False)
    doomed = [v.name for v in state.versions[:-keep] if not v.live] if keep > 0 else []
    if not doomed:
        return []
    store = state_store(options, target)
    for name in doomed:
        drop_version(target, store, alias, name)
    ui.info(f"Removed {', '.join(map(repr, doomed))} (--qdrant.keep-versions {keep}).")
    return doomed


def drop_version(target, store, alias: str, name: str) -> str:
    """`pg2qdrant alias drop`: remove one version (never the live one) and its saved progress."""
    state = alias_state(target, alias, count=False)
    version = state.version(name)
    if version.live:
        raise InputError(f"{version.name!r} is the version alias {alias!r} points to; it is not removed.",
                         fix=f"switch the alias to another version first (`pg2qdrant alias switch {alias} VERSION`).")
    target.delete_collection(version.name)
    for saved in store.list():
        if saved.collection == version.name:
            store.delete(saved.state_id)
    return version.name
