"""`migrate --qdrant.alias NAME`: copy into a new version ``NAME_vN``, prove it, then switch the alias.

The steps, each its own function so that the command line can put the copy (a migrate, or a
sync's initial copy and catch-up) and the gate (verify) between them; migrate and verify
never import each other:

1. :func:`plan_version`: which version to write. The next free number, except a version
   whose copy an earlier run left unfinished (its saved progress is not complete) with the same
   plan (the same fingerprint: the options that decide what the points look like): that one is
   resumed. An unfinished version of another plan is left (and said). A plain collection named
   NAME stops here unless ``--qdrant.adopt``.
2. the copy into ``options.collection = NAME_vN`` and the gate, by the caller;
3. :func:`switch`: the alias moves to the new version in one request (or, adopting, the plain
   collection is removed and the alias created: the gap between is measured and said; a plain
   collection that appeared during the copy without ``--qdrant.adopt`` is not removed), then
   versions beyond ``--qdrant.keep-versions`` are removed: the live one never, and the one that
   was live before (the rollback target) before any other.

Until step 3 the alias is untouched: a failed gate or an interrupted copy leaves readers on
the old version (:func:`unproven` says which version holds what, and how to go on).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pg2qdrant.core.errors import InputError, Pg2QdrantError
from pg2qdrant.core.options import MigrationOptions, TargetConfig
from pg2qdrant.destination.address import parse_target_url
from pg2qdrant.destination.aliases import AliasState, alias_state, switch_alias, version_name, version_number
from pg2qdrant.destination.checkpoints import MigrationState
from pg2qdrant.runtime.target import connect_target, records_owner, state_store, target_identity
from pg2qdrant.source.run_lock import RunLock, try_lock
from pg2qdrant.ui import UI

#: Test-only hook, called with the VersionPlan between the copy and the gate (tests change a row there
#: to make verification fail); None outside the tests.
after_copy_hook = None


def after_copy(plan: VersionPlan) -> None:
    if after_copy_hook is not None:
        after_copy_hook(plan)


def hold_alias(options: MigrationOptions) -> RunLock:
    """The lock of ``options.alias`` on this Qdrant, held from planning a version until its switch: two runs
    started together would pick the same next version and write one collection. Taken in the source database
    (source.run_lock: every run of the job connects there); a second run stops at once, naming the holder."""
    address = parse_target_url(options.qdrant_url)
    where = address.display()
    # which Qdrant, however it is reached: its identity without the port (a server's REST and gRPC ports are one)
    place = sorted((k, v) for k, v in target_identity(address).items() if k != "port")
    lock, holder = try_lock(options.pg_url, f"pg2qdrant alias {options.alias} at {place}")
    if lock is None:
        by = f" (PostgreSQL backend pid {holder})" if holder else ""
        raise InputError(
            f"Another pg2qdrant run{by} is building a version of alias {options.alias!r} on {where}: two runs "
            "would pick the same version.",
            fix="wait until that run has switched the alias (or stop it), then rerun: an unfinished version it "
                "leaves is resumed; `pg2qdrant alias list` shows the versions.")
    return lock


@dataclass(frozen=True)
class VersionPlan:
    alias: str
    version: str  # the collection this run writes: NAME_vN
    live: str | None  # where the alias points now (None: no alias yet)
    adopt: bool  # a plain collection named ``alias`` (there at plan time, with --qdrant.adopt) is replaced
    target: TargetConfig | None = field(default=None, compare=False, repr=False)  # where (unproven looks)

    def options(self, options: MigrationOptions) -> MigrationOptions:
        """The run's options, writing the version."""
        return dataclasses.replace(options, collection=self.version)


def plan_version(options: MigrationOptions, ui: UI, fingerprint: str | None = None) -> VersionPlan:
    """Which version this run writes (see the module docstring); input errors before any write.

    ``fingerprint``: this run's plan fingerprint (core.plan.plan_fingerprint), when the caller has
    the plan; without it, it is computed from the source (only when an unfinished version is there)."""
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
        latest = latest_records(state_store(options, target), records_owner(options.qdrant_url, options.state_file))
    finally:
        target.close()
    unfinished, left = _unfinished(state, latest, lambda: fingerprint or _fingerprint(options, ui))
    if unfinished is not None:
        ui.info(f"Alias {alias!r}: resuming the unfinished copy into {unfinished!r} (the alias stays on "
                f"{state.live!r} until it is verified).")
        return VersionPlan(alias, unfinished, state.live, state.plain_collection, options)
    version = version_name(alias, state.next_number)
    if left:
        names = ", ".join(map(repr, left))
        ui.info(f"Alias {alias!r}: the unfinished copy in {names} was made with other options (another plan), so "
                f"it is left as it is and not resumed; `pg2qdrant alias drop {alias} {left[0]}` removes it.")
    finished = [v.name for v in state.versions if latest.get(v.name) and latest[v.name].status == "complete"]
    if state.live is None and not state.plain_collection and finished:
        ui.info(f"Alias {alias!r}: there is no alias or collection {alias!r}, but {finished[-1]!r} holds a finished "
                f"copy. If an earlier run was stopped while adopting (after deleting the collection {alias!r}, "
                f"before creating the alias), readers have no {alias!r} now: "
                f"`pg2qdrant alias switch {alias} {finished[-1]}` restores it at once.")
    ui.info(f"Alias {alias!r}: copying into the new version {version!r}; the alias "
            + (f"stays on {state.live!r}" if state.live else
               ("replaces the collection of that name" if state.plain_collection else "is created"))
            + " once the copy is verified.")
    return VersionPlan(alias, version, state.live, state.plain_collection, options)


def latest_records(store, where: dict | None) -> dict[str, MigrationState]:
    """collection -> its most recent progress record for this target (``where``: runtime.target.records_owner)."""
    latest: dict[str, MigrationState] = {}
    for s in store.list():
        if where is not None and s.target != where:
            continue
        if s.collection not in latest or s.updated_at >= latest[s.collection].updated_at:
            latest[s.collection] = s
    return latest


def _unfinished(state: AliasState, latest: dict[str, MigrationState],
                fingerprint: Callable[[], str]) -> tuple[str | None, list[str]]:
    """The newest version above the live one whose copy is unfinished with this run's plan (to resume),
    and the unfinished ones above the live one made with another plan (left as they are)."""
    live = (version_number(state.alias, state.live) if state.live else 0) or 0
    running = [v.name for v in reversed(state.versions) if v.number > live
               and v.name in latest and latest[v.name].status != "complete"]
    if not running:
        return None, []
    mine = fingerprint()
    same = [name for name in running if latest[name].plan_fingerprint == mine]
    return (same[0], []) if same else (None, running)


def _fingerprint(options: MigrationOptions, ui: UI) -> str:
    """This run's plan fingerprint, from the source (the pre-write checks the copy makes again are skipped)."""
    from pg2qdrant.core.plan import plan_fingerprint
    from pg2qdrant.runtime.session import open_source
    session = open_source(options, ui, count=False, keys_checked=True)
    try:
        return plan_fingerprint(session.plan)
    finally:
        session.close()


class NotSwitched(Pg2QdrantError):
    """The copy did not finish or was not proven: the alias was left as it was (exit 1)."""


def unproven(plan: VersionPlan, why: str) -> NotSwitched:
    """What a run that did not switch says: where the alias is, what the version holds, what next."""
    where = f"still points to {plan.live!r}" if plan.live else \
        ("was not created; the collection of that name is untouched" if plan.adopt else "was not created")
    exists = _exists(plan)
    holds = {True: f"{plan.version!r} holds the unproven copy.",
             None: f"{plan.version!r} may hold an unproven copy (whether it exists could not be checked).",
             False: f"nothing was written ({plan.version!r} was not created)."}[exists]
    drop = "" if exists is False else \
        f"; or remove {plan.version!r} with `pg2qdrant alias drop {plan.alias} {plan.version}`"
    return NotSwitched(
        f"{why} The alias {plan.alias!r} {where}; {holds}",
        fix="rerun the same command: an unfinished copy is resumed in the same version, a finished one that "
            f"failed verification is copied again into a new version{drop}.")


def _exists(plan: VersionPlan) -> bool | None:
    """Whether the version collection exists (None: the check failed, or no target to ask)."""
    if plan.target is None:
        return None
    try:
        target = connect_target(plan.target, parse_target_url(plan.target.qdrant_url))
        try:
            return plan.version in target.collection_names()
        finally:
            target.close()
    except Exception:  # noqa: BLE001  (the target may be what failed: then say "may hold")
        return None


def switch(options: MigrationOptions, plan: VersionPlan, ui: UI) -> None:
    """Point the alias at the verified version (one request), then remove the versions beyond
    --qdrant.keep-versions (never the live one, the previously live one first kept)."""
    alias, version = plan.alias, plan.version
    target = connect_target(options, parse_target_url(options.qdrant_url), ui)
    try:
        state = alias_state(target, alias, count=False)
        if state.plain_collection and not plan.adopt:
            raise NotSwitched(
                f"A collection named {alias!r} was created while {version!r} was being copied (there was none "
                f"when the run began); it is not deleted without --qdrant.adopt. The alias {alias!r} was not "
                f"created; {version!r} holds the verified copy.",
                fix=f"if the collection {alias!r} may be replaced: rerun with --qdrant.adopt (the copy is made "
                    f"again into a new version), or delete it and run `pg2qdrant alias switch {alias} {version}`; "
                    "otherwise choose another --qdrant.alias.")
        if state.plain_collection:
            started = time.monotonic()
            target.delete_collection(alias)
            try:
                switch_alias(target, alias, version, exists=False)
            except Exception as exc:  # noqa: BLE001  (whatever failed, readers have no alias: say how to fix)
                reason = exc.message if isinstance(exc, Pg2QdrantError) else str(exc)
                raise NotSwitched(
                    f"Adopting: the collection {alias!r} was deleted, but creating the alias {alias!r} on "
                    f"{version!r} failed ({reason}): readers find no {alias!r} until it is created.",
                    fix=f"`pg2qdrant alias switch {alias} {version}` creates it at once ({version!r} holds the "
                        "verified copy).") from None
            gap = time.monotonic() - started
            ui.info(f"Adopted: the collection {alias!r} was deleted and the alias {alias!r} created on "
                    f"{version!r}; readers found no {alias!r} for {gap * 1000:.0f} ms.")
        else:
            switch_alias(target, alias, version, exists=state.live is not None)
            ui.info(f"Alias {alias!r} now points to {version!r}"
                    + (f" (was {state.live!r})." if state.live else "."))
        prune(target, options, alias, options.keep_versions, ui, previous=plan.live)
    finally:
        target.close()


def prune(target, options: MigrationOptions, alias: str, keep: int, ui: UI, *,
          previous: str | None = None) -> list[str]:
    """Keep ``keep`` versions of ``alias`` and remove the others with their saved progress; the names
    removed. Kept: the live one, then (``keep`` >= 2) ``previous``, the one that was live before (the
    rollback target, whatever came between: a version that failed verification is never preferred
    to it), then the newest others."""
    if keep <= 0:
        return []
    state = alias_state(target, alias, count=False)
    names = [v.name for v in state.versions]
    kept = [state.live] if state.live in names else []
    if len(kept) < keep and previous in names and previous not in kept:
        kept.append(previous)
    kept += [n for n in reversed(names) if n not in kept][:max(keep - len(kept), 0)]
    doomed = [n for n in names if n not in kept]
    if not doomed:
        return []
    _remove(target, state_store(options, target), doomed, records_owner(options.qdrant_url, options.state_file))
    ui.info(f"Removed {', '.join(map(repr, doomed))} (--qdrant.keep-versions {keep}: kept "
            f"{', '.join(map(repr, kept))}).")
    return doomed


def drop_version(target, store, alias: str, name: str, where: dict | None = None) -> str:
    """`pg2qdrant alias drop`: remove one version (never the live one) and its saved progress (in a state
    file, ``where``: only the records of this target)."""
    version = alias_state(target, alias, count=False).version(name)
    if version.live:
        raise InputError(f"{version.name!r} is the version alias {alias!r} points to; it is not removed.",
                         fix=f"switch the alias to another version first (`pg2qdrant alias switch {alias} VERSION`).")
    _remove(target, store, [version.name], where)
    return version.name


def _remove(target, store, names: list[str], where: dict | None) -> None:
    """Delete these version collections and their saved progress (one read of the records for all)."""
    for name in names:
        target.delete_collection(name)
    for saved in store.list():
        if saved.collection in names and (where is None or saved.target == where):
            store.delete(saved.state_id)
